// One decode step of the embedded model, op by op (no graph), for a kernel-time breakdown under Nsight Compute:
//   ncu --metrics gpu__time_duration.sum --csv node dist/bench/gpu-decode-profile.js [context]
// The first steps warm up; the NVTX-free way to find the measured step: it is the last `steps` launches.
import * as path from 'node:path';

import { loadModelOnDevice } from '../sidecar/src/engine/device';
import type { GpuModel } from '../sidecar/src/engine/gpu/gpu-model';

async function main(): Promise<void> {
  const context = Number(process.argv[2] ?? 1024);
  const dir = path.resolve(__dirname, '..', '..', 'models', 'glance-tiny');
  const r = await loadModelOnDevice(dir, { device: 'cuda', attention: 'sparse', indexerPrecision: 'fp8' });
  const model = r.model as GpuModel;
  const seq = model.createSequence(context + 8);
  const ids = Int32Array.from({ length: context }, (_, i) => 1 + ((i * 7919) % (model.config.vocabSize - 1)));
  seq.forward(ids, false);
  seq.gpu.setUseGraph(false);
  let tok = 5;
  for (let i = 0; i < 2; i++) tok = seq.gpu.stepSample(tok, 0, 0, false).token;
  process.stderr.write(`profiled step at context ${seq.length}\n`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
