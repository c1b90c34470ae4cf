// Unit tests: adaptive debounce, completion cache with typed-ahead forwarding, completion filters.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CompletionCache } from '../src/completion/cache';
import { AdaptiveDebounce, sleepCancellable } from '../src/completion/debounce';
import { filterCompletion, stripRepeatedLinePrefix } from '../src/completion/filters';

test('debounce: a fixed setting wins; too few keystrokes give the middle of the range', () => {
  const d = new AdaptiveDebounce({ minMs: 60, maxMs: 340, window: 10, pauseMs: 1500 });
  assert.equal(d.delayMs(123), 123);
  assert.equal(d.delayMs(null), 200);
});

test('debounce adapts to typing speed and ignores pauses', () => {
  const fast = new AdaptiveDebounce({ minMs: 60, maxMs: 350, window: 10, pauseMs: 1500 });
  let t = 0;
  for (let i = 0; i < 10; i++) fast.recordKeystroke((t += 50));
  fast.recordKeystroke((t += 5000)); // a pause is not rhythm
  assert.equal(fast.delayMs(null), 75);
  const slow = new AdaptiveDebounce({ minMs: 60, maxMs: 350, window: 10, pauseMs: 1500 });
  t = 0;
  for (let i = 0; i < 10; i++) slow.recordKeystroke((t += 400));
  assert.equal(slow.delayMs(null), 350); // clamped
  // a slow sidecar shortens the wait
  const mid = new AdaptiveDebounce({ minMs: 60, maxMs: 350, window: 10, pauseMs: 1500 });
  t = 0;
  for (let i = 0; i < 10; i++) mid.recordKeystroke((t += 100));
  assert.equal(mid.delayMs(null), 150);
  assert.equal(mid.delayMs(null, 900), 113);
});

test('sleepCancellable resolves false when cancelled first', async () => {
  let fire: () => void = () => {};
  const p = sleepCancellable(10_000, (l) => {
    fire = l;
    return { dispose: () => undefined };
  });
  fire();
  assert.equal(await p, false);
  assert.equal(await sleepCancellable(1, () => ({ dispose: () => undefined })), true);
});

test('cache: exact hit and typed-ahead forwarding', () => {
  const c = new CompletionCache(10);
  const key = { uri: 'file:///a.ts', prefix: 'const x = ', suffix: '\n' };
  c.put(key, 'compute(1, 2);');
  assert.equal(c.get(key), 'compute(1, 2);');
  assert.equal(c.get({ ...key, prefix: 'const x = comp' }), 'ute(1, 2);');
  // typed something else: no hit
  assert.equal(c.get({ ...key, prefix: 'const x = cx' }), null);
  // typed all of it: nothing left to suggest
  assert.equal(c.get({ ...key, prefix: 'const x = compute(1, 2);' }), null);
  // another document or another suffix: no hit
  assert.equal(c.get({ ...key, uri: 'file:///b.ts' }), null);
  assert.equal(c.get({ ...key, suffix: 'else' }), null);
});

test('cache: LRU capacity and forget', () => {
  const c = new CompletionCache(2);
  c.put({ uri: 'u', prefix: 'a', suffix: '' }, 'A');
  c.put({ uri: 'u', prefix: 'b', suffix: '' }, 'B');
  assert.equal(c.get({ uri: 'u', prefix: 'a', suffix: '' }), 'A'); // refreshes a
  c.put({ uri: 'u', prefix: 'c', suffix: '' }, 'C'); // evicts b
  assert.equal(c.get({ uri: 'u', prefix: 'b', suffix: '' }), null);
  assert.equal(c.size, 2);
  c.forget('u');
  assert.equal(c.size, 0);
});

test('filters: mid-line keeps one line; end of line keeps up to maxLines', () => {
  const text = 'a + b;\nreturn c;\nreturn d;';
  assert.equal(filterCompletion({ text, lineSuffix: ' + z', followingLines: [], maxLines: 8 }), 'a + b;');
  assert.equal(filterCompletion({ text, lineSuffix: '', followingLines: [], maxLines: 2 }), 'a + b;\nreturn c;');
  assert.equal(filterCompletion({ text, lineSuffix: ')', followingLines: [], maxLines: 8 }), text);
});

test('filters stop where the completion repeats the next line of the document', () => {
  const out = filterCompletion({
    text: 'if (x) {\n    y();\n  }\n  return total;\n}',
    lineSuffix: '',
    followingLines: ['', '  return total;', '}'],
    maxLines: 8,
  });
  assert.equal(out, 'if (x) {\n    y();\n  }');
});

test('filters suppress empty text and what only repeats the text after the cursor', () => {
  assert.equal(filterCompletion({ text: '  \n\n', lineSuffix: '', followingLines: [], maxLines: 8 }), null);
  assert.equal(filterCompletion({ text: 'foo', lineSuffix: 'foo(bar)', followingLines: [], maxLines: 8 }), null);
  assert.equal(filterCompletion({ text: 'x, y)', lineSuffix: ')', followingLines: [], maxLines: 8 }), 'x, y');
});

test('filters drop a restart of the current line', () => {
  assert.equal(stripRepeatedLinePrefix('  return a + b;', '  return '), 'a + b;');
  assert.equal(stripRepeatedLinePrefix('x = 1;', '  let '), 'x = 1;');
  assert.equal(stripRepeatedLinePrefix('  foo(bar);', '  foo('), 'bar);');
  assert.equal(stripRepeatedLinePrefix('returnValue;', '  return'), 'returnValue;');
  assert.equal(stripRepeatedLinePrefix('a + b;', '  return '), 'a + b;');
  assert.equal(filterCompletion({ text: '  return a + b;', linePrefix: '  return ', lineSuffix: '', followingLines: [], maxLines: 8 }), 'a + b;');
});
