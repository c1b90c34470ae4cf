// npm run bench:sidecar — the sidecar as an editor uses it, on this machine's CPU with the embedded model:
//   1. repository prefill: a ~30K-token TypeScript repository synced, time until its prefix is computed;
//   2. typing simulation: one keystroke every 150 ms inside a ~2K-token file, a completion requested after each
//      (the previous one cancelled if still running, as the editor does); latency p50/p95 of the answered ones,
//      with prefix reuse (the product) and without it (every prompt recomputed: the baseline), same run.
// Options: --model DIR, --device auto|cuda|cpu, --repo-tokens N (default 30000), --keystrokes N (default 40),
// --baseline-keystrokes N (6).

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import type { InlineCompletionList, StatusResult, WorkspaceFilesResult } from '../sidecar/src/protocol/index';
import { ErrorCodes } from '../sidecar/src/protocol/index';
import { initialize, PROJECT_ROOT, RawClient, startSidecarProcess, type SidecarProcess } from '../test/helpers/sidecar-process';

const sha = (t: string): string => createHash('sha256').update(t, 'utf8').digest('hex');

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
function passThrough(name: string): string[] {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? [`--${name}`, process.argv[i + 1]] : [];
}
/** options handed to `glance serve` as they are */
const modelArg = [...passThrough('model'), ...passThrough('device')];

/** Real TypeScript: this project's own sources (sidecar, extension, tests), as many files as make the size. */
function makeRepository(approxTokens: number): { files: Record<string, string>; edited: string } {
  const roots = ['sidecar/src', 'extension/src', 'test', 'bench'].map((r) => path.join(PROJECT_ROOT, r));
  const sources: string[] = [];
  const walk = (dir: string): void => {
    if (!fs.existsSync(dir)) return;
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory() && e.name !== 'fixtures' && e.name !== 'node_modules') walk(p);
      else if (e.isFile() && /\.ts$/.test(e.name)) sources.push(p);
    }
  };
  roots.forEach(walk);
  const files: Record<string, string> = {};
  let chars = 0;
  const target = approxTokens * 3.6; // chars per token of this tokenizer on TypeScript, roughly
  for (const f of sources) {
    if (chars >= target) break;
    const text = fs.readFileSync(f, 'utf8');
    files[path.relative(PROJECT_ROOT, f).split(path.sep).join('/')] = text;
    chars += text.length;
  }
  // The file being edited: ~2K tokens of ordinary TypeScript.
  const fns: string[] = [];
  for (let i = 0; fns.join('').length < 7000; i++) {
    fns.push(`export function handler${i}(input: string[], limit: number): Map<string, number> {\n  const counts = new Map<string, number>();\n  for (const item of input.slice(0, limit)) {\n    counts.set(item, (counts.get(item) ?? 0) + 1);\n  }\n  return counts;\n}\n\n`);
  }
  return { files, edited: fns.join('') };
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

interface TypingResult {
  latencies: number[];
  cancelled: number;
  reused: number[];
  computed: number[];
  prefillTokensPerSecond: number;
  repoTokens: number;
}

async function run(sc: SidecarProcess, keystrokes: number, repoTokens: number, waitForPrefix: boolean): Promise<TypingResult> {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'glance-bench-'));
  const { files, edited } = makeRepository(repoTokens);
  const c = await RawClient.connectTo(sc);
  await initialize(c, folder);
  const uri = (rel: string): string => `file://${path.join(folder, rel)}`;
  const t0 = Date.now();
  const entries = Object.entries(files).map(([rel, text]) => ({ uri: uri(rel), hash: sha(text), text }));
  for (let i = 0; i < entries.length; i += 200) {
    const r = await c.request<WorkspaceFilesResult>('glance/workspaceFiles', { files: entries.slice(i, i + 200) });
    if (r.missing.length) throw new Error(`missing ${r.missing.length}`);
  }
  const editedUri = uri('src/app.ts');
  let text = edited;
  let version = 1;
  c.notify('textDocument/didOpen', { textDocument: { uri: editedUri, languageId: 'typescript', version, text } });
  let status = await c.request<StatusResult>('glance/status');
  let prefillTps = 0;
  if (waitForPrefix) {
    while (status.state !== 'ready') {
      await new Promise((r) => setTimeout(r, 200));
      status = await c.request<StatusResult>('glance/status');
    }
    prefillTps = status.contextTokens / ((Date.now() - t0) / 1000);
  }
  process.stderr.write(`  repository: ${Object.keys(files).length} files, ${status.contextTokens} tokens${waitForPrefix ? `, prefix computed in ${((Date.now() - t0) / 1000).toFixed(1)} s` : ''}\n`);

  // Type a new function in the middle of the file, one character per 150 ms.
  const insertAt = text.indexOf('export function handler5(');
  const typed = 'export function total(xs: number[]): number {\n  let sum = 0;\n  for (const x of xs) {\n    sum += x;\n  }\n  return sum;\n}\n\n';
  const latencies: number[] = [];
  const reused: number[] = [];
  const computed: number[] = [];
  let cancelled = 0;
  let previous: { id: number; response: Promise<unknown> } | null = null;
  const pending: Promise<void>[] = [];
  for (let k = 0; k < keystrokes; k++) {
    const ch = typed[k % typed.length];
    const offset = insertAt + k;
    const before = text.slice(0, offset);
    const line = before.split('\n').length - 1;
    const character = offset - (before.lastIndexOf('\n') + 1);
    text = before + ch + text.slice(offset);
    version++;
    c.notify('textDocument/didChange', {
      textDocument: { uri: editedUri, version },
      contentChanges: [{ range: { start: { line, character }, end: { line, character } }, text: ch }],
    });
    const after = offset + 1;
    const b2 = text.slice(0, after);
    const pos = { line: b2.split('\n').length - 1, character: after - (b2.lastIndexOf('\n') + 1) };
    if (previous) c.cancel(previous.id);
    const sent = Date.now();
    const req = c.send('textDocument/inlineCompletion', { textDocument: { uri: editedUri }, position: pos, context: { triggerKind: 2 } });
    previous = req;
    pending.push(req.response.then((r) => {
      if (r.error) {
        if (r.error.code === ErrorCodes.RequestCancelled || r.error.code === ErrorCodes.Superseded) cancelled++;
        else throw new Error(JSON.stringify(r.error));
        return;
      }
      const list = r.result as InlineCompletionList;
      latencies.push(Date.now() - sent);
      reused.push(list.glance?.reusedTokens ?? 0);
      computed.push(list.glance?.promptTokens ?? 0);
    }));
    await new Promise((r) => setTimeout(r, 150));
  }
  await Promise.all(pending);
  await c.close();
  fs.rmSync(folder, { recursive: true, force: true });
  return { latencies, cancelled, reused, computed, prefillTokensPerSecond: prefillTps, repoTokens: status.contextTokens };
}

async function main(): Promise<void> {
  const repoTokens = arg('repo-tokens', 30000);
  const keystrokes = arg('keystrokes', 40);
  const baselineKeystrokes = arg('baseline-keystrokes', 6);
  console.log(`# sidecar benchmark — ${os.cpus().length} CPU cores (${os.cpus()[0]?.model ?? '?'}), ${new Date().toISOString().slice(0, 10)}`);
  process.stderr.write('with prefix reuse:\n');
  const sc = await startSidecarProcess([...modelArg]);
  console.log(`# model ${sc.ready.model} on ${sc.ready.device}`);
  const withReuse = await run(sc, keystrokes, repoTokens, true);
  await sc.stop();
  process.stderr.write('without prefix reuse (baseline):\n');
  const sc2 = await startSidecarProcess([...modelArg, '--no-prefix-reuse', '--completion-timeout-ms', '600000']);
  const without = await run(sc2, baselineKeystrokes, repoTokens, false);
  await sc2.stop();
  const fmt = (x: number): string => (Number.isFinite(x) ? `${Math.round(x)}` : 'n/a');
  console.log('');
  console.log('| figure | with prefix reuse | without (baseline) | target |');
  console.log('|---|---|---|---|');
  console.log(`| repository prefill | ${fmt(withReuse.prefillTokensPerSecond)} tokens/s (${withReuse.repoTokens} tokens) | — | — |`);
  console.log(`| completion latency p50 | ${fmt(percentile(withReuse.latencies, 50))} ms | ${fmt(percentile(without.latencies, 50))} ms | ≤ 300 ms |`);
  console.log(`| completion latency p95 | ${fmt(percentile(withReuse.latencies, 95))} ms | ${fmt(percentile(without.latencies, 95))} ms | ≤ 800 ms |`);
  console.log(`| answered / cancelled by the next keystroke | ${withReuse.latencies.length} / ${withReuse.cancelled} | ${without.latencies.length} / ${without.cancelled} | — |`);
  console.log(`| prompt tokens computed per completion (median) | ${fmt(percentile(withReuse.computed, 50))} (reused ${fmt(percentile(withReuse.reused, 50))}) | ${fmt(percentile(without.computed, 50))} | — |`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
