// Our end-to-end decode alone (no reference), for comparing kernel variants between runs on the GPU host:
//   node dist/bench/gpu-decode.js [steps]       (GLANCE_PDL=0 turns programmatic dependent launch off)
// Prints ms/token of glance-tiny at 1K and 32K context, the same measurement as the model rows of bench:gpu.
import { decodeAt, gpuModel, tinyDir } from './gpu-model';

async function main(): Promise<void> {
  const steps = Number(process.argv[2] ?? 64);
  const model = await gpuModel(tinyDir, 'sparse');
  for (const c of [1024, 32000]) {
    const f = decodeAt(model, c, steps);
    console.log(`decode glance-tiny ctx ${c}: ${f.msPerToken.toFixed(3)} ms/token (PDL ${process.env.GLANCE_PDL === '0' ? 'off' : 'on'})`);
  }
  model.dispose();
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : String(e));
  process.exit(1);
});
