// One run of one attention op at its benchmark shape, on device-generated inputs, for a profiler to look at
// (bench/gpu-profile.sh runs Nsight Compute over each case and summarises the kernels with bench/ncu_summary.py):
//   node dist/bench/gpu-profile.js CASE      CASE: indexer-decode | sparse-mla-decode | sparse-mla-prefill |
//                                                  indexer-prefill | all
// The bench* bindings with {once: true} generate the inputs (fill kernels, not matched by the profiler's kernel
// filter) and run the op exactly once: no warm-up, no timing loop, no graphs. Kernel variants follow the same
// environment switches as the benchmark (GLANCE_INDEXER_PREFETCH, GLANCE_MLA_DECODE_HEADS, ...).

import { loadNative } from '../sidecar/src/native/index';

const cases: Record<string, { shape: string; run: (cuda: Record<string, unknown>) => void }> = {
  'indexer-decode': {
    shape: 'indexer scores + top-k 2048, 64 heads × 128 FP8, 128K keys, one query',
    // the binding sets (or clears) the indexer / top-k variant switches from its options: pass the environment's on
    run: (c) => call(c, 'benchIndexerDecode', {
      S: 131072, Hi: 64, D: 128, k: 2048, T: 1,
      ...(process.env.GLANCE_INDEXER_PREFETCH ? { prefetch: Number(process.env.GLANCE_INDEXER_PREFETCH) } : {}),
      ...(process.env.GLANCE_TOPK_SINGLE ? { topkSingle: Number(process.env.GLANCE_TOPK_SINGLE) } : {}),
    }),
  },
  'sparse-mla-decode': {
    shape: 'sparse MLA decode, 128 heads, 512 + 64, top-k 2048, 128K bf16 cache',
    run: (c) => call(c, 'benchSparseMla', { S: 131072, T: 1, H: 128, kvLora: 512, rope: 64, k: 2048 }),
  },
  'sparse-mla-prefill': {
    shape: 'sparse MLA prefill, 8192 queries × 128 heads, 512 + 64, top-k 2048, 128K bf16 cache',
    run: (c) => call(c, 'benchSparseMla', { S: 131072, T: 8192, H: 128, kvLora: 512, rope: 64, k: 2048, graph: false }),
  },
  'indexer-prefill': {
    shape: 'indexer prefill (scores + top-k), 64 × 128 FP8, 64K tokens, causal, 4096-query chunks',
    run: (c) => call(c, 'benchIndexerPrefill', { T: 65536, Hi: 64, D: 128, k: 2048 }),
  },
};

function call(cuda: Record<string, unknown>, name: string, opts: Record<string, unknown>): void {
  const f = cuda[name];
  if (typeof f !== 'function') throw new Error(`this addon build has no cuda.${name}`);
  // {once: true} is a profiling switch of the bench bindings (kernels/binding/cuda_attention.cc), not part of the
  // typed contract, hence the untyped call.
  const r = (f as (o: Record<string, unknown>) => { once?: boolean }).call(cuda, { ...opts, once: true });
  if (r.once !== true) throw new Error(`cuda.${name} ignored {once: true}: the addon predates the profiling switch`);
}

function main(): void {
  const which = process.argv[2];
  if (!which || (which !== 'all' && !(which in cases))) {
    console.error(`usage: node dist/bench/gpu-profile.js ${Object.keys(cases).join(' | ')} | all`);
    process.exit(2);
  }
  const native = loadNative();
  const info = native.cudaInfo();
  if (!info.available) {
    console.log(`gpu-profile: no usable CUDA device (${info.reason}); nothing to profile.`);
    return;
  }
  for (const name of which === 'all' ? Object.keys(cases) : [which]) {
    const t0 = Date.now();
    cases[name].run(native.cuda as unknown as Record<string, unknown>);
    console.log(`gpu-profile: ${name} (${cases[name].shape}) ran once in ${Date.now() - t0} ms`);
  }
}

main();
