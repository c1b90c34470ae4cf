// The sidecar as the extension sees it: a real `glance serve` process with the embedded model, a real WebSocket,
// JSON-RPC/LSP messages. Authentication, initialize, workspace sync, inline completion, streamed chat, edits,
// cancellation, disconnects, hostile input and concurrency.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ErrorCodes, type ChatResult, type EditResult, type InlineCompletionList, type StatusResult, type WorkspaceFilesResult } from '../../sidecar/src/protocol/index';
import { initialize, RawClient, startSidecarProcess, type SidecarProcess } from '../helpers/sidecar-process';

const sha = (t: string): string => createHash('sha256').update(t, 'utf8').digest('hex');

const FILES: Record<string, string> = {
  'src/math.ts': 'export function add(a: number, b: number): number {\n  return a + b;\n}\n\nexport function mul(a: number, b: number): number {\n  return a * b;\n}\n',
  'src/strings.ts': "export function capitalize(s: string): string {\n  return s.charAt(0).toUpperCase() + s.slice(1);\n}\n",
  'src/index.ts': "import { add, mul } from './math';\nimport { capitalize } from './strings';\n\nexport { add, mul, capitalize };\n",
  'README.md': '# demo\n\nA tiny demo package.\n',
};
const EDITED = 'src/app.ts';
const EDITED_TEXT = "import { add } from './math';\n\nexport function total(xs: number[]): number {\n  let sum = 0;\n  for (const x of xs) {\n    \n  }\n  return sum;\n}\n";

let sc: SidecarProcess;
let folder: string;
const uriOf = (rel: string): string => `file://${path.join(folder, rel)}`;

async function client(): Promise<RawClient> {
  const c = await RawClient.connectTo(sc);
  await initialize(c, folder);
  return c;
}

async function syncWorkspace(c: RawClient): Promise<void> {
  const files = Object.entries(FILES).map(([rel, text]) => ({ uri: uriOf(rel), hash: sha(text), text }));
  const r = await c.request<WorkspaceFilesResult>('glance/workspaceFiles', { files, scanId: 's1', scanComplete: true });
  assert.equal(r.missing.length, 0);
}

function openEdited(c: RawClient): void {
  c.notify('textDocument/didOpen', { textDocument: { uri: uriOf(EDITED), languageId: 'typescript', version: 1, text: EDITED_TEXT } });
}

/** Asks glance/status until `done` holds or `ms` pass; returns the last status (the caller asserts on it). */
async function pollStatus(c: RawClient, done: (s: StatusResult) => boolean, ms: number): Promise<StatusResult> {
  const until = Date.now() + ms;
  let s = await c.request<StatusResult>('glance/status');
  while (!done(s) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
    s = await c.request<StatusResult>('glance/status');
  }
  return s;
}

before(async () => {
  folder = fs.mkdtempSync(path.join(os.tmpdir(), 'glance-ws-'));
  for (const [rel, text] of Object.entries(FILES)) {
    fs.mkdirSync(path.dirname(path.join(folder, rel)), { recursive: true });
    fs.writeFileSync(path.join(folder, rel), text);
  }
  // A generous time box: on a loaded machine the default 2 s would cut completions short and make them differ.
  sc = await startSidecarProcess(['--slots', '2', '--completion-max-tokens', '16', '--completion-timeout-ms', '60000', '--log-level', 'debug']);
});

after(async () => {
  const code = await sc.stop();
  assert.equal(code, 0, `sidecar exit code ${code}; stderr tail:\n${sc.stderr().slice(-2000)}`);
  fs.rmSync(folder, { recursive: true, force: true });
});

describe('process', () => {
  test('prints one ready line and writes a 0600 lock file naming itself', () => {
    assert.equal(sc.ready.event, 'ready');
    assert.equal(sc.ready.pid, sc.proc.pid);
    assert.equal(sc.ready.model, 'glance-tiny');
    const lockFile = path.join(sc.cacheDir, 'sidecar.json');
    const lock = JSON.parse(fs.readFileSync(lockFile, 'utf8'));
    assert.equal(lock.port, sc.ready.port);
    assert.equal(lock.pid, sc.proc.pid);
    assert.equal(fs.statSync(lockFile).mode & 0o777, 0o600);
    assert.equal(fs.statSync(lock.tokenFile).mode & 0o777, 0o600);
    assert.match(fs.readFileSync(lock.tokenFile, 'utf8').trim(), /^[0-9a-f]{64}$/);
  });
});

describe('authentication', () => {
  test('no token: 401', async () => {
    await assert.rejects(RawClient.connect(sc.url, {}), (e: { status?: number }) => e.status === 401);
  });
  test('wrong token: 401', async () => {
    await assert.rejects(RawClient.connect(sc.url, { Authorization: `Bearer ${'0'.repeat(64)}` }), (e: { status?: number }) => e.status === 401);
  });
  test('right token from a browser page (Origin header): 403', async () => {
    await assert.rejects(
      RawClient.connect(sc.url, { Authorization: `Bearer ${sc.token}`, Origin: 'https://evil.example' }),
      (e: { status?: number }) => e.status === 403,
    );
  });
  test('wrong path: 404', async () => {
    await assert.rejects(RawClient.connect(sc.url.replace('/lsp', '/other'), { Authorization: `Bearer ${sc.token}` }), (e: { status?: number }) => e.status === 404);
  });
});

describe('protocol', () => {
  test('initialize advertises glance, the model, and inline completion', async () => {
    const c = await RawClient.connectTo(sc);
    const r = await initialize(c, folder);
    assert.equal(r.serverInfo.name, 'glance');
    const g = (r.capabilities.experimental as { glance: Record<string, unknown> }).glance;
    assert.equal(g.model, 'glance-tiny');
    assert.equal(g.device, 'cpu');
    assert.equal(typeof g.contextWindow, 'number');
    assert.ok((g.contextWindow as number) >= 8192);
    assert.equal(g.indexTopk, 256);
    assert.ok(r.capabilities.inlineCompletionProvider);
    await c.close();
  });

  test('workspace files: asks back only for texts it lacks, checks hashes, refuses paths outside the workspace', async () => {
    const c = await client();
    const text = 'export const x = 1;\n';
    const lacks = await c.request<WorkspaceFilesResult>('glance/workspaceFiles', { files: [{ uri: uriOf('src/x.ts'), hash: sha(text) }] });
    assert.deepEqual(lacks.missing, [uriOf('src/x.ts')]);
    const sent = await c.request<WorkspaceFilesResult>('glance/workspaceFiles', { files: [{ uri: uriOf('src/x.ts'), hash: sha(text), text }] });
    assert.deepEqual(sent.missing, []);
    // the same content under another name is known by hash
    const dup = await c.request<WorkspaceFilesResult>('glance/workspaceFiles', { files: [{ uri: uriOf('src/y.ts'), hash: sha(text) }] });
    assert.deepEqual(dup.missing, []);
    const bad = await c.send('glance/workspaceFiles', { files: [{ uri: uriOf('src/z.ts'), hash: sha('other'), text }] }).response;
    assert.equal(bad.error?.code, ErrorCodes.InvalidParams);
    assert.match(bad.error!.message, /hash/);
    const outside = await c.send('glance/workspaceFiles', { files: [{ uri: `file://${path.join(folder, '..', 'etc', 'passwd')}`, hash: sha(text), text }] }).response;
    assert.equal(outside.error?.code, ErrorCodes.OutsideWorkspace);
    const binary = await c.request<WorkspaceFilesResult>('glance/workspaceFiles', { files: [{ uri: uriOf('img.bin'), hash: sha('\u0000\u0001abc'), text: '\u0000\u0001abc' }] });
    assert.equal(binary.skipped[0]?.reason, 'binary');
    await c.request('glance/workspaceFiles', { files: [], removed: [uriOf('src/x.ts'), uriOf('src/y.ts'), uriOf('img.bin')] });
    await c.close();
  });

  test('inline completion on top of the repository: an answer from the model, with timings', async () => {
    const c = await client();
    await syncWorkspace(c);
    openEdited(c);
    const r = await c.request<InlineCompletionList>('textDocument/inlineCompletion', {
      textDocument: { uri: uriOf(EDITED) },
      position: { line: 5, character: 4 },
      context: { triggerKind: 2 },
    });
    assert.ok(Array.isArray(r.items));
    assert.ok(r.glance, 'timing info attached');
    assert.ok(r.glance!.generatedTokens > 0, 'the model generated tokens');
    assert.ok(r.glance!.promptTokens + r.glance!.reusedTokens > 100, 'the prompt carries the repository');
    for (const item of r.items) {
      assert.equal(typeof item.insertText, 'string');
      assert.ok(item.insertText.length > 0);
      assert.deepEqual(item.range, { start: { line: 5, character: 4 }, end: { line: 5, character: 4 } });
    }
    // The same request again reuses the cached prompt (keystroke-to-keystroke reuse).
    const again = await c.request<InlineCompletionList>('textDocument/inlineCompletion', {
      textDocument: { uri: uriOf(EDITED) },
      position: { line: 5, character: 4 },
      context: { triggerKind: 2 },
    });
    assert.ok(again.glance!.reusedTokens > again.glance!.promptTokens, `reused ${again.glance!.reusedTokens}, computed ${again.glance!.promptTokens}`);
    assert.deepEqual(again.items, r.items, 'greedy completion is deterministic');
    // Out-of-range positions and unknown documents are errors, not crashes.
    const oob = await c.send('textDocument/inlineCompletion', { textDocument: { uri: uriOf(EDITED) }, position: { line: 999, character: 0 }, context: { triggerKind: 2 } }).response;
    assert.equal(oob.error?.code, ErrorCodes.InvalidParams);
    const unknown = await c.send('textDocument/inlineCompletion', { textDocument: { uri: uriOf('nope.ts') }, position: { line: 0, character: 0 }, context: { triggerKind: 2 } }).response;
    assert.equal(unknown.error?.code, ErrorCodes.UnknownDocument);
    await c.close();
  });

  test('chat streams deltas whose concatenation is the final text', async () => {
    const c = await client();
    await syncWorkspace(c);
    const deltas: string[] = [];
    c.onNotification((n) => {
      if (n.method === 'glance/chatDelta' && (n.params as { requestId: string }).requestId === 'chat-1') deltas.push((n.params as { text: string }).text);
    });
    const r = await c.request<ChatResult>('glance/chat', { messages: [{ role: 'user', content: 'What does add do?' }], maxTokens: 24, requestId: 'chat-1' });
    assert.ok(r.usage.completionTokens > 0);
    assert.ok(r.usage.contextTokens > 50, 'the repository is in the prompt');
    assert.ok(deltas.length > 0, 'deltas were streamed');
    assert.equal(deltas.join(''), r.text);
    await c.close();
  });

  test('edit selection: a file edit against the document it was computed on', async () => {
    const c = await client();
    await syncWorkspace(c);
    const text = 'export function sub(a: number, b: number): number {\n  return a - b;\n}\n';
    const uri = uriOf('src/sub.ts');
    c.notify('textDocument/didOpen', { textDocument: { uri, languageId: 'typescript', version: 1, text } });
    const r = await c.request<EditResult>('glance/edit', {
      kind: 'edit',
      instruction: 'return the absolute difference',
      target: { uri, range: { start: { line: 1, character: 0 }, end: { line: 2, character: 0 } } },
      maxTokens: 24,
    });
    assert.ok(r.usage.completionTokens > 0);
    for (const f of r.files) {
      assert.equal(f.uri, uri);
      assert.equal(f.baseHash, sha(text));
      assert.ok(f.newText.startsWith('export function sub(a: number, b: number): number {\n'), 'text before the selection is kept');
      assert.ok(f.newText.endsWith('}\n'), 'text after the selection is kept');
    }
    const outside = await c.send('glance/edit', { kind: 'edit', instruction: 'x', target: { uri: 'file:///etc/passwd' } }).response;
    assert.equal(outside.error?.code, ErrorCodes.OutsideWorkspace);
    const noInstruction = await c.send('glance/edit', { kind: 'edit', target: { uri } }).response;
    assert.equal(noInstruction.error?.code, ErrorCodes.InvalidParams);
    await c.close();
  });

  test('status reports the repository in context and the cache', async () => {
    const c = await client();
    await syncWorkspace(c);
    const s = await pollStatus(c, (st) => st.state === 'ready', 10_000);
    assert.equal(s.state, 'ready', JSON.stringify(s) + sc.stderr().split('\n').filter((l) => !l.startsWith('loading')).slice(-25).join('\n'));
    assert.equal(s.model, 'glance-tiny');
    assert.ok(s.contextTokens > 50);
    assert.equal(s.cachedTokens, s.contextTokens, 'the background prefill computed the whole repository prefix');
    assert.ok(s.files.inContext >= Object.keys(FILES).length - 1);
    assert.ok(s.memory.rssBytes > 0 && s.memory.kvCacheBytes > 0);
    await c.close();
  });
});

describe('cancellation', () => {
  test('$/cancelRequest stops a long generation within a few decode steps and the next request is served', async () => {
    const c = await client();
    let deltas = 0;
    let cancelledAt = -1;
    const first = new Promise<void>((resolve) => {
      c.onNotification((n) => {
        if (n.method !== 'glance/chatDelta' || (n.params as { requestId: string }).requestId !== 'long') return;
        deltas++;
        if (deltas === 3) resolve();
      });
    });
    const long = c.send('glance/chat', { messages: [{ role: 'user', content: 'Write a long story.' }], maxTokens: 2000, requestId: 'long' });
    await first;
    cancelledAt = deltas;
    c.cancel(long.id);
    const r = await long.response;
    assert.equal(r.error?.code, ErrorCodes.RequestCancelled);
    assert.ok(deltas - cancelledAt <= 3, `${deltas - cancelledAt} deltas after the cancel`);
    const s = await pollStatus(c, (st) => st.queue.running === 0, 2000);
    assert.equal(s.queue.running, 0, 'the slot is free');
    const next = await c.request<ChatResult>('glance/chat', { messages: [{ role: 'user', content: 'hi' }], maxTokens: 4 });
    assert.ok(next.usage.completionTokens > 0);
    await c.close();
  });

  test('a client that disconnects mid-generation frees its slot', async () => {
    const a = await client();
    let started!: () => void;
    const going = new Promise<void>((r) => { started = r; });
    a.onNotification((n) => { if (n.method === 'glance/chatDelta') started(); });
    a.send('glance/chat', { messages: [{ role: 'user', content: 'Write a long story.' }], maxTokens: 2000, requestId: 'gone' });
    await going;
    await a.close();
    const b = await client();
    const s = await pollStatus(b, (st) => st.queue.running === 0, 2500);
    assert.equal(s.queue.running, 0);
    await b.close();
  });
});

describe('hostile input', () => {
  test('2,000 malformed or hostile messages each get a JSON-RPC error; the process stays up with flat memory', async () => {
    const c = await client();
    openEdited(c);
    const rssBefore = (await c.request<StatusResult>('glance/status')).memory.rssBytes;
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const huge = 'x'.repeat(512 * 1024);
    const makers: ((i: number) => { raw?: string; method?: string; params?: unknown })[] = [
      () => ({ raw: '{"jsonrpc":"2.0","id":1,"method":' }), // truncated JSON
      () => ({ raw: 'not json at all' }),
      () => ({ raw: '[1,2,3]' }), // batch
      () => ({ raw: '{"jsonrpc":"1.0","id":5,"method":"glance/status"}' }),
      () => ({ raw: '{"jsonrpc":"2.0","id":{"x":1},"method":"glance/status"}' }),
      () => ({ raw: '{"jsonrpc":"2.0","id":7}' }),
      (i) => ({ method: `glance/nope${i}`, params: {} }),
      () => ({ method: 'textDocument/inlineCompletion', params: { textDocument: { uri: 5 }, position: { line: -1, character: 'a' } } }),
      () => ({ method: 'textDocument/inlineCompletion', params: { textDocument: { uri: uriOf(EDITED) }, position: { line: 1e6, character: 0 } } }),
      () => ({ method: 'textDocument/inlineCompletion', params: { textDocument: { uri: uriOf(EDITED) }, position: { line: 0, character: 9999 } } }),
      () => ({ method: 'glance/chat', params: { messages: 'hello' } }),
      () => ({ method: 'glance/chat', params: { messages: [{ role: 'root', content: 'x' }] } }),
      () => ({ method: 'glance/chat', params: { messages: [] } }),
      () => ({ method: 'glance/chat', params: { messages: [{ role: 'user', content: 'x' }], maxTokens: -5 } }),
      () => ({ method: 'glance/workspaceFiles', params: { files: [{ uri: 'file:///etc/shadow', hash: sha(huge), text: huge }] } }),
      () => ({ method: 'glance/workspaceFiles', params: { files: [{ uri: `file://${folder}/../../etc/passwd`, hash: sha('x'), text: 'x' }] } }),
      () => ({ method: 'glance/workspaceFiles', params: { files: [{ uri: uriOf('a.ts'), hash: 'zz', text: 'x' }] } }),
      () => ({ method: 'glance/workspaceFiles', params: { files: 'all of them' } }),
      () => ({ method: 'glance/edit', params: { kind: 'delete-everything', target: { uri: uriOf(EDITED) } } }),
      () => ({ method: 'glance/edit', params: { kind: 'edit', instruction: 'x', target: { uri: 'file:///etc/passwd' } } }),
      () => ({ method: 'glance/edit', params: { kind: 'edit', instruction: 'x', target: { uri: `file://${folder}/../outside.ts` } } }),
      () => ({ method: 'glance/edit', params: { kind: 'edit', instruction: huge, target: { uri: uriOf(EDITED), range: { start: { line: 50, character: 0 }, end: { line: 0, character: 0 } } } } }),
      () => ({ method: 'glance/chat', params: { messages: [{ role: 'user', content: 'x' }], context: { files: ['file:///etc/passwd'] } } }),
      () => ({ method: 'textDocument/inlineCompletion', params: null }),
      () => ({ method: 'textDocument/inlineCompletion', params: [1, 2] }),
    ];
    const expected: Promise<unknown>[] = [];
    let rawSent = 0;
    for (let i = 0; i < 2000; i++) {
      const m = makers[rand(makers.length)](i);
      if (m.raw !== undefined) {
        c.sendRaw(m.raw);
        rawSent++;
      } else {
        const { response } = c.send(m.method!, m.params);
        expected.push(response.then((r) => {
          assert.ok(r.error, `${m.method} ${String(JSON.stringify(m.params)).slice(0, 120)} should fail, got ${String(JSON.stringify(r.result)).slice(0, 80)}`);
          assert.equal(typeof r.error!.code, 'number');
          assert.ok(r.error!.message.length > 0);
        }));
      }
      if (i % 200 === 199) await Promise.all(expected.splice(0));
    }
    await Promise.all(expected);
    // Frames that are not requests get their error with id null.
    for (let i = 0; i < 100 && c.orphans.length < rawSent; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(c.orphans.filter((o) => o.error).length, rawSent);
    assert.equal(sc.proc.exitCode, null, 'still running');
    const s = await c.request<StatusResult>('glance/status');
    assert.ok(s.memory.rssBytes < rssBefore + 150 * 1024 * 1024, `rss grew from ${rssBefore >> 20} MiB to ${s.memory.rssBytes >> 20} MiB`);
    await c.close();
  });
});

describe('concurrency', () => {
  test('4 clients × 200 completion requests, half cancelled: all answered, no crash, no leak', async () => {
    // Four editor windows on four folders, each typing in one document: ten requests per wave at different
    // positions (each newer one supersedes the older), every other one cancelled by the client at once.
    const folders = [0, 1, 2, 3].map(() => fs.mkdtempSync(path.join(os.tmpdir(), 'glance-ws-')));
    const clients = await Promise.all(folders.map(async (f) => {
      const c = await RawClient.connectTo(sc);
      await initialize(c, f);
      return c;
    }));
    const lines = EDITED_TEXT.split('\n');
    let answered = 0;
    let cancelled = 0;
    let superseded = 0;
    await Promise.all(clients.map(async (c, ci) => {
      const uri = `file://${path.join(folders[ci], 'src', 'app.ts')}`;
      c.notify('textDocument/didOpen', { textDocument: { uri, languageId: 'typescript', version: 1, text: EDITED_TEXT } });
      for (let wave = 0; wave < 20; wave++) {
        const reqs = [];
        for (let k = 0; k < 10; k++) {
          const line = (wave + k) % lines.length;
          const r = c.send('textDocument/inlineCompletion', { textDocument: { uri }, position: { line, character: lines[line].length }, context: { triggerKind: 2 } });
          if (k % 2 === 0) c.cancel(r.id);
          reqs.push(r.response);
        }
        for (const r of await Promise.all(reqs)) {
          if (r.error?.code === ErrorCodes.RequestCancelled) cancelled++;
          else if (r.error?.code === ErrorCodes.Superseded) superseded++;
          else {
            assert.ok(!r.error, `unexpected error ${JSON.stringify(r.error)}`);
            assert.ok(Array.isArray((r.result as InlineCompletionList).items));
            answered++;
          }
        }
      }
    }));
    assert.equal(answered + cancelled + superseded, 800);
    assert.equal(cancelled, 400, `answered ${answered}, cancelled ${cancelled}, superseded ${superseded}`);
    assert.ok(answered >= 80, `the last request of each wave is answered (${answered})`);
    const s = await pollStatus(clients[0], (st) => st.queue.running + st.queue.waiting === 0, 2000);
    assert.equal(s.queue.running + s.queue.waiting, 0, 'nothing left in the engine');
    for (const c of clients) assert.equal(c.pendingCount, 0);
    assert.equal(sc.proc.exitCode, null);
    await Promise.all(clients.map((c) => c.close()));
    for (const f of folders) fs.rmSync(f, { recursive: true, force: true });
  });
});

describe('queue bound and indexing', () => {
  test('a full queue answers "busy" with a retry hint; a completion during indexing does not wait for it', async () => {
    const small = await startSidecarProcess(['--max-queue', '1', '--slots', '1', '--completion-max-tokens', '8', '--completion-timeout-ms', '60000']);
    try {
      const c = await RawClient.connectTo(small);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'glance-ws-'));
      await initialize(c, dir);
      const many = [0, 1, 2].map((i) => c.send('glance/chat', { messages: [{ role: 'user', content: `story ${i}` }], maxTokens: 8 }).response);
      const results = await Promise.all(many);
      const busy = results.filter((r) => r.error?.code === ErrorCodes.Busy);
      assert.ok(busy.length >= 1, JSON.stringify(results.map((r) => r.error?.code ?? 'ok')));
      assert.ok(((busy[0].error!.data as { retryAfterMs?: number }).retryAfterMs ?? 0) > 0);
      assert.ok(results.some((r) => !r.error), 'the first one is served');

      // A repository of several thousand tokens: the first completion comes before indexing has finished.
      const files = Array.from({ length: 8 }, (_, i) => {
        const text = Array.from({ length: 30 }, (_, k) => `export function f${i}_${k}(x: number): number {\n  return x * ${k} + ${i};\n}\n`).join('');
        return { uri: `file://${path.join(dir, `src/m${i}.ts`)}`, hash: sha(text), text };
      });
      await c.request('glance/workspaceFiles', { files });
      const doc = `file://${path.join(dir, 'src/app.ts')}`;
      c.notify('textDocument/didOpen', { textDocument: { uri: doc, languageId: 'typescript', version: 1, text: EDITED_TEXT } });
      await new Promise((r) => setTimeout(r, 400)); // the background target is set (debounced)
      const before = await c.request<StatusResult>('glance/status');
      assert.equal(before.state, 'indexing', `${before.cachedTokens}/${before.contextTokens}`);
      const r = await c.request<InlineCompletionList>('textDocument/inlineCompletion', { textDocument: { uri: doc }, position: { line: 5, character: 4 }, context: { triggerKind: 2 } });
      const after = await c.request<StatusResult>('glance/status');
      // Had the completion computed the rest of the repository itself, indexing would now be over.
      assert.equal(after.state, 'indexing', `answered after ${r.glance!.latencyMs} ms with indexing at ${after.cachedTokens}/${after.contextTokens}`);
      assert.ok(r.glance!.promptTokens < after.contextTokens - after.cachedTokens + 400, `computed ${r.glance!.promptTokens} prompt tokens`);
      const s = await pollStatus(c, (st) => st.state === 'ready', 60_000);
      assert.equal(s.state, 'ready', 'indexing resumed after the completion and finished');
      assert.equal(s.cachedTokens, s.contextTokens);
      await c.close();
      fs.rmSync(dir, { recursive: true, force: true });
    } finally {
      assert.equal(await small.stop(), 0);
    }
  });
});

describe('shutdown', () => {
  test('shutdown + exit from the last client stops the process cleanly and removes the lock file', async () => {
    const one = await startSidecarProcess([]);
    const lockFile = path.join(one.cacheDir, 'sidecar.json');
    assert.ok(fs.existsSync(lockFile));
    const c = await RawClient.connectTo(one);
    await initialize(c, os.tmpdir());
    const exited = new Promise<number | null>((r) => one.proc.once('exit', (code) => r(code)));
    assert.equal(await c.request('shutdown'), null);
    c.notify('exit');
    assert.equal(await exited, 0);
    assert.ok(!fs.existsSync(lockFile), 'lock file removed');
    fs.rmSync(one.cacheDir, { recursive: true, force: true });
  });

  test('SIGTERM stops the process cleanly and removes the lock file', async () => {
    const one = await startSidecarProcess([]);
    const lockFile = path.join(one.cacheDir, 'sidecar.json');
    const c = await RawClient.connectTo(one);
    await initialize(c, os.tmpdir());
    const exited = new Promise<number | null>((r) => one.proc.once('exit', (code) => r(code)));
    one.proc.kill('SIGTERM');
    assert.equal(await exited, 0);
    assert.ok(!fs.existsSync(lockFile));
    fs.rmSync(one.cacheDir, { recursive: true, force: true });
  });
});
