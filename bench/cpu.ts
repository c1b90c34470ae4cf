// CPU benchmark: prefill and decode tokens/s and peak memory of the ~50M deepseek_v32 config at several
// context lengths, sparse (DSA) beside dense attention, with the machine's measured memory bandwidth and the
// decode roofline (bytes that must be read per token / bandwidth) printed beside our figures.
//
//   npm run bench:cpu [-- --contexts 1024,8192,32768 --decode 16 --attention sparse,dense --profile --threads N
//                        --kv-cache fp32|bf16|fp8 (default: the checkpoint's precision, bf16 here) --repeat N
//                        --weights bf16|fp8 (default bf16; fp8 = DeepSeek's block format, as its checkpoints ship)]
//
// Each (context, attention) case runs in its own child process so that its peak RSS is its own. --repeat N runs the
// whole set N times in turn (rounds), so that cases compared with each other are measured minutes apart, and adds
// medians over the rounds and the per-round ratios: on a shared machine whose speed drifts within the hour, a ratio
// of two cases of the same round is steadier than one of two separate runs.

import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { KV_CACHE_DTYPES, latentRowBytes, loadModel, type AttentionMode, type IndexerPrecision, type KvCacheDtype } from '../sidecar/src/engine/model';
import type { NativeAddon } from '../sidecar/src/native/contract';
import type { ModelConfig } from '../sidecar/src/engine/types';
import { cpuKernels, loadNative } from '../sidecar/src/native/index';
import { median, positiveInt } from './micro';
import { ensureRandomModel, type BenchWeights } from './random-model';

interface CaseResult {
  context: number;
  attention: AttentionMode;
  prefillTokensPerSecond: number;
  decodeMsPerToken: number;
  decodeTokensPerSecond: number;
  peakRssMiB: number;
  cacheMiB: number;
  /** --profile: ms per decode step spent in each native op (median step's share is not separable: the mean). */
  profile?: Record<string, { ms: number; calls: number }>;
}

const BENCH_WEIGHTS: readonly BenchWeights[] = ['bf16', 'fp8'];

function modelDirFor(weights: BenchWeights): string {
  return path.resolve(__dirname, '..', '..', 'bench', 'out', weights === 'bf16' ? 'ds32-50m' : 'ds32-50m-fp8');
}

/** Bytes a decode step must read: active weights plus the caches attention touches. The embedding row, the LM head
 *  and the routers are bf16 in both precisions; FP8 matrices read a byte per weight and a 4-byte scale per block. */
function decodeBytes(
  cfg: ModelConfig, weights: BenchWeights, context: number, attention: AttentionMode, indexer: IndexerPrecision, latentBytes: number,
): number {
  const D = cfg.hiddenSize;
  const H = cfg.numHeads;
  const qHead = cfg.qkNopeHeadDim + cfg.qkRopeHeadDim;
  const latent = cfg.kvLoraRank + cfg.qkRopeHeadDim;
  let bf16Bytes = 2 * (D /* embedding row */ + cfg.vocabSize * D /* lm head */);
  let params = 0;
  let cacheBytes = 0;
  for (let l = 0; l < cfg.numLayers; l++) {
    const q = cfg.qLoraRank ? cfg.qLoraRank * D + H * qHead * cfg.qLoraRank : H * qHead * D;
    params += q + latent * D + H * (cfg.qkNopeHeadDim + cfg.vHeadDim) * cfg.kvLoraRank + D * H * cfg.vHeadDim;
    const useIndexer = attention === 'sparse' && cfg.indexer !== null;
    if (useIndexer) {
      const ix = cfg.indexer!;
      params += ix.nHeads * ix.headDim * (cfg.qLoraRank ?? 0) + ix.headDim * D + ix.nHeads * D;
      const keyBytes = indexer === 'fp8' ? ix.headDim + 4 : ix.headDim * 4;
      cacheBytes += context * keyBytes + Math.min(context, ix.topk) * latentBytes;
    } else {
      cacheBytes += context * latentBytes;
    }
    if (cfg.mlpLayerTypes[l] === 'dense') params += 3 * D * cfg.intermediateSize;
    else {
      bf16Bytes += 2 * cfg.nRoutedExperts * D;   // the router
      params += 3 * D * cfg.moeIntermediateSize * (cfg.numExpertsPerTok + cfg.nSharedExperts);
    }
  }
  return bf16Bytes + params * (weights === 'fp8' ? 1 + 4 / (128 * 128) : 2) + cacheBytes;
}

/** The addon with a timer around every op (for --profile); `timing.on` switches the accounting. */
function timedNative(timing: { on: boolean; ops: Map<string, { ms: number; calls: number }> }): NativeAddon {
  const native = loadNative();
  return new Proxy(native, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function' || typeof prop !== 'string') return v;
      const fn = v as (...args: unknown[]) => unknown;
      return (...args: unknown[]) => {
        if (!timing.on) return fn.apply(target, args);
        const s = process.hrtime.bigint();
        const r = fn.apply(target, args);
        const e = timing.ops.get(prop) ?? { ms: 0, calls: 0 };
        e.ms += Number(process.hrtime.bigint() - s) / 1e6;
        e.calls++;
        timing.ops.set(prop, e);
        return r;
      };
    },
  });
}

async function runCase(
  context: number, attention: AttentionMode, indexer: IndexerPrecision, decodeTokens: number, profile: boolean,
  kvCache: KvCacheDtype | undefined, weights: BenchWeights,
): Promise<CaseResult> {
  const timing = { on: false, ops: new Map<string, { ms: number; calls: number }>() };
  const model = await loadModel(modelDirFor(weights), { attention, indexerPrecision: indexer, kvCache, native: profile ? timedNative(timing) : undefined });
  const cfg = model.config;
  const seq = model.createSequence(context + decodeTokens + 1);
  const ids = new Int32Array(context);
  for (let i = 0; i < context; i++) ids[i] = 2 + ((i * 7919) % (cfg.vocabSize - 2));
  const t0 = process.hrtime.bigint();
  let logits = seq.forward(ids, false);
  const t1 = process.hrtime.bigint();
  const steps: number[] = [];
  for (let i = 0; i < decodeTokens; i++) {
    let next = 0;
    for (let v = 1; v < logits.length; v++) if (logits[v] > logits[next]) next = v;
    const s = process.hrtime.bigint();
    timing.on = profile;
    logits = seq.forward(Int32Array.of(next), false);
    timing.on = false;
    steps.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  const keyBytes = attention === 'sparse' && cfg.indexer ? (indexer === 'fp8' ? cfg.indexer.headDim + 4 : cfg.indexer.headDim * 4) : 0;
  const rowBytes = latentRowBytes(model.kvCacheDtype, cfg.kvLoraRank, cfg.qkRopeHeadDim) + keyBytes;
  const ms = median(steps);
  return {
    context,
    attention,
    prefillTokensPerSecond: context / (Number(t1 - t0) / 1e9),
    decodeMsPerToken: ms,
    decodeTokensPerSecond: 1000 / ms,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    cacheMiB: (seq.length * rowBytes * cfg.numLayers) / 2 ** 20,
    profile: profile
      ? Object.fromEntries([...timing.ops].map(([op, v]) => [op, { ms: v.ms / decodeTokens, calls: v.calls / decodeTokens }]))
      : undefined,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      contexts: { type: 'string', default: '1024,8192,32768' },
      attention: { type: 'string', default: 'sparse,dense' },
      decode: { type: 'string', default: '16' },
      indexer: { type: 'string', default: 'fp8' },
      child: { type: 'string' },
      profile: { type: 'boolean', default: false },
      threads: { type: 'string' },
      'kv-cache': { type: 'string' },
      weights: { type: 'string', default: 'bf16' },
      repeat: { type: 'string', default: '1' },
    },
  });
  const rounds = positiveInt('repeat', values.repeat);
  const decodeTokens = positiveInt('decode', values.decode);
  const kvCacheArg = values['kv-cache'];
  if (kvCacheArg !== undefined && !(KV_CACHE_DTYPES as readonly string[]).includes(kvCacheArg)) {
    throw new Error(`--kv-cache must be fp32, bf16 or fp8, got '${kvCacheArg}'`);
  }
  const kvCache = kvCacheArg as KvCacheDtype | undefined;
  if (!(BENCH_WEIGHTS as readonly string[]).includes(values.weights!)) {
    throw new Error(`--weights must be bf16 or fp8, got '${values.weights}'`);
  }
  const weights = values.weights as BenchWeights;
  if (values.threads !== undefined) {
    loadNative().setThreads(positiveInt('threads', values.threads));
  }
  if (values.child) {
    const [ctx, att] = values.child.split(':');
    const r = await runCase(
      Number(ctx), att as AttentionMode, values.indexer as IndexerPrecision, decodeTokens, values.profile!, kvCache, weights,
    );
    process.stdout.write(JSON.stringify(r) + '\n');
    return;
  }
  if (weights === 'fp8') console.log(`(writing the FP8 copy of the random model once, into ${modelDirFor(weights)})`);
  ensureRandomModel(modelDirFor(weights), undefined, weights);
  const native = loadNative();
  const bandwidth = native.measureReadBandwidth(256);
  const model = await loadModel(modelDirFor(weights), { attention: 'sparse', kvCache });
  const cfg = model.config;
  const info = native.backends();
  console.log(`# Glance CPU benchmark — ${new Date().toISOString().slice(0, 10)}`);
  console.log(`machine: ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} threads, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; addon: ${cpuKernels(info.cpu)}, ${info.cpu.threads} threads`);
  console.log(`model: random deepseek_v32, ${(model.weights.totalParams / 1e6).toFixed(1)}M params, ${weights === 'fp8' ? 'FP8 weights (e4m3, 128×128 blocks; embedding and LM head bf16)' : 'bf16 weights'} (${bench50mDescription(cfg)})`);
  console.log(
    `measured read bandwidth: ${bandwidth.toFixed(1)} GB/s (reference for the roofline); indexer key cache: ${values.indexer}; ` +
      `latent cache: ${model.kvCacheDtype}`,
  );
  console.log('');
  console.log('| context | attention | prefill tok/s | decode tok/s | decode ms/tok | roofline tok/s | % of roofline | peak RSS MiB | KV+index cache MiB |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  const results: CaseResult[] = [];
  const byRound: CaseResult[][] = [];
  for (let round = 0; round < rounds; round++) {
    byRound.push([]);
    for (const ctx of values.contexts!.split(',').map(Number)) {
      for (const att of values.attention!.split(',') as AttentionMode[]) {
        const child = spawnSync(process.execPath, [
          __filename, '--child', `${ctx}:${att}`, '--decode', String(decodeTokens), '--indexer', values.indexer!,
          ...(values.profile ? ['--profile'] : []),
          ...(values.threads ? ['--threads', values.threads] : []),
          ...(kvCache ? ['--kv-cache', kvCache] : []),
          '--weights', weights,
        ], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'inherit'],
          maxBuffer: 1 << 20,
        });
        if (child.status !== 0) throw new Error(`benchmark case ${ctx}:${att} failed (exit ${child.status})`);
        const r = JSON.parse(child.stdout.trim().split('\n').pop()!) as CaseResult;
        byRound[round].push(r);
        if (round === 0) results.push(r);
        const roof = (bandwidth * 1e9) / decodeBytes(cfg, weights, ctx, att, values.indexer as IndexerPrecision, latentRowBytes(model.kvCacheDtype, cfg.kvLoraRank, cfg.qkRopeHeadDim));
        console.log(
          `| ${ctx} | ${att} | ${r.prefillTokensPerSecond.toFixed(0)} | ${r.decodeTokensPerSecond.toFixed(1)} | ${r.decodeMsPerToken.toFixed(2)} | ` +
            `${roof.toFixed(1)} | ${((100 * r.decodeTokensPerSecond) / roof).toFixed(0)}% | ${r.peakRssMiB.toFixed(0)} | ${r.cacheMiB.toFixed(0)} |`,
        );
      }
    }
  }
  if (rounds > 1) printRounds(byRound);
  if (values.profile) {
    console.log('');
    console.log('per-op profile of a decode step (a timer around every native call; ms per token, all layers):');
    console.log('');
    console.log(`| op | ${results.map((r) => `${r.context} ${r.attention}`).join(' | ')} |`);
    console.log(`|---|${results.map(() => '---').join('|')}|`);
    const ops = [...new Set(results.flatMap((r) => Object.keys(r.profile ?? {})))];
    ops.sort((a, b) => Math.max(...results.map((r) => r.profile?.[b]?.ms ?? 0)) - Math.max(...results.map((r) => r.profile?.[a]?.ms ?? 0)));
    for (const op of ops) {
      const cells = results.map((r) => {
        const p = r.profile?.[op];
        return p ? `${p.ms.toFixed(2)} (${p.calls.toFixed(0)})` : '–';
      });
      console.log(`| ${op} (calls) | ${cells.join(' | ')} |`);
    }
    const totals = results.map((r) => Object.values(r.profile ?? {}).reduce((a, p) => a + p.ms, 0).toFixed(2));
    console.log(`| all native ops | ${totals.join(' | ')} |`);
  }
  // The summary compares each case's median decode time over the rounds (the first round alone when there is one).
  const decodeMs = (ctx: number, att: AttentionMode): number | undefined => {
    const ms = byRound.flatMap((rs) => rs.filter((r) => r.context === ctx && r.attention === att).map((r) => r.decodeMsPerToken));
    return ms.length > 0 ? median(ms) : undefined;
  };
  const maxCtx = Math.max(...results.map((r) => r.context));
  const minCtx = Math.min(...results.map((r) => r.context));
  const sparseHi = decodeMs(maxCtx, 'sparse');
  const denseHi = decodeMs(maxCtx, 'dense');
  const sparseLo = decodeMs(minCtx, 'sparse');
  const over = rounds > 1 ? ` (medians over ${rounds} rounds)` : '';
  console.log('');
  if (sparseHi && denseHi) console.log(`sparse vs dense decode at ${maxCtx}: ${(denseHi / sparseHi).toFixed(2)}× (target ≥ 2×)${over}`);
  if (sparseHi && sparseLo) console.log(`sparse decode at ${maxCtx} vs ${minCtx}: ${(sparseLo / sparseHi).toFixed(2)} of its speed (target ≥ 0.5)${over}`);
}

/** --repeat: decode ms per token of every case in every round, their medians, and the two target ratios per round. */
function printRounds(byRound: CaseResult[][]): void {
  const keys = byRound[0].map((r) => `${r.context} ${r.attention}`);
  const ms = (round: CaseResult[], key: string) => round.find((r) => `${r.context} ${r.attention}` === key)?.decodeMsPerToken;
  console.log('');
  console.log(`decode ms per token over ${byRound.length} rounds (each case in its own process, the rounds in turn):`);
  console.log('');
  console.log(`| round | ${keys.join(' | ')} |`);
  console.log(`|---|${keys.map(() => '---').join('|')}|`);
  byRound.forEach((round, i) => console.log(`| ${i + 1} | ${keys.map((k) => ms(round, k)?.toFixed(2) ?? '–').join(' | ')} |`));
  console.log(`| median | ${keys.map((k) => median(byRound.map((round) => ms(round, k) ?? NaN)).toFixed(2)).join(' | ')} |`);
  const contexts = byRound[0].map((r) => r.context);
  const hi = Math.max(...contexts), lo = Math.min(...contexts);
  // speed of case a relative to case b in each round (a ratio of their ms per token, inverted)
  const speedRatios = (a: string, b: string) => byRound.map((round) => (ms(round, b) ?? NaN) / (ms(round, a) ?? NaN));
  const show = (label: string, xs: number[]) => {
    if (xs.some((x) => !Number.isFinite(x))) return;
    console.log(`${label}: ${xs.map((x) => x.toFixed(2)).join(', ')} (median ${median(xs).toFixed(2)})`);
  };
  console.log('');
  show(`sparse vs dense decode at ${hi}, per round (target ≥ 2×)`, speedRatios(`${hi} sparse`, `${hi} dense`));
  show(`sparse decode at ${hi} vs ${lo}, per round (target ≥ 0.5)`, speedRatios(`${hi} sparse`, `${lo} sparse`));
}

function bench50mDescription(c: ModelConfig): string {
  return `${c.numLayers} layers, hidden ${c.hiddenSize}, ${c.numHeads} heads, kv_lora ${c.kvLoraRank}, ${c.nRoutedExperts} experts (${c.numExpertsPerTok} active) + ${c.nSharedExperts} shared, indexer ${c.indexer?.nHeads}×${c.indexer?.headDim} top-${c.indexer?.topk}`;
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exitCode = 1;
});
