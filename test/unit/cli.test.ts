import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import test from 'node:test';

import { main, parseCommandLine, UsageError, type CliIo, type LoadModel } from '../../sidecar/src/cli/main';
import type { ModelLike, SequenceLike } from '../../sidecar/src/engine/generate';
import { readConfig } from '../../sidecar/src/engine/config';
import { createTokenizer } from '../../sidecar/src/engine/tokenizer';
import { tinyConfig, writeTinyModel } from '../helpers/tiny-model';
import { tinyTokenizer, writeTinyTokenizer } from '../helpers/tiny-tokenizer';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = path.join(ROOT, 'bin', 'glance.js');

function usage(argv: string[], re: RegExp): void {
  assert.throws(() => parseCommandLine(argv), (e: unknown) => e instanceof UsageError && re.test(e.message), `${JSON.stringify(argv)} should be a usage error matching ${re}`);
}

function run(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd: ROOT, env: { ...process.env, NO_COLOR: '1' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function memoryIo(): CliIo & { stdout: string; stderr: string } {
  const io = {
    stdout: '',
    stderr: '',
    stdoutIsTTY: false,
    stderrIsTTY: false,
    out(t: string): Promise<void> {
      io.stdout += t;
      return Promise.resolve();
    },
    err(t: string): void {
      io.stderr += t;
    },
  };
  return io;
}

test('argument parsing: commands and options', () => {
  const l = parseCommandLine(['logits', '--ids', '5, 17,3']);
  assert.deepEqual(l, { kind: 'run', command: { command: 'logits', model: null, verbose: false, ids: [5, 17, 3], attention: 'sparse', indexer: 'fp32' } });
  const g = parseCommandLine(['generate', '--model', 'm', '--prompt', 'hi', '--max-tokens', '8', '--top-p', '0.9', '--top-k', '40', '--temperature', '0.7', '--repetition-penalty', '1.1', '--seed', '7', '--stop', 'a', '--stop', '\n\n', '--json', '--attention', 'dense', '-v']);
  assert.equal(g.kind, 'run');
  if (g.kind !== 'run' || g.command.command !== 'generate') throw new Error('generate');
  assert.deepEqual(
    { ...g.command },
    { command: 'generate', model: 'm', verbose: true, prompt: 'hi', ids: null, maxTokens: 8, greedy: false, temperature: 0.7, topP: 0.9, topK: 40, repetitionPenalty: 1.1, seed: 7, stop: ['a', '\n\n'], json: true, attention: 'dense', indexer: 'fp8', file: null, raw: false },
  );
  const gi = parseCommandLine(['generate', '--ids', '1', '--max-tokens', '2', '--indexer', 'fp32']);
  assert.ok(gi.kind === 'run' && gi.command.command === 'generate' && gi.command.indexer === 'fp32');
  const gr = parseCommandLine(['generate', '--ids', '1', '--max-tokens', '0', '--greedy']);
  assert.ok(gr.kind === 'run' && gr.command.command === 'generate' && gr.command.greedy && gr.command.maxTokens === 0);
  assert.deepEqual(parseCommandLine(['info', '--json']), { kind: 'run', command: { command: 'info', model: null, verbose: false, json: true } });
});

test('argument parsing: help', () => {
  for (const argv of [['--help'], ['-h'], ['help']]) {
    const p = parseCommandLine(argv);
    assert.ok(p.kind === 'help' && /usage: glance <command>/.test(p.text));
  }
  for (const cmd of ['logits', 'generate', 'info']) {
    const p = parseCommandLine([cmd, '--help']);
    assert.ok(p.kind === 'help' && p.text.startsWith(`usage: glance ${cmd}`), cmd);
    const q = parseCommandLine(['help', cmd]);
    assert.ok(q.kind === 'help' && q.text.startsWith(`usage: glance ${cmd}`));
  }
});

test('argument parsing: usage errors', () => {
  usage([], /no command given/);
  usage(['frobnicate'], /unknown command "frobnicate"/);
  usage(['--ids', '1'], /expected a command before --ids/);
  usage(['logits'], /logits needs --ids/);
  usage(['logits', '--ids', '1', '--indexer', 'fp16'], /--indexer must be "fp32" or "fp8"/);
  usage(['logits', '--ids', ''], /--ids must list at least one token id/);
  usage(['logits', '--ids', '5,x,3'], /--ids: entry 2 \("x"\) is not a non-negative integer token id/);
  usage(['logits', '--ids', '5,-1'], /entry 2/);
  usage(['logits', '--ids', '1', '--attention', 'fast'], /--attention must be "sparse" or "dense"; got "fast"/);
  usage(['logits', '--ids', '1', '--foo'], /--foo/);
  usage(['logits', '--ids', '1', 'extra'], /extra/);
  usage(['logits', '--ids'], /--ids/);
  usage(['generate', '--max-tokens', '3'], /exactly one of --prompt TEXT or --ids LIST/);
  usage(['generate', '--prompt', 'a', '--max-tokens', '3', '--raw', '--file', 'a.ts'], /--raw and --file contradict/);
  usage(['generate', '--ids', '1', '--max-tokens', '3', '--file', 'a.ts'], /apply to --prompt text/);
  usage(['generate', '--prompt', 'a', '--max-tokens', '3', '--file', '../'], /--file must name a file/);
  usage(['generate', '--prompt', 'a', '--ids', '1', '--max-tokens', '3'], /exactly one of/);
  usage(['generate', '--ids', '1'], /generate needs --max-tokens N/);
  usage(['generate', '--ids', '1', '--max-tokens=-1'], /--max-tokens must be an integer ≥ 0/);
  usage(['generate', '--ids', '1', '--max-tokens', '-1'], /--max-tokens/);
  usage(['generate', '--ids', '1', '--max-tokens', 'ten'], /--max-tokens must be an integer; got "ten"/);
  usage(['generate', '--ids', '1', '--max-tokens', '3', '--greedy', '--temperature', '1'], /--greedy and --temperature contradict/);
  usage(['generate', '--ids', '1', '--max-tokens', '3', '--top-p', '1.5'], /--top-p must be a number in \(0, 1\]; got "1\.5"/);
  usage(['generate', '--ids', '1', '--max-tokens', '3', '--top-p', '0'], /--top-p/);
  usage(['generate', '--ids', '1', '--max-tokens', '3', '--temperature', 'hot'], /--temperature must be a number ≥ 0/);
  usage(['generate', '--ids', '1', '--max-tokens', '3', '--top-k', '2.5'], /--top-k must be an integer/);
  usage(['generate', '--ids', '1', '--max-tokens', '3', '--seed=-4'], /--seed must be an integer ≥ 0/);
  usage(['generate', '--ids', '1', '--max-tokens', '3', '--repetition-penalty', '0'], /--repetition-penalty must be a number > 0/);
  usage(['info', '--ids', '1'], /--ids/);
  usage(['info', '--model', ''], /--model needs a directory/);
});

test('bin/glance.js: usage errors exit 2, help exits 0', () => {
  const none = run([]);
  assert.equal(none.status, 2);
  assert.match(none.stderr, /^glance: no command given\n\nusage: glance <command>/);
  assert.equal(none.stdout, '');
  const bad = run(['generate', '--ids', '1,2']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /glance: generate needs --max-tokens N\n\nusage: glance generate/);
  const help = run(['logits', '--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^usage: glance logits --ids 5,17,3/);
  assert.equal(help.stderr, '');
});

test('bin/glance.js: engine errors print "glance: <message>" and exit 1, no stack', () => {
  const missing = run(['logits', '--model', '/nonexistent/glance-model', '--ids', '1']);
  assert.equal(missing.status, 1);
  assert.equal(missing.stderr, 'glance: model directory /nonexistent/glance-model does not exist\n');
  assert.equal(missing.stdout, '');

  const dir = writeTinyModel(tinyConfig('deepseek_v32'));
  try {
    const noTok = run(['generate', '--model', dir, '--prompt', 'hello', '--max-tokens', '2']);
    assert.equal(noTok.status, 1);
    assert.match(noTok.stderr, /^glance: --prompt needs a tokenizer, and .* has no tokenizer\.json; pass token ids with --ids instead\n$/);
    const range = run(['generate', '--model', dir, '--ids', '3,64', '--max-tokens', '2']);
    assert.equal(range.status, 1);
    assert.match(range.stderr, /^glance: token id 64 at position 1 is outside the model's vocabulary \(0\.\.63, vocab_size 64\)\n$/);
    const overflow = run(['generate', '--model', dir, '--ids', '3', '--max-tokens', '300']);
    assert.equal(overflow.status, 1);
    assert.match(overflow.stderr, /prompt \(1 tokens\) \+ --max-tokens \(300\) = 301, which exceeds the model's context of 256 tokens/);
    assert.doesNotMatch(overflow.stderr, /\n\s+at /);

    const info = run(['info', '--model', dir]);
    assert.equal(info.status, 0, info.stderr);
    assert.match(info.stdout, /type\s+deepseek_v32/);
    assert.match(info.stdout, /indexer\s+2 heads × 16, top-k 4/);
    assert.match(info.stdout, /parameters\s+.* total, .* active per token/);
    assert.match(info.stdout, /backends\s+/);
    const j = run(['info', '--model', dir, '--json']);
    assert.equal(j.status, 0, j.stderr);
    const d = JSON.parse(j.stdout) as { modelType: string; parameters: { total: number; active: number }; layers: number };
    assert.equal(d.modelType, 'deepseek_v32');
    assert.equal(d.layers, 2);
    assert.equal(d.parameters.total - d.parameters.active, 2 * 3 * 16 * 32);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** A fake forward pass: logits[t][j] = ids[t] + j / 1000, and token (last + 1) always wins. */
function fakeLoader(calls: string[]): LoadModel {
  return async (dir, opts) => {
    calls.push(`${path.basename(dir)}:${opts.attention}`);
    const config = readConfig(dir);
    const V = config.vocabSize;
    const model: ModelLike = {
      config,
      createSequence(): SequenceLike {
        let length = 0;
        return {
          get length() {
            return length;
          },
          forward(ids: Int32Array, allLogits: boolean): Float32Array {
            length += ids.length;
            const rows = allLogits ? Array.from(ids) : [ids[ids.length - 1]!];
            const out = new Float32Array(rows.length * V);
            rows.forEach((id, t) => {
              for (let j = 0; j < V; j++) out[t * V + j] = id + j / 1000;
              out[t * V + ((id + 1) % V)] = 1000;
            });
            return out;
          },
          truncate(n: number) {
            length = n;
          },
        };
      },
    };
    return model;
  };
}

test('logits prints {"logits": [[…], …]} with one full-precision row per position', async () => {
  const dir = writeTinyModel(tinyConfig('deepseek_v3'));
  try {
    const io = memoryIo();
    const calls: string[] = [];
    const code = await main(['logits', '--model', dir, '--ids', '5,17,3', '--attention', 'dense'], io, { loadModel: fakeLoader(calls) });
    assert.equal(code, 0, io.stderr);
    assert.deepEqual(calls, [`${path.basename(dir)}:dense`]);
    assert.ok(io.stdout.startsWith('{"logits": [['));
    const parsed = JSON.parse(io.stdout) as { logits: number[][] };
    assert.equal(parsed.logits.length, 3);
    assert.equal(parsed.logits[0]!.length, 64);
    assert.equal(parsed.logits[1]![2], Math.fround(17 + 2 / 1000), 'exact float32 value');
    assert.equal(parsed.logits[2]![4], 1000);
    assert.equal(io.stderr, '');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('generate streams text, or prints {"ids", "text"} with --json', async () => {
  const tt = tinyTokenizer();
  const tok = createTokenizer(tt.json, tt.config);
  const dir = writeTinyModel(tinyConfig('deepseek_v3', { vocab_size: tok.vocabSize, eos_token_id: tok.eosId, bos_token_id: tok.bosId }));
  writeTinyTokenizer(dir);
  try {
    const h = tok.encode('h')[0]!; // the fake model then emits h+1, h+2, …
    const expectedIds = [h + 1, h + 2, h + 3];
    const expectedText = tok.decode(expectedIds);
    const io = memoryIo();
    const code = await main(['generate', '--model', dir, '--ids', String(h), '--max-tokens', '3', '--greedy', '--json'], io, { loadModel: fakeLoader([]) });
    assert.equal(code, 0, io.stderr);
    assert.equal(io.stdout, `{"ids": ${JSON.stringify(expectedIds)}, "text": ${JSON.stringify(expectedText)}}\n`);

    const stream = memoryIo();
    assert.equal(await main(['generate', '--model', dir, '--prompt', 'h', '--max-tokens', '3', '--greedy'], stream, { loadModel: fakeLoader([]) }), 0, stream.stderr);
    assert.equal(stream.stdout, expectedText);

    const stopped = memoryIo();
    const stopAt = expectedText.slice(1, 2);
    assert.equal(await main(['generate', '--model', dir, '--ids', String(h), '--max-tokens', '3', '--greedy', '--stop', stopAt, '--json'], stopped, { loadModel: fakeLoader([]) }), 0);
    assert.equal((JSON.parse(stopped.stdout) as { text: string }).text, expectedText.slice(0, 1));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('info reports the native backends when the addon loads', async () => {
  const dir = writeTinyModel(tinyConfig('deepseek_v2', { q_lora_rank: null }), { packed: true });
  try {
    const io = memoryIo();
    const native = { backends: () => ({ cpu: { threads: 4, simd: 'avx2' }, cuda: { built: false, devices: 0 } }) };
    const code = await main(['info', '--model', dir], io, { loadNative: () => native as never });
    assert.equal(code, 0, io.stderr);
    assert.match(io.stdout, /backends\s+cpu 4 threads \(avx2\); cuda not built/);
    const io2 = memoryIo();
    const fast = { backends: () => ({ cpu: { threads: 2, simd: 'avx2+fma+f16c', bf16Dot: true, amx: true }, cuda: { built: false, devices: 0 } }) };
    assert.equal(await main(['info', '--model', dir], io2, { loadNative: () => fast as never }), 0, io2.stderr);
    assert.match(io2.stdout, /backends\s+cpu 2 threads \(avx2\+fma\+f16c, avx512-bf16, amx\); cuda not built/);
    assert.match(io.stdout, /attention\s+MLA, 2 heads; q_lora_rank none \(q_proj\)/);
    assert.match(io.stdout, /experts\s+4 routed \(2 per token; softmax, greedy, scale 1\) \+ 1 shared; intermediate 16; packed layout/);
    assert.match(io.stdout, /tokenizer\s+none/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

function nativeAvailable(): boolean {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    (require('../../sidecar/src/native/index') as { loadNative: () => unknown }).loadNative();
    return true;
  } catch {
    return false;
  }
}

test('end to end through bin/glance.js with the native addon', { skip: !nativeAvailable() && 'native addon not built' }, () => {
  const tt = tinyTokenizer();
  const tok = createTokenizer(tt.json, tt.config);
  const dir = writeTinyModel(tinyConfig('deepseek_v32', { vocab_size: tok.vocabSize, eos_token_id: tok.eosId, bos_token_id: tok.bosId }));
  writeTinyTokenizer(dir);
  try {
    const sparse = run(['logits', '--model', dir, '--ids', '5,17,3']);
    assert.equal(sparse.status, 0, sparse.stderr);
    const ls = (JSON.parse(sparse.stdout) as { logits: number[][] }).logits;
    assert.equal(ls.length, 3);
    assert.ok(ls.every((row) => row.length === tok.vocabSize && row.every(Number.isFinite)));
    // 3 tokens < index_topk (4): sparse attention selects every position, so it equals dense
    const dense = run(['logits', '--model', dir, '--ids', '5,17,3', '--attention', 'dense']);
    const ld = (JSON.parse(dense.stdout) as { logits: number[][] }).logits;
    ls.forEach((row, t) => row.forEach((v, j) => assert.ok(Math.abs(v - ld[t]![j]!) < 1e-5, `${t},${j}`)));
    const g1 = run(['generate', '--model', dir, '--prompt', 'hello', '--max-tokens', '6', '--greedy', '--json']);
    const g2 = run(['generate', '--model', dir, '--prompt', 'hello', '--max-tokens', '6', '--greedy', '--json']);
    assert.equal(g1.status, 0, g1.stderr);
    assert.equal(g1.stdout, g2.stdout, 'greedy is deterministic');
    const out = JSON.parse(g1.stdout) as { ids: number[]; text: string };
    assert.ok(out.ids.length >= 1 && out.ids.length <= 6);
    const s1 = run(['generate', '--model', dir, '--ids', '5,6', '--max-tokens', '6', '--temperature', '0.9', '--top-p', '0.9', '--seed', '3', '--json']);
    const s2 = run(['generate', '--model', dir, '--ids', '5,6', '--max-tokens', '6', '--temperature', '0.9', '--top-p', '0.9', '--seed', '3', '--json']);
    assert.equal(s1.stdout, s2.stdout, 'seeded sampling is reproducible');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
