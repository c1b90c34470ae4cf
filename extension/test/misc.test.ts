// Unit tests: workspace file rules, status bar text, chat helpers, edit report summaries.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { StatusResult } from '../../sidecar/src/protocol';
import { extractMentions, trimHistory } from '../src/chat/history';
import { summariseReports } from '../src/edits/summary';
import { formatStatus, formatTokens } from '../src/status/format';
import { IgnoreRules, batchBySize, contentHash, excludeGlob, looksBinary, relativeInside } from '../src/sync/fileRules';

test('IgnoreRules applies root and nested .gitignore files and always skips .git and node_modules', () => {
  const r = new IgnoreRules();
  r.addGitignore('', 'dist/\n*.log\n');
  r.addGitignore('pkg', 'generated.ts\n');
  assert.equal(r.ignores('dist/a.js'), true);
  assert.equal(r.ignores('src/a.log'), true);
  assert.equal(r.ignores('src/a.ts'), false);
  assert.equal(r.ignores('pkg/generated.ts'), true);
  assert.equal(r.ignores('generated.ts'), false); // nested rules apply only below their directory
  assert.equal(r.ignores('node_modules/x/index.js'), true);
  assert.equal(r.ignores('.git/config'), true);
  // negation, as git: a re-included file stays in
  const n = new IgnoreRules();
  n.addGitignore('', '*.log\n!keep.log\n');
  assert.equal(n.ignores('a.log'), true);
  assert.equal(n.ignores('keep.log'), false);
});

test('file helpers: hash, binary sniffing, batches, relative paths, exclude glob', () => {
  assert.equal(contentHash('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  assert.equal(looksBinary(new Uint8Array([65, 0, 66])), true);
  assert.equal(looksBinary(new TextEncoder().encode('plain text')), false);
  assert.deepEqual(batchBySize([5, 5, 5, 20, 1], (n) => n, 2, 12), [[5, 5], [5], [20], [1]]);
  assert.equal(relativeInside('/w/a', '/w/a/src/x.ts'), 'src/x.ts');
  assert.equal(relativeInside('/w/a', '/w/b/x.ts'), null);
  assert.equal(excludeGlob({ '**/.DS_Store': true, '**/off': false }), '{**/.DS_Store,**/.git/**,**/node_modules/**,**/.hg/**,**/.svn/**,**/__pycache__/**,**/.venv/**,**/.tox/**}');
});

const status = (over: Partial<StatusResult>): StatusResult => ({
  state: 'ready', model: 'glance-tiny', device: 'cpu', contextTokens: 12_345, cachedTokens: 12_000,
  files: { inContext: 7, known: 8, skipped: 1 }, queue: { waiting: 0, running: 0 }, tokensPerSecond: 0,
  memory: { rssBytes: 0, heapBytes: 0, kvCacheBytes: 0 }, ...over,
});
const connected = { kind: 'connected' as const, origin: 'spawned' as const, pid: 42, capabilities: null };

test('status bar text follows the states', () => {
  assert.equal(formatTokens(950), '950');
  assert.equal(formatTokens(1234), '1.2k');
  assert.equal(formatTokens(123_456), '123k');
  assert.equal(formatStatus({ kind: 'starting', detail: 'x' }, null, null, true).label, 'starting');
  assert.equal(formatStatus({ kind: 'restarting', reason: 'r', delayMs: 500, attempt: 1 }, null, null, true).label, 'restarting');
  const err = formatStatus({ kind: 'error', message: 'm', advice: 'do this', stderrTail: ['line'] }, null, null, true);
  assert.equal(err.severity, 'error');
  assert.match(err.tooltip, /do this/);
  const indexing = formatStatus(connected, status({ state: 'indexing', indexing: { done: 1, total: 4 } }), null, true);
  assert.equal(indexing.text, '$(sync~spin) Glance: indexing 25%');
  const ready = formatStatus(connected, status({}), { kind: 'completion', latencyMs: 84.6, tokensPerSecond: 41.2 }, false);
  assert.equal(ready.label, 'ready');
  assert.equal(ready.text, '$(check) Glance · glance-tiny · cpu · 12k tok · 85 ms · 41 tok/s (completions off)');
  assert.match(ready.tooltip, /7 of 8 files/);
});

test('chat helpers: mentions and history trimming', () => {
  assert.deepEqual(extractMentions('compare @src/a.ts with @b.js, and mail x@y.com; again @src/a.ts.'), ['src/a.ts', 'b.js']);
  const h = [
    { role: 'user' as const, content: '1' },
    { role: 'assistant' as const, content: '2' },
    { role: 'user' as const, content: '3' },
    { role: 'assistant' as const, content: '4' },
  ];
  assert.deepEqual(trimHistory(h, 3).map((m) => m.content), ['3', '4']);
  assert.equal(trimHistory(h, 10).length, 4);
});

test('edit report summary counts applied, loose and failed blocks', () => {
  const s = summariseReports([
    { uri: 'a', baseHash: '', newText: '', blocks: [{ index: 0, match: 'exact' }, { index: 1, match: 'fuzzy' }] },
    { uri: 'b', baseHash: '', newText: '', blocks: [{ index: 2, match: 'failed', message: 'SEARCH text not found' }] },
  ]);
  assert.equal(s.applied, 2);
  assert.equal(s.failed, 1);
  assert.equal(s.text, '2 of 3 blocks applied (1 fuzzy); block 3 failed: SEARCH text not found');
});
