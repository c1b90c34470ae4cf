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
