// Helpers shared by the golden tests and the benchmarks.
import * as path from 'node:path';

/** test/fixtures of the source tree (tests run from dist/test/…, fixtures stay in the source tree). */
export function fixturesDir(): string {
  return path.resolve(__dirname, '..', '..', '..', 'test', 'fixtures');
}

/** ‖a − b‖ / ‖b‖ in float64; NaN anywhere gives Infinity so it can never pass. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    if (Number.isNaN(d)) return Infinity;
    num += d * d;
    den += b[i] * b[i];
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/** float32 little-endian values from base64 (the fixtures' encoding), copied into an aligned buffer. */
export function decodeF32(b64: string): Float32Array {
  const buf = Buffer.from(b64, 'base64');
  const copy = new Uint8Array(buf.byteLength);
  copy.set(buf);
  return new Float32Array(copy.buffer);
}

/** Index of the largest value, the lowest on ties. */
export function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}
