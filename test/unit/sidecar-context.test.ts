// Pure parts of the sidecar: completion boundaries, the repository layout (order, cut, token cache), prompt
// stability between keystrokes, workspace containment and file filters.

import assert from 'node:assert/strict';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'node:test';

import { CompletionBoundary, finishCompletion } from '../../sidecar/src/completion/boundary';
import { identifierSet, importedPaths, jaccard, layoutRepository, specialIds, TokenCache } from '../../sidecar/src/context/layout';
import { RepositoryContext } from '../../sidecar/src/context/repository';
import type { EngineHost } from '../../sidecar/src/scheduler/engine-host';
import { Log } from '../../sidecar/src/server/log';
import { completionPrompt, offsetAt } from '../../sidecar/src/context/prompts';
import { loadTokenizer } from '../../sidecar/src/engine/tokenizer';
import { skipReason } from '../../sidecar/src/workspace/filters';
import { sha256, Workspace, type FileView } from '../../sidecar/src/workspace/workspace';

const MODEL = path.join(__dirname, '..', '..', '..', 'models', 'glance-tiny');
const tok = loadTokenizer(MODEL)!;
const special = specialIds(tok, [0]);

test('single-line completions end at the end of the line; the rest of the line is not repeated', () => {
  const b = new CompletionBoundary({ suffix: ');\nnext();\n', linePrefix: '  foo(', maxLines: 8 });
  assert.equal(b.singleLine, false, 'only closing punctuation after the cursor: multi-line allowed');
  const s = new CompletionBoundary({ suffix: 'value);\n', linePrefix: '  foo(', maxLines: 8 });
  assert.equal(s.singleLine, true);
  assert.deepEqual(s.check('a, b'), { text: 'a, b', done: false });
  assert.equal(s.check('a, b\nmore').text, 'a, b');
  assert.equal(finishCompletion('a, b)', ')\n', true), 'a, b');
});

test('multi-line completions stop when the enclosing block closes, at a blank line, or when they repeat the suffix', () => {
  const b = new CompletionBoundary({ suffix: '\n}\n\nexport const x = 1;\n', linePrefix: '    ', maxLines: 8 });
  // Inside a loop body: the loop's closing brace ends the completion (the editor already has it).
  assert.deepEqual(b.check('sum += x;\n  }\n  return sum;\n}\nfunction other() {'), { text: 'sum += x;', done: true, reason: 'block' });
  const blank = new CompletionBoundary({ suffix: '', linePrefix: '', maxLines: 8 });
  assert.deepEqual(blank.check('const a = 1;\n\nconst b = 2;'), { text: 'const a = 1;', done: true, reason: 'blank' });
  const rep = new CompletionBoundary({ suffix: '\n  return sum;\n}\n', linePrefix: '  ', maxLines: 8 });
  assert.equal(rep.check('sum += 1;\n  return sum;\n').reason, 'suffix');
  assert.equal(rep.check('sum += 1;\n  return sum;\n').text, 'sum += 1;');
  const strings = new CompletionBoundary({ suffix: '', linePrefix: '', maxLines: 8 });
  assert.equal(strings.check('const s = "}";\nconst t = 1;').done, false, 'brackets inside strings do not count');
  const edit = new CompletionBoundary({ suffix: '', linePrefix: '', maxLines: 8, stopAtBlankLine: false });
  assert.equal(edit.check('const a = 1;\n\nconst b = 2;\n}\nfunction f() {').text, 'const a = 1;\n\nconst b = 2;', 'edits keep blank lines, still end at the block');
  const lines = new CompletionBoundary({ suffix: '', linePrefix: '', maxLines: 2 });
  assert.equal(lines.check('a();\nb();\nc();\n').text, 'a();\nb();');
  assert.equal(finishCompletion('  return sum;', '  return sum;\n}', false), '', 'a completion that only repeats the suffix is dropped');
});

function file(p: string, text: string, lastEdited = 0): FileView {
  return { uri: `file:///r/${p}`, path: p, text, hash: sha256(text), lastEdited };
}

test('layout: stable files first by path, edited ones last by recency, the active document left out', () => {
  const cache = new TokenCache(tok, special);
  const files = [file('src/b.ts', 'export const b = 1;\n'), file('src/a.ts', 'export const a = 1;\n'), file('src/c.ts', 'export const c = 1;\n', 200), file('src/d.ts', 'export const d = 1;\n', 100)];
  const l = layoutRepository(cache, 'demo', files, 'file:///r/src/b.ts', 100_000);
  assert.deepEqual(l.files.map((f) => f.path), ['src/a.ts', 'src/d.ts', 'src/c.ts']);
  assert.equal(l.ids[0], special.repoName);
  for (const f of l.files) assert.equal(l.ids[f.start], special.fileSep, `${f.path} starts with <|file_sep|>`);
  assert.equal(l.files.at(-1)!.start + l.files.at(-1)!.tokens, l.ids.length);
  // The token cache makes a second layout free and identical.
  const size = cache.size;
  const again = layoutRepository(cache, 'demo', files, 'file:///r/src/b.ts', 100_000);
  assert.deepEqual(Array.from(again.ids), Array.from(l.ids));
  assert.equal(cache.size, size);
  // An edit to the most recent file changes only the tail.
  const edited = files.map((f) => (f.path === 'src/c.ts' ? file('src/c.ts', 'export const c = 2;\n', 200) : f));
  const l2 = layoutRepository(cache, 'demo', edited, 'file:///r/src/b.ts', 100_000);
  let common = 0;
  while (common < l.ids.length && l.ids[common] === l2.ids[common]) common++;
  assert.ok(common >= l.files.at(-1)!.start, 'the prefix before the edited file is unchanged');
});

test('layout: over budget, the least relevant files are cut and the imports of the active file kept', () => {
  const cache = new TokenCache(tok, special);
  const big = 'export const filler = [' + '1, '.repeat(400) + '];\n';
  const files = [
    file('src/app.ts', "import { util } from './lib/util';\nutil();\n"),
    file('src/lib/util.ts', 'export function util() { return 1; }\n' + big),
    file('other/x.ts', big),
    file('other/y.ts', big),
    file('other/z.ts', big),
  ];
  const need = layoutRepository(cache, 'demo', files, 'file:///r/src/app.ts', 1_000_000).ids.length;
  const l = layoutRepository(cache, 'demo', files, 'file:///r/src/app.ts', Math.floor(need / 2));
  assert.ok(l.ids.length <= Math.floor(need / 2));
  assert.ok(l.files.some((f) => f.path === 'src/lib/util.ts'), 'the imported file stays');
  assert.ok(l.cut.length >= 2);
  assert.deepEqual([...importedPaths(files[0])].sort(), ['src/lib/util', 'src/lib/util/index']);
});

test('layout: over budget, files that share identifiers with the active document are kept before unrelated ones', () => {
  const cache = new TokenCache(tok, special);
  const filler = (word: string) => Array.from({ length: 60 }, (_, i) => `export const ${word}${i} = ${i};`).join('\n') + '\n';
  const files = [
    file('src/app.ts', 'const order = createOrder(customerId, basketTotal);\nshipOrder(order, warehouseCode);\n'),
    file('lib/orders.ts', 'export function createOrder(customerId: string, basketTotal: number) {}\n' +
      'export function shipOrder(order: unknown, warehouseCode: string) {}\n' + filler('orderPart')),
    file('lib/colors.ts', filler('colorTone')),
    file('lib/sizes.ts', filler('sizeStep')),
    file('lib/units.ts', filler('unitName')),
  ];
  const need = layoutRepository(cache, 'demo', files, 'file:///r/src/app.ts', 1_000_000).ids.length;
  const l = layoutRepository(cache, 'demo', files, 'file:///r/src/app.ts', Math.floor(need / 2));
  assert.ok(l.files.some((f) => f.path === 'lib/orders.ts'), `the similar file stays (kept: ${l.files.map((f) => f.path).join(', ')})`);
  assert.ok(l.cut.length >= 2);
  assert.deepEqual([...identifierSet('const a = fooBar(x1, "if"); if (y) return this.z;')].sort(), ['fooBar', 'x1']);
  assert.equal(jaccard(new Set(['a', 'b']), new Set(['b', 'c'])), 1 / 3);
  assert.equal(jaccard(new Set(), new Set()), 0);
});

test('layout: typing in the active document does not move files across the cut; a much longer document renews its snapshot', () => {
  const cache = new TokenCache(tok, special);
  const body = (w: string) => Array.from({ length: 40 }, (_, i) => `export const ${w}${i} = ${i};`).join('\n') + '\n';
  const others = [file('lib/alpha.ts', body('alpha')), file('lib/beta.ts', body('beta')), file('lib/gamma.ts', body('gamma'))];
  const active = (text: string) => file('src/app.ts', text);
  // 40 identifiers of its own and two of alpha.ts: alpha.ts is the most similar file, by a little.
  const start = Array.from({ length: 40 }, (_, i) => `const local${i} = ${i};`).join('\n') + '\nuse(alpha1, alpha2);\n';
  const all = [active(start), ...others];
  const need = layoutRepository(cache, 'demo', all, 'file:///r/src/app.ts', 1_000_000).ids.length;
  const budget = Math.floor(need * 0.45);
  const first = layoutRepository(cache, 'demo', all, 'file:///r/src/app.ts', budget);
  assert.deepEqual(first.files.map((f) => f.path), ['lib/alpha.ts']);
  // Three identifiers of gamma.ts typed (gamma.ts would now rank first): still the snapshot's ranking, the same prefix.
  const typed = layoutRepository(cache, 'demo', [active(start + 'use(gamma1, gamma2, gamma3);\n'), ...others], 'file:///r/src/app.ts', budget);
  assert.deepEqual(Array.from(typed.ids), Array.from(first.ids));
  // Many new identifiers (more than a quarter of the snapshot's): a new snapshot, and the ranking follows it.
  const many = start + Array.from({ length: 20 }, (_, i) => `use(gamma${i});`).join('\n') + '\n';
  const renewed = layoutRepository(cache, 'demo', [active(many), ...others], 'file:///r/src/app.ts', budget);
  assert.deepEqual(renewed.files.map((f) => f.path), ['lib/gamma.ts']);
});

test('repository context: the per-file cache drops the versions of files no workspace has any more', () => {
  const engine = { setBackground() {}, stats: { targetTokens: 0, cachedTokens: 0 }, prefixReuse: false } as unknown as EngineHost;
  const ctx = new RepositoryContext(tok, special, 1_000_000, engine, new Log('error', () => {}));
  const root = pathToFileURL(path.join(os.tmpdir(), 'glance-prune-test')).href;
  const ws = ctx.acquire([{ uri: root, name: 'demo' }]);
  const uri = `${root}/src/a.ts`;
  for (let v = 0; v < 600; v++) {
    const text = `export const a = ${v};\n`;
    assert.equal(ws.putFile(uri, sha256(text), text).accepted, true);
    ctx.layout(ws);
  }
  assert.ok(ctx.cache.size < 600, `the cache holds ${ctx.cache.size} entries for one file edited 600 times`);
  const last = ctx.layout(ws);
  assert.equal(tok.decode(Array.from(last.ids.slice(last.files[0]!.start))).includes('export const a = 599;'), true);
});

test('completion prompt: everything before the cursor is identical between keystrokes (prefix reuse)', () => {
  const cache = new TokenCache(tok, special);
  const layout = layoutRepository(cache, 'demo', [file('src/a.ts', 'export const a = 1;\n')], null, 100_000);
  const body = Array.from({ length: 300 }, (_, i) => `const v${i} = ${i};`).join('\n') + '\n';
  const at = body.length - 20;
  // PSM order (the shipped model is SPM, see below): the short suffix after the cursor is recomputed per keystroke
  const psm = { ...special, fimOrder: 'psm' as const };
  const p1 = completionPrompt(tok, psm, cache, layout, 'src/app.ts', body, at);
  const typed = body.slice(0, at) + 'x' + body.slice(at);
  const p2 = completionPrompt(tok, psm, cache, layout, 'src/app.ts', typed, at + 1);
  let common = 0;
  while (common < p1.ids.length && p1.ids[common] === p2.ids[common]) common++;
  assert.ok(common > p1.ids.length - 40, `common prefix ${common} of ${p1.ids.length}`);
  assert.equal(p1.sharedPrefix, layout.ids.length);
  assert.equal(p1.ids[p1.ids.length - 1], special.fimMiddle);
  // SPM order: the suffix goes first, so typing at the cursor only appends to the prompt
  assert.equal(special.fimOrder, 'spm', 'glance-tiny is trained for SPM (tokenizer_config fim_order)');
  const spm = { ...special, fimOrder: 'spm' as const };
  const s1 = completionPrompt(tok, spm, cache, layout, 'src/app.ts', body, at);
  const s2 = completionPrompt(tok, spm, cache, layout, 'src/app.ts', typed, at + 1);
  common = 0;
  while (common < s1.ids.length && s1.ids[common] === s2.ids[common]) common++;
  assert.ok(common >= s1.ids.length - 2, `SPM: common prefix ${common} of ${s1.ids.length}`);
  const blockStart = s1.ids.indexOf(special.fimPrefix!, layout.ids.length);
  assert.deepEqual([s1.ids[blockStart + 1]], [special.fimSuffix]);
  assert.ok(tok.decode(Array.from(s1.ids.slice(s1.ids.indexOf(special.fimMiddle!, blockStart) + 1))).endsWith(body.slice(0, at).split('\n').at(-1)!));
  // token healing: spaces typed after a word stay out of the prompt (the model answers " a + b", not "a + b" after a
  // lone " " token it never saw); indentation alone is kept
  const code = 'export function f(a: number): number {\n  return ';
  const h = completionPrompt(tok, spm, cache, layout, 'src/f.ts', code + '\n}\n', code.length);
  assert.equal(h.heal, ' ');
  assert.equal(h.linePrefix, '  return');
  assert.ok(tok.decode(Array.from(h.ids.slice(-3))).endsWith('  return'), tok.decode(Array.from(h.ids.slice(-3))));
  const indent = completionPrompt(tok, spm, cache, layout, 'src/f.ts', 'if (x) {\n    \n}\n', 13);
  assert.equal(indent.heal, '');
  assert.equal(indent.linePrefix, '    ');
  assert.equal(offsetAt('ab\ncd', 1, 2), 5);
  assert.equal(offsetAt('ab\ncd', 1, 3), null);
  assert.equal(offsetAt('ab\ncd', 2, 0), null);
});

test('workspace: URIs outside the folders (also through ..) are refused; hashes must match', () => {
  // Folders under the temp directory, built at run time (no machine's paths in the test).
  const root = pathToFileURL(path.join(os.tmpdir(), 'glance-ws-test')).href;
  const ws = new Workspace('demo');
  ws.setFolders([{ uri: `${root}/repo` }]);
  assert.ok(ws.contains(`${root}/repo/src/a.ts`));
  assert.ok(!ws.contains(`${root}/repo/../secret.txt`));
  assert.ok(!ws.contains(`${root}/repo2/a.ts`));
  assert.ok(!ws.contains('untitled:Untitled-1'));
  assert.throws(() => ws.putFile('file:///etc/passwd', sha256('x'), 'x'), /outside the workspace/);
  assert.throws(() => ws.putFile(`${root}/repo/a.ts`, sha256('y'), 'x'), /hash/);
  assert.deepEqual(ws.putFile(`${root}/repo/a.ts`, sha256('x'), undefined), { accepted: false });
  assert.deepEqual(ws.putFile(`${root}/repo/a.ts`, sha256('x'), 'x'), { accepted: true });
  assert.deepEqual(ws.putFile(`${root}/repo/b.ts`, sha256('x'), undefined), { accepted: true }, 'known by hash');
  ws.setFolders([{ uri: `${root}/other` }]);
  assert.equal(ws.listFiles().length, 0, 'files of a removed folder leave the repository');
});

test('filters: binaries, lock files, minified, generated and huge files stay out', () => {
  assert.equal(skipReason('src/a.ts', 'export const a = 1;\n'), null);
  assert.equal(skipReason('package-lock.json', '{}'), 'lock file');
  assert.equal(skipReason('node_modules/x/index.js', 'x'), 'dependency or build output folder');
  assert.equal(skipReason('dist/app.min.js', 'x'), 'dependency or build output folder');
  assert.equal(skipReason('a.min.js', 'x'), 'minified or generated file');
  assert.equal(skipReason('a.bin', 'ab\u0000cd'), 'binary');
  assert.match(skipReason('a.ts', 'x'.repeat(300 * 1024)) ?? '', /too large/);
  assert.match(skipReason('a.js', 'var a=1;'.repeat(1000)) ?? '', /minified/);
  assert.match(skipReason('gen.ts', '// @generated by protoc\nexport {}') ?? '', /generated/);
});

test('workspace: .gitignore rules (nested, negated) keep files out of the repository view', () => {
  const ws = new Workspace('demo');
  ws.setFolders([{ uri: 'file:///r' }]);
  const put = (p: string, text: string): void => {
    ws.putFile(`file:///r/${p}`, sha256(text), text);
  };
  put('.gitignore', 'generated/\n*.log\n!keep.log\n');
  put('src/.gitignore', 'local.ts\n');
  put('src/a.ts', 'export const a = 1;\n');
  put('src/local.ts', 'export const secret = 1;\n');
  put('generated/x.ts', 'export const x = 1;\n');
  put('debug.log', 'log line\n');
  put('keep.log', 'kept\n');
  put('lib/local.ts', 'export const notIgnoredHere = 1;\n');
  const paths = ws.listFiles().map((f) => f.path).sort();
  assert.deepEqual(paths, ['.gitignore', 'keep.log', 'lib/local.ts', 'src/.gitignore', 'src/a.ts']);
});
