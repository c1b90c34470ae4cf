// Attention rows of the GPU benchmark (issue 3's table): lightning indexer + top-k, the indexer kernel alone
// against the measured copy bandwidth, sparse MLA decode and prefill, indexer prefill. All inputs are generated on
// the device by the addon's bench* bindings (kernels/binding/cuda_attention.cc), timed with CUDA events, medians.

import type { CudaInfo, NativeAddon } from '../sidecar/src/native/index';

export interface GpuBenchContext {
  native: NativeAddon;
  info: CudaInfo;
  /** bench/gpu_reference.py's JSON (null when PyTorch could not run). */
  reference: Record<string, unknown> | null;
  quick: boolean;
}

export interface GpuRow {
  figure: string;
  shape: string;
  ours: string;
  reference: string;
  target: string;
  met: string;
}

function need<T>(f: T | undefined, name: string): T {
  if (f === undefined) throw new Error(`this addon build has no cuda.${name}`);
  return f;
}

const fmt = (x: number, digits = 1): string => x.toFixed(digits);

function refNumber(ctx: GpuBenchContext, ...keys: string[]): number | null {
  let v: unknown = ctx.reference;
  for (const k of keys) {
    if (v === null || typeof v !== 'object') return null;
    v = (v as Record<string, unknown>)[k];
  }
  return typeof v === 'number' ? v : null;
}

function progress(msg: string): void {
  process.stderr.write(`bench:gpu: ${msg}\n`);
}

/** Runs f with the given environment variables set (the kernels read their variant switches at call time). */
function withEnv<T>(env: Record<string, string>, f: () => T): T {
  const saved = Object.keys(env).map((k) => [k, process.env[k]] as const);
  Object.assign(process.env, env);
  try {
    return f();
  } finally {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

type IndexerDecodeOpts = Parameters<NonNullable<NativeAddon['cuda']['benchIndexerDecode']>>[0];

export function attentionRows(ctx: GpuBenchContext): GpuRow[] {
  const cuda = ctx.native.cuda;
  const rows: GpuRow[] = [];
  const benchCopy = need(cuda.benchCopy?.bind(cuda), 'benchCopy');
  const benchIndexerDecode = need(cuda.benchIndexerDecode?.bind(cuda), 'benchIndexerDecode');
  const benchSparseMla = need(cuda.benchSparseMla?.bind(cuda), 'benchSparseMla');
  const benchIndexerPrefill = need(cuda.benchIndexerPrefill?.bind(cuda), 'benchIndexerPrefill');

  progress('device copy bandwidth');
  const copy = benchCopy(1024);
  const refCopy = refNumber(ctx, 'copyGbps');

  progress('indexer + top-k decode, 32K and 128K (both indexer kernel variants)');
  let indexer128: { indexerGraphUs: number; keyBytes: number; variant: string } | null = null;
  for (const S of [32768, 131072]) {
    // The indexer kernel has four variants (GLANCE_INDEXER_PREFETCH, indexer.cu: 0: two blocks per SM; 1: prefetching
    // the next key tile, one block per SM; 2: three blocks per SM under a register cap; 5: variant 0 with the e4m3
    // mma.sync per fragment instead of f16 fragments converted once per tile) and top-k two (one kernel with per-row
    // barriers, or one kernel per pass); the combinations are measured and the fastest is reported.
    // coarse: the single-kernel top-k with 4096-column chunks (GLANCE_TOPK_PER_THREAD=16) instead of 1024
    const variants: Array<{ prefetch: number; topkSingle: 0 | 1; coarse: boolean }> = [
      { prefetch: 0, topkSingle: 1, coarse: false },
      { prefetch: 2, topkSingle: 1, coarse: false },
      { prefetch: 1, topkSingle: 1, coarse: false },
      { prefetch: 5, topkSingle: 1, coarse: false },
      { prefetch: 0, topkSingle: 1, coarse: true },
      { prefetch: 0, topkSingle: 0, coarse: false },
    ];
    const runs = variants.map(({ coarse, ...v }) => {
      const env: Record<string, string> = coarse ? { GLANCE_TOPK_PER_THREAD: '16' } : {};
      // prefetch 5 is newer than the addon's typed contract (sidecar/src/native/contract.ts says 0 | 1 | 2)
      const opts = { S, Hi: 64, D: 128, k: 2048, T: 1, iters: 100, ...v } as unknown as IndexerDecodeOpts;
      const r = withEnv(env, () => benchIndexerDecode(opts));
      return { ...v, coarse, r };
    });
    progress(`  ${S / 1024}K: ` + runs.map((x) => `prefetch ${x.prefetch} single-kernel top-k ${x.topkSingle}${x.coarse ? ' (4096-column chunks)' : ''}` +
      `: ${fmt(x.r.graphUs)} µs (scores ${fmt(x.r.indexerGraphUs)}, top-k ${fmt(x.r.topkGraphUs)})`).join('; '));
    const best = runs.reduce((a, b) => (b.r.graphUs < a.r.graphUs ? b : a));
    const bestScores = runs.reduce((a, b) => (b.r.indexerGraphUs < a.r.indexerGraphUs ? b : a));
    const r = best.r;
    if (S === 131072)
      indexer128 = {
        indexerGraphUs: bestScores.r.indexerGraphUs,
        keyBytes: r.keyBytes,
        variant: runs.filter((x) => x.topkSingle === 1 && !x.coarse).map((x) => `variant ${x.prefetch}: ${fmt(x.r.indexerGraphUs)} µs`).join(', '),
      };
    const ref = refNumber(ctx, 'indexerTopkDecodeUs', String(S));
    rows.push({
      figure: 'indexer + top-k, decode, per layer',
      shape: `64 heads × 128, FP8 keys, top-k 2048, context ${S / 1024}K`,
      ours: `${fmt(r.graphUs)} µs (one graph; scores alone ${fmt(r.indexerGraphUs)}, stand-alone top-k ${fmt(r.topkGraphUs)}; ` +
        `${fmt(r.streamUs)} µs launched one by one; indexer variant ${best.prefetch}, single-kernel top-k ${best.topkSingle}` +
        `${best.coarse ? ', 4096-column chunks' : ''})`,
      reference: ref === null ? 'n/a' : `PyTorch ${fmt(ref)} µs`,
      target: S === 131072 ? '≤ 25 µs' : '—',
      met: S === 131072 ? (r.graphUs <= 25 ? 'yes' : 'no') : '—',
    });
  }
  if (indexer128) {
    const gbps = indexer128.keyBytes / (indexer128.indexerGraphUs * 1e-6) / 1e9;
    const frac = gbps / copy.gbps;
    rows.push({
      figure: 'indexer logits kernel alone',
      shape: '128K keys × 132 B, 64 heads',
      ours: `${fmt(indexer128.indexerGraphUs)} µs = ${fmt(gbps, 0)} GB/s of keys (${fmt(100 * frac, 0)}% of copy; ${indexer128.variant})`,
      reference: `device copy ${fmt(copy.gbps, 0)} GB/s (read + write)${refCopy === null ? '' : `; PyTorch copy ${fmt(refCopy, 0)} GB/s`}`,
      target: '≥ 60% of copy',
      met: frac >= 0.6 ? 'yes' : 'no',
    });
  }

  progress('sparse MLA decode');
  // Variants (sparse_mla.cu): heads per block (GLANCE_MLA_DECODE_HEADS 16 / 32 / 64: more heads per gathered row),
  // split partials in fp32 or bf16 (GLANCE_MLA_PARTIAL_BF16), and the split count (GLANCE_MLA_SPLIT_BLOCKS_PER_SM);
  // the fastest is reported.
  const decVariants: Array<Record<string, string>> = [];
  for (const heads of ['16', '32', '64'])
    for (const bf16 of ['0', '1']) decVariants.push({ GLANCE_MLA_DECODE_HEADS: heads, GLANCE_MLA_PARTIAL_BF16: bf16 });
  decVariants.push({ GLANCE_MLA_DECODE_HEADS: '16', GLANCE_MLA_SPLIT_BLOCKS_PER_SM: '1' });
  decVariants.push({ GLANCE_MLA_DECODE_HEADS: '32', GLANCE_MLA_SPLIT_BLOCKS_PER_SM: '2', GLANCE_MLA_PARTIAL_BF16: '1' });
  const label = (e: Record<string, string>): string => Object.entries(e).map(([k, v]) => `${k.replace('GLANCE_MLA_', '')}=${v}`).join(' ');
  const decRuns = decVariants.map((env) => {
    const r = withEnv(env, () => benchSparseMla({ S: 131072, T: 1, H: 128, kvLora: 512, rope: 64, k: 2048, iters: 100 }));
    progress(`  sparse MLA decode, ${label(env)}: ${fmt(r.graphUs)} µs (graph), ${fmt(r.streamUs)} µs launched`);
    return { env, r };
  });
  // the combine folded into the last split (one block merges 16 heads × 32 splits) instead of the combine kernel
  const folded = withEnv({ GLANCE_MLA_FOLD: '1' }, () => benchSparseMla({ S: 131072, T: 1, H: 128, kvLora: 512, rope: 64, k: 2048, iters: 100 }));
  progress(`  sparse MLA decode, combine folded into the last split: ${fmt(folded.graphUs)} µs (graph)`);
  const decBest = decRuns.reduce((a, b) => (b.r.graphUs < a.r.graphUs ? b : a));
  const dec = decBest.r;
  const refDec = refNumber(ctx, 'sparseMlaDecodeUs');
  rows.push({
    figure: 'sparse MLA decode',
    shape: '128 heads, 512 + 64 latent, top-k 2048, bf16 KV',
    ours: `${fmt(dec.graphUs)} µs (graph; ${fmt(dec.streamUs)} µs launched; ${fmt(dec.flops / (dec.graphUs * 1e-6) / 1e12)} TFLOP/s; ${label(decBest.env)})`,
    reference: refDec === null ? 'n/a' : `PyTorch gather + attention ${fmt(refDec)} µs`,
    target: '≤ 20 µs',
    met: dec.graphUs <= 20 ? 'yes' : 'no',
  });

  progress('sparse MLA prefill');
  const T = ctx.quick ? 1024 : 8192;
  // Two variants of the prefill kernel (16 or 8 warps per 64-head block); the faster is reported.
  const preRuns = ['16', '8'].map((warps) => {
    process.env.GLANCE_MLA_WIDE_WARPS = warps;
    const r = benchSparseMla({ S: 131072, T, H: 128, kvLora: 512, rope: 64, k: 2048, iters: 5, graph: false });
    progress(`  sparse MLA prefill, ${warps} warps: ${fmt(r.flops / (r.streamUs * 1e-6) / 1e12, 0)} TFLOP/s`);
    return { warps, r };
  });
  delete process.env.GLANCE_MLA_WIDE_WARPS;
  const preBest = preRuns.reduce((a, b) => (b.r.streamUs < a.r.streamUs ? b : a));
  const pre = preBest.r;
  const tflops = pre.flops / (pre.streamUs * 1e-6) / 1e12;
  const refPre = refNumber(ctx, 'sparseMlaPrefillTflops');
  rows.push({
    figure: 'sparse MLA prefill',
    shape: `${T} queries × 128 heads, 512 + 64, top-k 2048, 128K bf16 cache`,
    ours: `${fmt(tflops, 0)} TFLOP/s (${fmt(pre.streamUs / 1000, 2)} ms; ${preBest.warps} warps per block)`,
    reference: `FlashMLA 640 TFLOP/s (published, H800)${refPre === null ? '' : `; PyTorch ${fmt(refPre, 0)} TFLOP/s`}`,
    target: '≥ 250 TFLOP/s',
    met: tflops >= 250 ? 'yes' : 'no',
  });

  progress('indexer prefill (64K, 128K)');
  if (!ctx.quick) {
    // query chunks smaller than the default (~1 GiB of logits: 4096 rows at 64K) keep the logits of a chunk in L2
    // for the top-k passes, at the price of more launches
    for (const chunkRows of [256, 1024]) {
      const r = benchIndexerPrefill({ T: 65536, Hi: 64, D: 128, k: 2048, iters: 2, chunkRows });
      progress(`  indexer prefill 64K, ${chunkRows}-query chunks: ${fmt(r.ms)} ms (scores alone ${fmt(r.scoresMs)} ms)`);
    }
  }
  for (const Tp of ctx.quick ? [16384] : [65536, 131072]) {
    const r = benchIndexerPrefill({ T: Tp, Hi: 64, D: 128, k: 2048, iters: 2 });
    rows.push({
      figure: 'indexer prefill (scores + top-k)',
      shape: `64 × 128 FP8, ${Tp / 1024}K tokens, causal`,
      ours: `${fmt(r.ms)} ms (${fmt(r.flops / (r.ms * 1e-3) / 1e12, 0)} TFLOP/s of causal logits; scores alone ${fmt(r.scoresMs)} ms)`,
      reference: 'DeepGEMM + torch.topk ≈ 115 ms at 64K (published, H200)',
      target: 'faster than that',
      met: Tp === 65536 ? (r.ms < 115 ? 'yes' : 'no') : '—',
    });
  }
  return rows;
}
