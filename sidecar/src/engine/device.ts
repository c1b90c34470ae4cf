// Where a model runs: one function the CLI and the server call.
//
//   loadModelOnDevice(dir, { device: 'auto' | 'cuda' | 'cpu', gpuMemory?, attention, indexerPrecision, onProgress })
//     → { model, device: 'CUDA NVIDIA H100 … | CPU 16 threads (avx2)', fallback?: why the GPU was not used }
//
// auto: CUDA when the addon was built with CUDA and a device is usable, else the CPU (the reason is returned in
// `fallback` so callers can print it). cuda: a GlanceError('device_unavailable') when there is no usable device,
// unless cpuFallback is set, in which case the CPU runs and `fallback` says why. Errors while uploading to the GPU
// (budget too small, CUDA failures) are GlanceErrors naming the cause; with cpuFallback they fall back too.

import type { NativeAddon } from '../native/contract';
import { cpuKernels, loadNative } from '../native/index';
import { readConfig } from './config';
import { GlanceError } from './errors';
import { loadGpuModel } from './gpu/gpu-model';
import { loadModel, type AttentionMode, type IndexerPrecision, type KvCacheDtype, type Model } from './model';
import { openWeights } from './weights';

export type DeviceChoice = 'auto' | 'cuda' | 'cpu';

export interface DeviceLoadOptions {
  device: DeviceChoice;
  /** GPU memory budget for weights + KV/indexer caches + scratch: bytes, or a string like "20GiB", "512MiB", "0.8"
   *  (a fraction of the device's memory). Default: 90% of the free memory. */
  gpuMemory?: number | string;
  attention: AttentionMode;
  indexerPrecision?: IndexerPrecision;
  /** latent cache dtype (CPU: default kvCacheDtypeFor(config); GPU: bf16 or fp32, see engine/gpu/gpu-model.ts; fp8 is
   *  CPU-only: auto runs it on the CPU, cuda refuses it) and the GPU's prompt-GEMM precision */
  kvCache?: KvCacheDtype;
  gemm?: 'split' | 'bf16';
  attentionKernels?: 'tuned' | 'generic';
  /** with device 'cuda': run on the CPU (and say why in `fallback`) instead of failing when the GPU is unusable */
  cpuFallback?: boolean;
  onProgress?: (done: number, total: number, what: string) => void;
  native?: NativeAddon;
}

export interface DeviceModel {
  model: Model;
  /** what runs the model, for logs and `info` */
  device: string;
  kind: 'cuda' | 'cpu';
  /** set when the GPU was asked for (or auto) and the CPU runs instead: why */
  fallback?: string;
}

/** Parses --gpu-memory: "24GiB" / "24G" / "512MiB" / "1.5e10" bytes / "0.8" (fraction of the device's memory). */
export function parseGpuMemory(v: number | string, deviceBytes: number): number {
  const s = String(v).trim();
  const m = /^(\d+(?:\.\d+)?(?:e\d+)?)\s*(k|m|g|t)?(i?b)?$/i.exec(s);
  if (!m) throw new GlanceError('bad_input', `--gpu-memory must be a size like 24GiB, 512MiB, a byte count, or a fraction like 0.8 of the device; got ${JSON.stringify(s)}`);
  const n = Number(m[1]);
  const unit = (m[2] ?? '').toLowerCase();
  let bytes: number;
  if (unit === '' && n > 0 && n <= 1) bytes = n * deviceBytes;
  else bytes = n * ({ '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 } as Record<string, number>)[unit];
  if (!(bytes >= 64 * 1024 ** 2)) throw new GlanceError('bad_input', `--gpu-memory ${s} is below the 64 MiB minimum`);
  return Math.floor(bytes);
}

function cpuDescription(native: NativeAddon): string {
  const b = native.backends();
  return `CPU ${b.cpu.threads} threads (${cpuKernels(b.cpu)})`;
}

export async function loadModelOnDevice(dir: string, opts: DeviceLoadOptions): Promise<DeviceModel> {
  if (opts.device !== 'auto' && opts.device !== 'cuda' && opts.device !== 'cpu') {
    throw new GlanceError('bad_input', `device must be auto, cuda or cpu; got ${JSON.stringify(opts.device)}`);
  }
  let native: NativeAddon;
  try {
    native = opts.native ?? loadNative();
  } catch (e) {
    throw new GlanceError('native_unavailable', (e as Error).message, {}, { cause: e });
  }
  const indexerPrecision = opts.indexerPrecision ?? 'fp8';
  const onCpu = async (fallback?: string): Promise<DeviceModel> => {
    const model = await loadModel(dir, {
      attention: opts.attention, indexerPrecision, onProgress: opts.onProgress, native, ...(opts.kvCache ? { kvCache: opts.kvCache } : {}),
    });
    return { model, device: cpuDescription(native), kind: 'cpu', ...(fallback ? { fallback } : {}) };
  };
  if (opts.device === 'cpu') return onCpu();
  if (opts.device === 'auto' && opts.kvCache === 'fp8') return onCpu('--kv-cache fp8 is CPU-only');

  const info = typeof native.cudaInfo === 'function' ? native.cudaInfo() : null;
  const why = info === null ? 'this build of the native addon predates CUDA support' : !info.available ? info.reason : null;
  if (why !== null) {
    if (opts.device === 'auto') return onCpu(`no CUDA device: ${why}`);
    if (opts.cpuFallback) return onCpu(`--device cuda asked for, running on the CPU instead: ${why}`);
    throw new GlanceError('device_unavailable', `--device cuda: no usable CUDA device (${why}); use --device cpu (or auto) to run on the CPU`);
  }
  try {
    const config = readConfig(dir);
    const weights = openWeights(dir, config, native);
    const gpuMemoryBytes = opts.gpuMemory === undefined ? undefined : parseGpuMemory(opts.gpuMemory, info!.memoryBytes);
    const model = loadGpuModel(dir, config, weights, native, {
      attention: opts.attention,
      indexerPrecision,
      ...(gpuMemoryBytes !== undefined ? { gpuMemoryBytes } : {}),
      ...(opts.kvCache ? { kvCache: opts.kvCache } : {}),
      ...(opts.gemm ? { gemm: opts.gemm } : {}),
      ...(opts.attentionKernels ? { attentionKernels: opts.attentionKernels } : {}),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    });
    return { model, device: model.device, kind: 'cuda' };
  } catch (e) {
    const gpuProblem = e instanceof GlanceError && (e.code === 'device_error' || e.code === 'device_unavailable');
    if (gpuProblem && (opts.device === 'auto' || opts.cpuFallback)) return onCpu(`the GPU could not take the model: ${e.message}`);
    throw e;
  }
}
