// CPU microbenchmark of the sparse MLA attention of one decode query (mlaAttention with a selection) at the bench
// model's shape (8 heads, kvLora 256 + rope 64, top-2048 of a 32K cache), beside the 1K dense case it is compared
// with in bench:cpu's 32K/1K ratio: how much of the 32K step's attention time is the gathered rows' journey to the
// core.
//
//   npm run bench:cpu-attention [-- --keys 32768 --k 2048 --reps 9 --threads N]
//
// "cold": 8 layers' caches attended in turn after a 160 MiB read-only sweep; "L3": the same 8 layers again right
// away (their rows were read one pass before, 10 MiB in all: out of L2, in the last-level cache); "warm": one
// layer's rows again at once. Selections are random positions in ascending order (as the top-k emits them) or one
// contiguous run; caches hold bf16 rows or FP8 rows (quantizeLatentFp8) of the same values, in ordinary typed
// arrays (4 KiB pages) or in the engine's cache memory (allocCacheBuffer: 2 MiB-aligned, huge pages advised).

import { parseArgs } from 'node:util';

import { latentFp8RowBytes } from '../sidecar/src/engine/model';
import { loadNative } from '../sidecar/src/native/index';
import { rand } from '../test/helpers/seeded-random';
import { cacheSweep, median, positiveInt } from './micro';

const LAYERS = 8;
const H = 8;
const L = 256;
const R = 64;
const D = L + R;

function main(): void {
  const { values } = parseArgs({
    options: {
      keys: { type: 'string', default: '32768' },
      k: { type: 'string', default: '2048' },
      reps: { type: 'string', default: '9' },
      threads: { type: 'string' },
    },
  });
  const S = positiveInt('keys', values.keys), k = positiveInt('k', values.k), reps = positiveInt('reps', values.reps);
  if (k > S) throw new Error(`--k (${k}) must not exceed --keys (${S})`);
  const native = loadNative();
  if (values.threads !== undefined) native.setThreads(positiveInt('threads', values.threads));
  const gauss = () => rand() + rand() + rand() + rand() - 2;

  // One block of random rows, repeated through each cache (the values do not matter, the bytes moved do).
  const BLOCK = 4096;
  const src = Float32Array.from({ length: BLOCK * D }, gauss);
  const srcBits = new Uint32Array(src.buffer);
  const rb = latentFp8RowBytes(L, R);
  const bf16: Uint16Array[] = [];
  const fp8: Uint8Array[] = [];
  const bf16Huge: Uint16Array[] = [];
  const fp8Huge: Uint8Array[] = [];
  for (let l = 0; l < LAYERS; l++) {
    const c = new Uint16Array(S * D);
    const c8 = new Uint8Array(S * rb);
    for (let r0 = 0; r0 < S; r0 += BLOCK) {
      const rows = Math.min(BLOCK, S - r0);
      for (let i = 0; i < rows * D; i++) c[r0 * D + i] = srcBits[i] >>> 16;
      native.quantizeLatentFp8(c8, r0, src, rows, L, R);
    }
    bf16.push(c);
    fp8.push(c8);
    const h = new Uint16Array(native.allocCacheBuffer(c.byteLength));
    const h8 = new Uint8Array(native.allocCacheBuffer(c8.byteLength));
    h.set(c);
    h8.set(c8);
    bf16Huge.push(h);
    fp8Huge.push(h8);
  }
  const randomSelection = () => {
    const picked = new Set<number>();
    while (picked.size < k) picked.add(Math.floor(rand() * S));
    return Int32Array.from([...picked].sort((a, b) => a - b));
  };
  const random = Array.from({ length: LAYERS }, randomSelection);
  const contiguous = Array.from({ length: LAYERS }, () => Int32Array.from({ length: k }, (_, i) => S - k + i));

  const q = Float32Array.from({ length: H * D }, gauss);
  const out = new Float32Array(H * L);
  const evict = cacheSweep(native, 160);

  type Cache = Uint16Array | Uint8Array;
  const time = (caches: Cache[], sel: (Int32Array | null)[], ctx: number): [number, number, number] => {
    const pos = Int32Array.of(ctx - 1);
    const pass = (l: number) => native.mlaAttention(out, q, caches[l], ctx, 1, H, L, R, 0.1, sel[l], sel[l] ? k : 0, pos);
    const cold: number[] = [], l3: number[] = [], warm: number[] = [];
    for (let r = 0; r < reps; r++) {
      evict();
      for (const list of [cold, l3]) {
        const t = process.hrtime.bigint();
        for (let l = 0; l < LAYERS; l++) pass(l);
        list.push(Number(process.hrtime.bigint() - t) / 1e3 / LAYERS);
      }
      const t = process.hrtime.bigint();
      for (let l = 0; l < LAYERS; l++) pass(0);
      warm.push(Number(process.hrtime.bigint() - t) / 1e3 / LAYERS);
    }
    return [median(cold), median(l3), median(warm)];
  };

  const dense = Array.from({ length: LAYERS }, () => null);
  const cases: [string, Cache[], (Int32Array | null)[], number][] = [
    [`bf16 cache, ${k} random rows of ${S}`, bf16, random, S],
    [`bf16 cache, ${k} contiguous rows of ${S}`, bf16, contiguous, S],
    [`FP8 cache, ${k} random rows of ${S}`, fp8, random, S],
    [`bf16 cache in huge pages, ${k} random rows of ${S}`, bf16Huge, random, S],
    [`FP8 cache in huge pages, ${k} random rows of ${S}`, fp8Huge, random, S],
    ['bf16 cache, 1K dense (the ratio\'s 1K step)', bf16, dense, 1024],
  ];
  const b = native.backends().cpu;
  console.log(`mlaAttention, one decode query: ${H} heads, kvLora ${L} + rope ${R}; µs per layer, median of ${reps}; ` +
    `${b.amx ? 'AMX' : b.simd}, ${b.threads} threads`);
  console.log('');
  console.log('| case | cold | L3 | warm |');
  console.log('|---|---|---|---|');
  for (const [label, caches, sel, ctx] of cases) {
    const [c, l3, w] = time(caches, sel, ctx);
    console.log(`| ${label} | ${c.toFixed(1)} | ${l3.toFixed(1)} | ${w.toFixed(1)} |`);
  }
}

main();
