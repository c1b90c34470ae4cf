// The Model / Sequence of model.ts, run on a CUDA GPU by the addon's whole-forward runner
// (kernels/cuda/model_runner.cu through kernels/binding/cuda_model.cc).
//
// The weights are the same WeightStore tensors the CPU engine uses (views into the mmapped checkpoint); the addon
// uploads them once, in their checkpoint dtype (FP8 stays e4m3 + 128×128 block scales). Each sequence preallocates its
// latent KV cache and indexer key cache for its whole capacity from the GPU-memory budget, so running out of memory
// is a clear error at createSequence, never a failure mid-generation. A single-token forward is one CUDA-graph launch.
//
// Numerics: activations are fp32 as on the CPU; decode GEMVs are fp32 math; prompt GEMMs run on tensor cores with
// split-bf16 operands (fp32-grade); the latent cache is bf16 by default (fp32 on request), so logits agree with the
// CPU engine to bf16 tolerance (test/gpu), not bit for bit.

import type { NativeAddon, NativeWeight } from '../../native/contract';
import { GlanceError } from '../errors';
import type { AttentionMode, BatchStep, IndexerPrecision, KvCacheDtype, Model, Sequence } from '../model';
import type { ModelConfig, WeightStore } from '../types';

/** The addon's `cuda.GpuModel` / GpuSequence objects (kernels/binding/cuda_model.cc). */
export interface NativeGpuSequence {
  readonly length: number;
  readonly capacity: number;
  readonly graphsCaptured: number;
  forward(ids: Int32Array, allLogits: boolean): Float32Array;
  stepSample(id: number, temperature: number, u: number, wantLogits: boolean): { token: number; logits?: Float32Array };
  truncate(n: number): void;
  copyPrefixFrom(src: NativeGpuSequence, n: number): void;
  setUseGraph(on: boolean): void;
  dispose(): void;
}
export interface NativeGpuModel {
  describe(): string;
  readonly weightBytes: number;
  readonly budgetBytes: number;
  readonly usedBytes: number;
  readonly bytesPerToken: number;
  createSequence(capacity: number): NativeGpuSequence;
  dispose(): void;
}
export interface CudaModelBindings {
  GpuModel?: new (spec: object, onProgress?: (done: number, total: number) => void) => NativeGpuModel;
}

export interface GpuModelOptions {
  attention: AttentionMode;
  indexerPrecision: IndexerPrecision;
  /** device-memory budget in bytes for weights + caches + scratch; undefined: 90% of the free memory */
  gpuMemoryBytes?: number;
  /** latent KV cache rows: bf16 (default, half the bytes) or fp32 (the CPU engine's numbers); fp8 is refused (CPU only) */
  kvCache?: KvCacheDtype;
  /** prompt GEMMs on tensor cores: split (default: bf16 hi + lo parts, fp32-grade) or bf16 (faster, ≈4e-3 per product) */
  gemm?: 'split' | 'bf16';
  /** attention kernels: tuned (default: the multi-block top-k and tensor-core sparse MLA of kernels/cuda/{topk,sparse_mla}.cu
   *  where the shape allows) or generic (model_ops.cu: any shape, simple) */
  attentionKernels?: 'tuned' | 'generic';
  onProgress?: (done: number, total: number, what: string) => void;
}

/** A Model on the GPU: the Model interface plus what only a device has. */
export interface GpuModel extends Model {
  /** "CUDA NVIDIA H100 80GB HBM3 (compute 9.0, 132 SMs), weights 29 MiB, budget 70 GiB" */
  readonly device: string;
  readonly native: NativeAddon;
  /** the addon object (tests: graph on/off, device-side sampling) */
  readonly gpu: NativeGpuModel;
  createSequence(maxTokens?: number): GpuSequence;
  /** Frees the device memory now (also freed when collected). */
  dispose(): void;
}

export interface GpuSequence extends Sequence {
  readonly gpu: NativeGpuSequence;
  readonly capacity: number;
}

/** Turns an addon error into a GlanceError with the code its message starts with ("context_overflow: …"). */
function rethrow(e: unknown): never {
  if (e instanceof GlanceError) throw e;
  const msg = e instanceof Error ? e.message : String(e);
  if (msg.startsWith('context_overflow: ')) throw new GlanceError('context_overflow', msg.slice('context_overflow: '.length), {}, { cause: e });
  if (/outside the vocabulary|no input ids|cannot truncate/.test(msg)) throw new GlanceError('bad_input', msg, {}, { cause: e });
  throw new GlanceError('device_error', `GPU: ${msg}`, {}, { cause: e });
}

const ROUTER_METHOD = { greedy: 0, group_limited_greedy: 1, noaux_tc: 2 } as const;

function mlpSpec(w: WeightStore, prefix: string): { gate: NativeWeight; up: NativeWeight; down: NativeWeight } {
  return {
    gate: w.matrix(`${prefix}.gate_proj.weight`),
    up: w.matrix(`${prefix}.up_proj.weight`),
    down: w.matrix(`${prefix}.down_proj.weight`),
  };
}

/** The spec object cuda_model.cc parses (field names there). */
function buildSpec(config: ModelConfig, w: WeightStore, opts: GpuModelOptions): object {
  const c = config;
  const sparse = c.indexer !== null && opts.attention === 'sparse';
  const layers = [];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`;
    const a = `${p}.self_attn`;
    const hasQLora = c.qLoraRank !== null;
    const isMoe = c.mlpLayerTypes[l] === 'sparse';
    const biasName = `${p}.mlp.gate.e_score_correction_bias`;
    layers.push({
      inputNorm: w.vector(`${p}.input_layernorm.weight`),
      postAttentionNorm: w.vector(`${p}.post_attention_layernorm.weight`),
      hasQLora,
      ...(hasQLora
        ? { qA: w.matrix(`${a}.q_a_proj.weight`), qB: w.matrix(`${a}.q_b_proj.weight`), qANorm: w.vector(`${a}.q_a_layernorm.weight`) }
        : { qProj: w.matrix(`${a}.q_proj.weight`) }),
      kvA: w.matrix(`${a}.kv_a_proj_with_mqa.weight`),
      kvANorm: w.vector(`${a}.kv_a_layernorm.weight`),
      kvB: w.matrix(`${a}.kv_b_proj.weight`),
      oProj: w.matrix(`${a}.o_proj.weight`),
      hasIndexer: c.indexer !== null,
      ...(c.indexer
        ? {
            ixWqB: w.matrix(`${a}.indexer.wq_b.weight`),
            ixWk: w.matrix(`${a}.indexer.wk.weight`),
            ixWeightsProj: w.matrix(`${a}.indexer.weights_proj.weight`),
            ixKNormWeight: w.vector(`${a}.indexer.k_norm.weight`),
            ixKNormBias: w.vector(`${a}.indexer.k_norm.bias`),
          }
        : {}),
      isMoe,
      ...(isMoe
        ? {
            router: w.matrix(`${p}.mlp.gate.weight`),
            routerBias: c.topkMethod === 'noaux_tc' && w.has(biasName) ? w.vector(biasName) : null,
            experts: Array.from({ length: c.nRoutedExperts }, (_, e) => mlpSpec(w, `${p}.mlp.experts.${e}`)),
            hasShared: c.nSharedExperts > 0,
            ...(c.nSharedExperts > 0 ? { shared: mlpSpec(w, `${p}.mlp.shared_experts`) } : {}),
          }
        : { dense: mlpSpec(w, `${p}.mlp`) }),
    });
  }
  const embed = w.matrix('model.embed_tokens.weight');
  return {
    vocab: c.vocabSize,
    hidden: c.hiddenSize,
    heads: c.numHeads,
    qLoraRank: c.qLoraRank ?? 0,
    kvLoraRank: c.kvLoraRank,
    nope: c.qkNopeHeadDim,
    rope: c.qkRopeHeadDim,
    vHeadDim: c.vHeadDim,
    indexHeads: c.indexer?.nHeads ?? 0,
    indexDim: c.indexer?.headDim ?? 0,
    indexTopk: c.indexer?.topk ?? 0,
    experts: c.nRoutedExperts,
    expertsPerTok: c.numExpertsPerTok,
    nGroup: c.nGroup,
    topkGroup: c.topkGroup,
    scoring: c.scoringFunc === 'softmax' ? 1 : 0,
    method: ROUTER_METHOD[c.topkMethod],
    normTopk: c.normTopkProb,
    routedScale: c.routedScalingFactor,
    rmsEps: c.rmsNormEps,
    softmaxScale: c.softmaxScale,
    ropeAttentionFactor: c.rope.attentionFactor,
    invFreq: c.rope.invFreq,
    sparse,
    indexerFp8: opts.indexerPrecision === 'fp8',
    kvCacheFp32: opts.kvCache === 'fp32',
    gemmPrecision: opts.gemm === 'bf16' ? 0 : 1,
    tunedAttention: opts.attentionKernels !== 'generic',
    maxPositions: c.maxPositionEmbeddings,
    budgetBytes: opts.gpuMemoryBytes ?? 0,
    embed,
    lmHead: w.has('lm_head.weight') ? w.matrix('lm_head.weight') : embed,
    finalNorm: w.vector('model.norm.weight'),
    layers,
  };
}

/** Uploads the model to the GPU. The caller has checked that the addon has CUDA and a device (device.ts). */
export function loadGpuModel(
  dir: string, config: ModelConfig, weights: WeightStore, native: NativeAddon, opts: GpuModelOptions,
): GpuModel {
  if (opts.kvCache === 'fp8') {
    throw new GlanceError('bad_input', 'the CUDA backend keeps bf16 or fp32 latent rows; --kv-cache fp8 is CPU-only (use --device cpu)');
  }
  const bindings = native.cuda as unknown as CudaModelBindings;
  if (typeof bindings.GpuModel !== 'function') {
    throw new GlanceError('device_unavailable', 'this build of the native addon has no GPU forward pass (built without nvcc); rebuild with CUDA or use --device cpu');
  }
  const progress = opts.onProgress ?? (() => {});
  const spec = buildSpec(config, weights, opts);
  let gpu: NativeGpuModel;
  try {
    gpu = new bindings.GpuModel(spec, (done, total) => progress(done, total, 'layers → GPU'));
  } catch (e) {
    rethrow(e);
  }
  const attention: AttentionMode = config.indexer ? opts.attention : 'dense';
  const model: GpuModel = {
    config,
    weights,
    dir,
    attention,
    indexerPrecision: opts.indexerPrecision,
    kvCacheDtype: opts.kvCache === 'fp32' ? 'fp32' : 'bf16',
    native,
    gpu,
    device: gpu.describe(),
    createSequence: (maxTokens?: number) => new DeviceSequence(gpu, config, maxTokens ?? config.maxPositionEmbeddings),
    decodeBatch: (steps: readonly BatchStep[]) => decodeBatch(steps),
    dispose: () => gpu.dispose(),
  };
  return model;
}

/** One token per sequence. The GPU runs them one after another (each a single graph launch); weights are not yet
 *  shared across the batch on the device. */
function decodeBatch(steps: readonly BatchStep[]): Float32Array[] {
  for (const s of steps) {
    if (!(s.sequence instanceof DeviceSequence)) throw new GlanceError('bad_input', 'decodeBatch: a sequence of another model (CPU?) was passed to the GPU model');
  }
  return steps.map((s) => s.sequence.forward(Int32Array.of(s.id), false));
}

class DeviceSequence implements GpuSequence {
  readonly gpu: NativeGpuSequence;
  private readonly bytesPerToken: number;

  constructor(model: NativeGpuModel, private readonly config: ModelConfig, maxTokens: number) {
    if (!(Number.isInteger(maxTokens) && maxTokens >= 1)) throw new GlanceError('bad_input', `createSequence: maxTokens must be an integer ≥ 1, got ${maxTokens}`);
    try {
      this.gpu = model.createSequence(maxTokens);
    } catch (e) {
      rethrow(e);
    }
    this.bytesPerToken = model.bytesPerToken;
  }

  get length(): number {
    return this.gpu.length;
  }

  get capacity(): number {
    return this.gpu.capacity;
  }

  get cacheBytes(): number {
    return this.gpu.capacity * this.bytesPerToken;
  }

  forward(ids: Int32Array, allLogits: boolean): Float32Array {
    if (ids.length === 0) throw new GlanceError('bad_input', 'no input ids to run');
    const V = this.config.vocabSize;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!(id >= 0 && id < V)) throw new GlanceError('bad_input', `token id ${id} at position ${i} is outside the vocabulary (0..${V - 1})`);
    }
    try {
      return this.gpu.forward(ids, allLogits);
    } catch (e) {
      rethrow(e);
    }
  }

  truncate(length: number): void {
    if (!(Number.isInteger(length) && length >= 0 && length <= this.length)) {
      throw new GlanceError('bad_input', `cannot truncate a sequence of ${this.length} tokens to ${length}`);
    }
    this.gpu.truncate(length);
  }

  copyPrefixFrom(source: Sequence, length: number): void {
    if (!(source instanceof DeviceSequence)) throw new GlanceError('bad_input', 'copyPrefixFrom: the source is not a sequence of this GPU model');
    try {
      this.gpu.copyPrefixFrom(source.gpu, length);
    } catch (e) {
      rethrow(e);
    }
  }
}
