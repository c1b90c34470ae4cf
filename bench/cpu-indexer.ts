// CPU microbenchmark of the FP8 lightning indexer of a decode step (indexerScoresFp8, and indexerTopk = scores +
// top-k), at the bench model's shape (4 heads x 64, top-2048) over 32K keys, with this process's kernels beside the
// AVX2 kernels measured in a child process (GLANCE_SIMD=avx2) in the same run.
//
//   npm run bench:cpu-indexer [-- --keys 32768 --heads 4 --dim 64 --k 2048 --reps 8]
//
// "cold": 8 layers' key caches scored in turn after a 96 MiB sweep, as a decode step finds them (the weights stream
// evicted them); "warm": one layer's keys scored again right away.

import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';

import { loadNative } from '../sidecar/src/native/index';
import { cacheSweep, median, positiveInt } from './micro';

const LAYERS = 8;

interface Figures {
  label: string;
  topkCold: number;
  topkWarm: number;
  scoresCold: number;
  scoresWarm: number;
}

function measure(S: number, Hi: number, D: number, k: number, reps: number): Figures {
  const native = loadNative();
  let seed = 12345;
  const next = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) / 16777216;
  const e4m3 = () => (Math.floor(next() * 0x7e) | (next() < 0.5 ? 0x80 : 0)) & 0xff; // no NaN codes
  const q = Uint8Array.from({ length: Hi * D }, e4m3);
  const keys = Array.from({ length: LAYERS }, () => Uint8Array.from({ length: S * D }, e4m3));
  const weights = Float32Array.from({ length: Hi }, () => next());
  const scales = Float32Array.from({ length: S }, () => 2 ** (Math.floor(next() * 8) - 6));
  const idx = new Int32Array(k);
  const out = new Float32Array(S);
  const positions = Int32Array.of(S - 1);
  const evict = cacheSweep(native, 96);
  const time = (f: (keys: Uint8Array) => void): [number, number] => {
    const cold: number[] = [];
    const warm: number[] = [];
    for (let r = 0; r < reps; r++) {
      evict();
      let t = process.hrtime.bigint();
      for (const kc of keys) f(kc);
      cold.push(Number(process.hrtime.bigint() - t) / 1e3 / LAYERS);
      t = process.hrtime.bigint();
      for (let i = 0; i < LAYERS; i++) f(keys[0]);
      warm.push(Number(process.hrtime.bigint() - t) / 1e3 / LAYERS);
    }
    return [median(cold), median(warm)];
  };
  const [topkCold, topkWarm] = time((kc) => native.indexerTopk(idx, q, weights, kc, scales, 1, S, Hi, D, positions, k));
  const [scoresCold, scoresWarm] = time((kc) => native.indexerScoresFp8(out, q, weights, kc, scales, 1, S, Hi, D, positions));
  const b = native.backends().cpu;
  const label = `${b.amx ? 'AMX' : b.simd === 'scalar' ? 'scalar' : 'AVX2'} (${b.threads} threads)`;
  return { label, topkCold, topkWarm, scoresCold, scoresWarm };
}

function main(): void {
  const { values } = parseArgs({
    options: {
      keys: { type: 'string', default: '32768' },
      heads: { type: 'string', default: '4' },
      dim: { type: 'string', default: '64' },
      k: { type: 'string', default: '2048' },
      reps: { type: 'string', default: '8' },
      child: { type: 'boolean', default: false },
    },
  });
  const S = positiveInt('keys', values.keys), Hi = positiveInt('heads', values.heads), D = positiveInt('dim', values.dim);
  const k = positiveInt('k', values.k), reps = positiveInt('reps', values.reps);
  if (values.child) {
    process.stdout.write(JSON.stringify(measure(S, Hi, D, k, reps)));
    return;
  }
  const ours = measure(S, Hi, D, k, reps);
  const argv = [__filename, '--child', '--keys', String(S), '--heads', String(Hi), '--dim', String(D), '--k', String(k), '--reps', String(reps)];
  const r = spawnSync(process.execPath, argv, { env: { ...process.env, GLANCE_SIMD: 'avx2' }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`the GLANCE_SIMD=avx2 run failed: ${r.stderr}`);
  const ref = JSON.parse(r.stdout) as Figures;
  console.log(`FP8 indexer, one decode query: ${S} keys x ${D}, ${Hi} heads, top-${k}; µs per layer, median of ${reps}`);
  console.log('');
  console.log('| kernels | indexerTopk cold | indexerTopk warm | scores cold | scores warm |');
  console.log('|---|---|---|---|---|');
  for (const f of [ours, ref])
    console.log(`| ${f.label} | ${f.topkCold.toFixed(1)} | ${f.topkWarm.toFixed(1)} | ${f.scoresCold.toFixed(1)} | ${f.scoresWarm.toFixed(1)} |`);
  if (ours.label !== ref.label)
    console.log(`\n${ours.label} vs ${ref.label}: indexerTopk cold ${(ref.topkCold / ours.topkCold).toFixed(2)}x, scores warm ${(ref.scoresWarm / ours.scoresWarm).toFixed(2)}x faster`);
}

main();
