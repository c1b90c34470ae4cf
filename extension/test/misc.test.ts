// Unit tests: workspace file rules, status bar text, chat helpers, edit report summaries, remote token command names.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import type { StatusResult } from '../../sidecar/src/protocol';
import { extractMentions, trimHistory } from '../src/chat/history';
import { type MentionCandidate, normalizeMention, resolveMention, splitFolderQualified } from '../src/chat/mentions';
import { SET_REMOTE_TOKEN_COMMAND, SET_REMOTE_TOKEN_PALETTE_NAME, SET_REMOTE_TOKEN_TITLE } from '../src/supervisor/remoteTokenCommand';
import { planTokenMigration } from '../src/supervisor/tokenMigration';
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
  assert.equal(err.text, '$(error) Glance: error');
  // a remote failure says which one in the status bar itself
  const remote = formatStatus({ kind: 'error', message: 'The remote sidecar at ws://h:1/lsp refused the token', advice: 'Set it', stderrTail: [], short: 'remote token refused' }, null, null, true);
  assert.equal(remote.text, '$(error) Glance: remote token refused');
  assert.equal(remote.label, 'error');
  assert.doesNotMatch(remote.tooltip, /```/); // no empty stderr block
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

test('@file mentions resolve across the folders of a multi-root workspace, folder-qualified where names clash', () => {
  const c = (folder: string, relativePath: string): MentionCandidate => ({ folder, relativePath, uri: `file:///w/${folder}/${relativePath}` });
  const candidates = [c('api', 'src/index.ts'), c('web', 'src/index.ts'), c('web', 'lib/geometry.ts'), c('api', 'src/deep/util.ts')];
  // a file only the second folder has
  assert.deepEqual(resolveMention('lib/geometry.ts', 2, candidates), { kind: 'file', uri: 'file:///w/web/lib/geometry.ts', display: 'web/lib/geometry.ts' });
  assert.deepEqual(resolveMention('geometry.ts', 2, candidates), { kind: 'file', uri: 'file:///w/web/lib/geometry.ts', display: 'web/lib/geometry.ts' });
  // the same path in both folders: ambiguous, with the qualified names to write
  assert.deepEqual(resolveMention('src/index.ts', 2, candidates), { kind: 'ambiguous', options: ['api/src/index.ts', 'web/src/index.ts'] });
  assert.deepEqual(resolveMention('index.ts', 2, candidates), { kind: 'ambiguous', options: ['api/src/index.ts', 'web/src/index.ts'] });
  // qualified: exactly one
  assert.deepEqual(resolveMention('web/src/index.ts', 2, candidates), { kind: 'file', uri: 'file:///w/web/src/index.ts', display: 'web/src/index.ts' });
  assert.deepEqual(resolveMention('./api/src/index.ts', 2, candidates), { kind: 'file', uri: 'file:///w/api/src/index.ts', display: 'api/src/index.ts' });
  // an exact path beats a longer one ending in it
  assert.equal((resolveMention('util.ts', 2, [...candidates, c('web', 'util.ts')]) as { uri: string }).uri, 'file:///w/web/util.ts');
  assert.deepEqual(resolveMention('missing.ts', 2, candidates), { kind: 'none' });
  // one folder: plain relative names
  assert.deepEqual(resolveMention('util.ts', 1, [c('api', 'src/deep/util.ts')]), { kind: 'file', uri: 'file:///w/api/src/deep/util.ts', display: 'src/deep/util.ts' });
  // the same candidate found twice (by both searches) is one file
  assert.equal(resolveMention('web/lib/geometry.ts', 2, [c('web', 'lib/geometry.ts'), c('web', 'lib/geometry.ts')]).kind, 'file');
  assert.deepEqual(splitFolderQualified('web/src/index.ts', ['api', 'web']), { folder: 'web', rest: 'src/index.ts' });
  assert.equal(splitFolderQualified('src/index.ts', ['api', 'web']), null);
  assert.equal(splitFolderQualified('web/', ['web']), null);
});

test('a mention written with backslashes (as Windows users type it) works as with slashes, folder-qualified too', () => {
  // the chat text as typed: one backslash each (the TypeScript literal doubles them); kept as typed for the notices
  assert.deepEqual(extractMentions('compare @web\\src\\index.ts with @.\\api\\src\\index.ts, and @web/src/index.ts.'), [
    'web\\src\\index.ts',
    '.\\api\\src\\index.ts',
    'web/src/index.ts',
  ]);
  // what the chat view globs for in every folder (a glob reads a backslash as an escape)
  assert.equal(normalizeMention('.\\api\\src\\index.ts'), 'api/src/index.ts');
  assert.equal(normalizeMention('./web/lib/geometry.ts'), 'web/lib/geometry.ts');
  // the folder named by the first segment picks that folder's file (the chat view searches it for `rest`)
  assert.deepEqual(splitFolderQualified('web\\src\\index.ts', ['api', 'web']), { folder: 'web', rest: 'src/index.ts' });
  assert.deepEqual(splitFolderQualified('.\\api\\src\\index.ts', ['api', 'web']), { folder: 'api', rest: 'src/index.ts' });
  assert.equal(splitFolderQualified('web\\', ['web']), null);
  const c = (folder: string, relativePath: string): MentionCandidate => ({ folder, relativePath, uri: `file:///w/${folder}/${relativePath}` });
  const candidates = [c('api', 'src/index.ts'), c('web', 'src/index.ts')];
  assert.deepEqual(resolveMention('web\\src\\index.ts', 2, candidates), { kind: 'file', uri: 'file:///w/web/src/index.ts', display: 'web/src/index.ts' });
  assert.deepEqual(resolveMention('.\\api\\src\\index.ts', 2, candidates), { kind: 'file', uri: 'file:///w/api/src/index.ts', display: 'api/src/index.ts' });
  assert.deepEqual(resolveMention('src\\index.ts', 2, candidates), { kind: 'ambiguous', options: ['api/src/index.ts', 'web/src/index.ts'] });
});

test('a remote token in settings moves out: the one in effect is kept and every scope holding one is cleared', () => {
  assert.equal(planTokenMigration({}), null);
  assert.equal(planTokenMigration({ globalValue: '', workspaceValue: '  ' }), null);
  assert.deepEqual(planTokenMigration({ globalValue: ' user-token\n' }), { token: 'user-token', clear: ['global'] });
  // the workspace value overrides the user's, as VS Code resolves them; both leave settings
  assert.deepEqual(planTokenMigration({ globalValue: 'user', workspaceValue: 'ws' }), { token: 'ws', clear: ['workspace', 'global'] });
  assert.deepEqual(planTokenMigration({ workspaceFolderValue: 'f', globalValue: 'user' }), { token: 'f', clear: ['workspaceFolder', 'global'] });
  assert.equal(planTokenMigration({ globalValue: 42 }), null); // not a string: nothing to move
});

test('the Set Remote Sidecar Token constants match the command package.json contributes', () => {
  // compiled to extension/out/extension/test: the manifest is three folders up
  const manifestPath = path.join(__dirname, '..', '..', '..', 'package.json');
  const manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8')) as {
    name: string;
    contributes: { commands: { command: string; title: string; category?: string }[] };
  };
  assert.equal(manifest.name, 'glance', `${manifestPath} is not the extension's manifest`);
  const entries = manifest.contributes.commands.filter((c) => c.command === SET_REMOTE_TOKEN_COMMAND);
  assert.equal(entries.length, 1, `package.json contributes.commands has ${entries.length} entries for ${SET_REMOTE_TOKEN_COMMAND}`);
  assert.equal(entries[0].title, SET_REMOTE_TOKEN_TITLE);
  assert.equal(`${entries[0].category}: ${entries[0].title}`, SET_REMOTE_TOKEN_PALETTE_NAME);
});
