// GPU benchmark: one table, every figure of ours beside a reference measured in the same run on the same GPU
// (PyTorch, bench/gpu_reference.py) or, where the issue names one, a published figure.
//
//   npm run bench:gpu [-- --quick] [-- --only attention|model]
//
// Rows come from row providers: bench/gpu-attention.ts (indexer, top-k, sparse MLA) and, when it exists,
// bench/gpu-model.ts (end-to-end decode and prefill; it exports `modelRows` with the same signature).
// Without a usable CUDA device it prints why and exits 0.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { loadNative } from '../sidecar/src/native/index';
import { attentionRows, type GpuBenchContext, type GpuRow } from './gpu-attention';

const projectRoot = path.resolve(__dirname, '..', '..');

function runReference(quick: boolean): { data: Record<string, unknown> | null; note: string } {
  const script = path.join(projectRoot, 'bench', 'gpu_reference.py');
  process.stderr.write('bench:gpu: PyTorch references (bench/gpu_reference.py)...\n');
  const r = spawnSync('python3', [script, ...(quick ? ['--quick'] : [])], { encoding: 'utf8', timeout: 600_000 });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : (r.stderr || '').trim().split('\n').slice(-3).join(' | ');
    return { data: null, note: `PyTorch reference unavailable: ${why}` };
  }
  const lines = r.stdout.trim().split('\n');
  try {
    return { data: JSON.parse(lines[lines.length - 1]) as Record<string, unknown>, note: '' };
  } catch {
    return { data: null, note: `PyTorch reference printed no JSON: ${lines.slice(-2).join(' | ')}` };
  }
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const onlyAt = process.argv.indexOf('--only');
  const only = onlyAt >= 0 ? process.argv[onlyAt + 1] : undefined;
  if (only !== undefined && only !== 'attention' && only !== 'model') {
    console.error(`bench:gpu: --only takes attention or model, not ${String(only)}`);
    process.exit(2);
  }
  const native = loadNative();
  const info = native.cudaInfo();
  if (!info.available) {
    console.log(`bench:gpu: no usable CUDA device (${info.reason}); nothing to measure.`);
    return;
  }
  // the model rows run their own HF reference; the PyTorch attention references are only needed for the attention rows
  const ref = only === 'model' ? { data: null, note: '' } : runReference(quick);
  if (ref.note) console.log(ref.note);
  const ctx: GpuBenchContext = { native, info, reference: ref.data, quick };
  const providers: Array<(c: GpuBenchContext) => GpuRow[] | Promise<GpuRow[]>> = only === 'model' ? [] : [attentionRows];
  const modelFile = path.join(__dirname, 'gpu-model.js');
  if (only !== 'attention' && fs.existsSync(modelFile)) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(modelFile) as { modelRows?: (c: GpuBenchContext) => GpuRow[] | Promise<GpuRow[]> };
    if (mod.modelRows) providers.push(mod.modelRows);
  }
  const rows: GpuRow[] = [];
  for (const p of providers) rows.push(...(await p(ctx)));

  const date = new Date().toISOString().slice(0, 10);
  console.log(`\nGPU benchmark, ${date}: ${info.name} (compute ${info.computeCapability}, ${info.multiprocessors} SMs), ` +
    `CUDA runtime ${info.runtimeVersion}, driver ${info.driverVersion}` +
    (ref.data ? `, PyTorch ${String(ref.data.torch)}` : ''));
  console.log('\n| figure | shape | ours | reference (same run unless marked) | target on H100 | met |');
  console.log('|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.figure} | ${r.shape} | ${r.ours} | ${r.reference} | ${r.target} | ${r.met} |`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack ?? e.message : String(e));
  process.exit(1);
});
