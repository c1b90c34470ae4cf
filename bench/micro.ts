// What the CPU benchmarks share: option parsing, the median, and the sweep that evicts the caches before a "cold"
// measurement.

import type { NativeAddon } from '../sidecar/src/native/contract';

/** --name's value as a positive integer, or an error naming the option. */
export function positiveInt(name: string, value: string | undefined): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${value}`);
  return n;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A function that reads `mib` MiB through the addon (rmsNorm into a small sink), so that the data a benchmark
 *  measures afterwards comes from memory, as a decode step finds it after the weights streamed past. */
export function cacheSweep(native: NativeAddon, mib: number): () => void {
  const chunk = 1 << 20;
  const sweep = new Float32Array((mib << 20) / 4).fill(1);
  const ones = new Float32Array(chunk).fill(1);
  const sink = new Float32Array(chunk);
  return () => {
    for (let o = 0; o < sweep.length; o += chunk) native.rmsNorm(sink, sweep.subarray(o, o + chunk), 1, chunk, ones, 1e-6);
  };
}
