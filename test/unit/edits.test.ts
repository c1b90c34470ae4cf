// Unit tests of the search/replace parser and applier beyond the golden cases: path cleaning, ordering,
// indentation, duplicates, the fill-in-the-middle single block, and that failures carry a reason.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { applyEditBlocks, parseEditBlocks } from '../../sidecar/src/edits';
import { cleanPath } from '../../sidecar/src/edits/parse';
import { levenshtein, similarity } from '../../sidecar/src/edits/similarity';

const block = (index: number, search: string, replace: string) => ({ index, search, replace });

test('cleanPath strips markdown decoration and refuses prose and code', () => {
  assert.equal(cleanPath('**`src/a.ts`**'), 'src/a.ts');
  assert.equal(cleanPath('# src/a.ts'), 'src/a.ts');
  assert.equal(cleanPath('File: src/a.ts'), 'src/a.ts');
  assert.equal(cleanPath('src/a.ts:'), 'src/a.ts');
  assert.equal(cleanPath('Here is the change to src/a.ts:'), null);
  assert.equal(cleanPath('f(x);'), null);
  assert.equal(cleanPath('hello'), null);
});

test('parseEditBlocks keeps text outside blocks out and numbers blocks in order', () => {
  const parsed = parseEditBlocks(
    'Some prose.\n\n```ts\na.ts\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n```\nMore prose.\n',
  );
  assert.deepEqual(parsed, { blocks: [{ index: 0, path: 'a.ts', search: 'x\n', replace: 'y\n' }], problems: [] });
});

test('parseEditBlocks: a block without any path has path null', () => {
  const parsed = parseEditBlocks('<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n');
  assert.equal(parsed.blocks[0]?.path, null);
});

test('parseEditBlocks: a new SEARCH before REPLACE rejects the first block and reads the second', () => {
  const parsed = parseEditBlocks(
    'a.ts\n<<<<<<< SEARCH\na\n=======\nb\n<<<<<<< SEARCH\nc\n=======\nd\n>>>>>>> REPLACE\n',
  );
  assert.equal(parsed.problems.length, 1);
  assert.equal(parsed.problems[0]?.index, 0);
  assert.match(parsed.problems[0]?.message ?? '', /before this block ended/);
  assert.deepEqual(parsed.blocks, [{ index: 1, path: 'a.ts', search: 'c\n', replace: 'd\n' }]);
});

test('parseEditBlocks accepts CRLF answers', () => {
  const parsed = parseEditBlocks('a.ts\r\n<<<<<<< SEARCH\r\nx\r\n=======\r\ny\r\n>>>>>>> REPLACE\r\n');
  assert.deepEqual(parsed.blocks[0], { index: 0, path: 'a.ts', search: 'x\n', replace: 'y\n' });
});

test('applyEditBlocks applies blocks in order, each seeing the previous result', () => {
  const out = applyEditBlocks('a\nb\nc\n', [block(0, 'a\n', 'A\n'), block(1, 'A\nb\n', 'AB\n')]);
  assert.equal(out.text, 'AB\nc\n');
  assert.deepEqual(
    out.reports.map((r) => r.match),
    ['exact', 'exact'],
  );
});

test('applyEditBlocks replaces the first of duplicate exact matches and says so', () => {
  const out = applyEditBlocks('x = 1\nx = 1\n', [block(0, 'x = 1\n', 'x = 2\n')]);
  assert.equal(out.text, 'x = 2\nx = 1\n');
  assert.match(out.reports[0]?.message ?? '', /more than once/);
});

test('applyEditBlocks does not take a mid-line hit as exact (indentation would be mangled)', () => {
  const out = applyEditBlocks('  return a;\n', [block(0, 'return a;\n', 'return b;\n')]);
  assert.equal(out.reports[0]?.match, 'whitespace');
  assert.equal(out.text, '  return b;\n');
});

test('applyEditBlocks removes indentation the model added', () => {
  const out = applyEditBlocks('if (x) {\nf();\n}\n', [block(0, '    f();\n', '    g();\n    h();\n')]);
  assert.equal(out.text, 'if (x) {\ng();\nh();\n}\n');
});

test('applyEditBlocks: the FIM single block (selection → regenerated text) applies exactly', () => {
  const original = 'function f() {\n  const a = 1;\n  return a;\n}\n';
  const out = applyEditBlocks(original, [block(0, '  const a = 1;\n', '  const a = 2;\n')]);
  assert.equal(out.text, 'function f() {\n  const a = 2;\n  return a;\n}\n');
});

test('applyEditBlocks: a failed block leaves the text and reports the closest place', () => {
  const original = 'alpha\nbeta\ngamma\n';
  const out = applyEditBlocks(original, [block(3, 'something else entirely\n', 'x\n')]);
  assert.equal(out.text, original);
  assert.deepEqual(out.reports[0]?.index, 3);
  assert.equal(out.reports[0]?.match, 'failed');
  assert.match(out.reports[0]?.message ?? '', /not found \(closest: lines \d+–\d+, similarity 0\.\d\d < 0\.8\)/);
});

test('applyEditBlocks: empty SEARCH appends to a non-empty file', () => {
  const out = applyEditBlocks('a\n', [block(0, '', 'b\n')]);
  assert.equal(out.text, 'a\nb\n');
});

test('applyEditBlocks: fuzzy matching tolerates misremembered lines and names the range it replaced', () => {
  const lines = [
    'import { createServer } from "node:http";',
    'const server = createServer(options);',
    'server.on("error", (err) => log.error(err));',
    'server.on("listening", () => log.info("up"));',
    'await server.listen(port, host);',
    'export default server;',
  ];
  const original = `${lines.join('\n')}\n`;
  // the model remembers two lines slightly wrong
  const search = 'const server = createServer(opts);\nserver.on("error", (e) => log.error(e));\nserver.on("listening", () => log.info("up"));\n';
  const out = applyEditBlocks(original, [block(0, search, 'const server = start();\n')]);
  assert.equal(out.reports[0]?.match, 'fuzzy', out.reports[0]?.message);
  assert.match(out.reports[0]?.message ?? '', /lines 2–4/);
  assert.equal(out.text, `${lines[0]}\nconst server = start();\n${lines[4]}\n${lines[5]}\n`);
});

test('levenshtein and similarity', () => {
  assert.equal(levenshtein('kitten', 'sitting'), 3);
  assert.equal(levenshtein('', 'abc'), 3);
  assert.equal(similarity('abc', 'abc'), 1);
  assert.equal(similarity('abcd', 'abcx'), 0.75);
  // long texts fall back to line similarity
  const long = Array.from({ length: 2000 }, (_, i) => `line ${i}`).join('\n');
  assert.ok(similarity(long, long.replace('line 5\n', 'line five\n')) > 0.99);
});
