// Seeded random inputs for the kernel tests: one seed per process, printed in failure messages so that
// GLANCE_TEST_SEED=<seed> replays a failure (child runs get the parent's seed through the same variable).

export const SEED = process.env.GLANCE_TEST_SEED !== undefined ? Number(process.env.GLANCE_TEST_SEED) : (Date.now() ^ (process.pid << 8)) >>> 0;
export const seedNote = `(seed ${SEED}; replay with GLANCE_TEST_SEED=${SEED})`;
let rngState = SEED >>> 0;

/** mulberry32: uniform in [0, 1). */
export function rand(): number {
  rngState = (rngState + 0x6d2b79f5) >>> 0;
  let t = rngState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
export function randInt(n: number): number {
  return Math.floor(rand() * n);
}
export function randF32(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rand() * 2 - 1) * scale;
  return a;
}
/** NaN-filled output, so that an element a kernel forgets to write fails the comparison. */
export function poisoned(n: number): Float32Array {
  return new Float32Array(n).fill(NaN);
}
