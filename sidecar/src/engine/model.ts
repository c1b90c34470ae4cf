// The forward pass of DeepSeek-V3.2-style models (MLA + lightning indexer + MoE), composed from the native ops.
// It computes what HF transformers' DeepseekV32ForCausalLM computes, in fp32 with weights dequantised on the fly:
//   h = embed(ids)
//   per layer:  x = rms(h);  q = q_b(rms(q_a(x))) | q_proj(x);  [c_kv | k_pe] = kv_a(x), c_kv = rms(c_kv)
//               rope (interleaved) on q_pe, k_pe;  cache[pos] = [c_kv | k_pe]
//               indexer (v32, sparse mode): top-k cache positions per query
//               o = MQA attention of absorbed q over the selected latent rows;  h += o_proj(W_UV · o)
//               h += MLP(rms(h))  (dense SwiGLU, or routed experts + shared expert)
//   logits = lm_head(rms(h))
// Prompts are processed in chunks of PREFILL_CHUNK tokens so that activations and the indexer's
// [chunk, context] score matrix stay bounded at any context length; causality makes this exact.

import type { NativeAddon, NativeWeight } from '../native/contract';
import { loadNative } from '../native/index';
import { readConfig } from './config';
import { GlanceError } from './errors';
import type { ModelConfig, WeightStore } from './types';
import { openWeights } from './weights';

export type AttentionMode = 'sparse' | 'dense';
/** Precision of the lightning indexer's key cache and scores. fp32: exactly HF transformers' math.
 *  fp8: DeepSeek's deployment form (Hadamard-rotated, e4m3 with a power-of-two scale per row: D + 4 bytes per
 *  token per layer), 4× fewer bytes streamed per decode step; top-k sets can differ from fp32 at near-ties. */
export type IndexerPrecision = 'fp32' | 'fp8';

/** Element type of the MLA latent cache rows [c_kv | k_pe]. fp8: DeepSeek's deployment form for sparse MLA, c_kv as
 *  e4m3 with one power-of-two scale per tile of 128 (or 64) columns and k_pe as bf16 (the native quantizeLatentFp8
 *  layout, CPU only): 644 bytes per token at 512 + 64 instead of 1152 (bf16). */
export type KvCacheDtype = 'fp32' | 'bf16' | 'fp8';
export const KV_CACHE_DTYPES: readonly KvCacheDtype[] = ['fp32', 'bf16', 'fp8'];

/** The latent cache follows the checkpoint's compute precision (config.json `dtype`, `torch_dtype` in older files):
 *  bf16 rows for bfloat16 checkpoints, which is what HF transformers itself caches when it runs them (and DeepSeek's
 *  FP8 releases, which compute in bf16), half the bytes that a decode step gathers; fp32 rows otherwise, so that
 *  fp32 checkpoints keep exactly fp32 math. */
export function kvCacheDtypeFor(config: ModelConfig): KvCacheDtype {
  const dtype = config.raw.dtype ?? config.raw.torch_dtype;
  return dtype === 'bfloat16' ? 'bf16' : 'fp32';
}

/** Bytes of one FP8 latent row (quantizeLatentFp8's layout): kvLora e4m3 bytes, rope bf16, one exponent byte per tile
 *  of 128 columns (64 when kvLora % 128 ≠ 0), padded to an even count. */
export function latentFp8RowBytes(kvLora: number, rope: number): number {
  const n = kvLora + 2 * rope + kvLora / (kvLora % 128 === 0 ? 128 : 64);
  return n + (n & 1);
}

/** Bytes of one token's latent row [c_kv | k_pe] in a cache of this dtype. */
export function latentRowBytes(dtype: KvCacheDtype, kvLora: number, rope: number): number {
  if (dtype === 'fp8') return latentFp8RowBytes(kvLora, rope);
  return (kvLora + rope) * (dtype === 'bf16' ? 2 : 4);
}

export interface ModelOptions {
  /** sparse: DSA top-k selection where the model has an indexer; dense: attend to every cached position. */
  attention: AttentionMode;
  /** default fp8 */
  indexerPrecision?: IndexerPrecision;
  /** default: kvCacheDtypeFor(config) */
  kvCache?: KvCacheDtype;
  onProgress?: (done: number, total: number, what: string) => void;
  native?: NativeAddon;
}

export interface Sequence {
  /** tokens held in the KV cache */
  readonly length: number;
  /** Runs `ids` after the cached tokens. Returns logits [n, vocab] for every new position when allLogits,
   *  else only for the last one ([1, vocab]). */
  forward(ids: Int32Array, allLogits: boolean): Float32Array;
  /** Drops cached tokens from `length` on (prefix reuse). */
  truncate(length: number): void;
  /** Replaces this sequence's cache with the first `length` tokens of `source` (same model): a prefix computed
   *  once serves several sequences for the price of a copy. */
  copyPrefixFrom(source: Sequence, length: number): void;
  /** bytes held by this sequence's caches */
  readonly cacheBytes: number;
}

/** One decode step of several sequences at once: the weights stream once for all of them. */
export interface BatchStep {
  sequence: Sequence;
  id: number;
}

export interface Model {
  readonly config: ModelConfig;
  readonly weights: WeightStore;
  readonly dir: string;
  readonly attention: AttentionMode;
  readonly indexerPrecision: IndexerPrecision;
  /** The latent cache's element type (see kvCacheDtypeFor). */
  readonly kvCacheDtype: KvCacheDtype;
  readonly native: NativeAddon;
  createSequence(maxTokens?: number): Sequence;
  /** Runs one token on each of several sequences (decode batching); returns each one's logits [vocab]. */
  decodeBatch(steps: readonly BatchStep[]): Float32Array[];
}

const PREFILL_CHUNK = 256;
/** eps of the latent RMSNorms (q_a_layernorm, kv_a_layernorm): HF constructs them without config eps. */
const LATENT_NORM_EPS = 1e-6;
const INDEXER_NORM_EPS = 1e-6;

interface Mlp {
  gate: NativeWeight;
  up: NativeWeight;
  down: NativeWeight;
}

interface MoeLayer {
  router: NativeWeight;
  bias: Float32Array | null;
  experts: Mlp[];
  shared: Mlp | null;
}

interface IndexerLayer {
  wqB: NativeWeight;
  wk: NativeWeight;
  kNormWeight: Float32Array;
  kNormBias: Float32Array;
  weightsProj: NativeWeight;
}

interface Layer {
  inputNorm: Float32Array;
  postAttentionNorm: Float32Array;
  qProj: NativeWeight | null;
  qA: NativeWeight | null;
  qANorm: Float32Array | null;
  qB: NativeWeight | null;
  kvA: NativeWeight;
  kvANorm: Float32Array;
  kvB: NativeWeight;
  oProj: NativeWeight;
  indexer: IndexerLayer | null;
  dense: Mlp | null;
  moe: MoeLayer | null;
}

export async function loadModel(dir: string, opts: ModelOptions): Promise<Model> {
  const native = opts.native ?? nativeOrExplain();
  const config = readConfig(dir);
  const weights = openWeights(dir, config, native);
  const progress = opts.onProgress ?? (() => {});
  const layers: Layer[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    progress(l, config.numLayers, 'layers');
    layers.push(bindLayer(config, weights, l));
    // Let a caller's event loop breathe during long loads (progress reporting, cancellation).
    if (l % 8 === 7) await new Promise((r) => setImmediate(r));
  }
  progress(config.numLayers, config.numLayers, 'layers');
  const embed = weights.matrix('model.embed_tokens.weight');
  const lmHead = weights.has('lm_head.weight') ? weights.matrix('lm_head.weight') : embed;
  const finalNorm = weights.vector('model.norm.weight');
  const attention: AttentionMode = config.indexer ? opts.attention : 'dense';
  const indexerPrecision = opts.indexerPrecision ?? 'fp8';
  const kvCacheDtype = opts.kvCache ?? kvCacheDtypeFor(config);
  if (!KV_CACHE_DTYPES.includes(kvCacheDtype)) {
    throw new GlanceError('bad_input', `kvCache must be one of ${KV_CACHE_DTYPES.join(', ')}; got ${JSON.stringify(kvCacheDtype)}`);
  }
  if (kvCacheDtype === 'fp8' && config.kvLoraRank % 64 !== 0) {
    throw new GlanceError(
      'bad_input',
      `an fp8 latent cache needs kv_lora_rank to be a multiple of 64 (one scale per 64- or 128-column tile); this model has kv_lora_rank ${config.kvLoraRank}: use --kv-cache bf16 or fp32`,
    );
  }
  const forward = new ForwardPass(native, config, layers, embed, lmHead, finalNorm, attention, indexerPrecision, kvCacheDtype);
  return {
    config,
    weights,
    dir,
    attention,
    indexerPrecision,
    kvCacheDtype,
    native,
    createSequence: (maxTokens?: number) => new KvSequence(forward, maxTokens ?? config.maxPositionEmbeddings),
    decodeBatch: (steps: readonly BatchStep[]) => KvSequence.decodeBatch(forward, steps),
  };
}

/** The addon, or a GlanceError a user can act on (the CLI prints it without a stack). */
function nativeOrExplain(): NativeAddon {
  try {
    return loadNative();
  } catch (e) {
    throw new GlanceError('native_unavailable', (e as Error).message, {}, { cause: e });
  }
}

function bindMlp(w: WeightStore, prefix: string): Mlp {
  return {
    gate: w.matrix(`${prefix}.gate_proj.weight`),
    up: w.matrix(`${prefix}.up_proj.weight`),
    down: w.matrix(`${prefix}.down_proj.weight`),
  };
}

function bindLayer(config: ModelConfig, w: WeightStore, l: number): Layer {
  const p = `model.layers.${l}`;
  const a = `${p}.self_attn`;
  const hasQLora = config.qLoraRank !== null;
  let indexer: IndexerLayer | null = null;
  if (config.indexer) {
    indexer = {
      wqB: w.matrix(`${a}.indexer.wq_b.weight`),
      wk: w.matrix(`${a}.indexer.wk.weight`),
      kNormWeight: w.vector(`${a}.indexer.k_norm.weight`),
      kNormBias: w.vector(`${a}.indexer.k_norm.bias`),
      weightsProj: w.matrix(`${a}.indexer.weights_proj.weight`),
    };
  }
  let dense: Mlp | null = null;
  let moe: MoeLayer | null = null;
  if (config.mlpLayerTypes[l] === 'sparse') {
    const experts: Mlp[] = [];
    for (let e = 0; e < config.nRoutedExperts; e++) experts.push(bindMlp(w, `${p}.mlp.experts.${e}`));
    const biasName = `${p}.mlp.gate.e_score_correction_bias`;
    moe = {
      router: w.matrix(`${p}.mlp.gate.weight`),
      bias: config.topkMethod === 'noaux_tc' && w.has(biasName) ? w.vector(biasName) : null,
      experts,
      shared: config.nSharedExperts > 0 ? bindMlp(w, `${p}.mlp.shared_experts`) : null,
    };
  } else {
    dense = bindMlp(w, `${p}.mlp`);
  }
  return {
    inputNorm: w.vector(`${p}.input_layernorm.weight`),
    postAttentionNorm: w.vector(`${p}.post_attention_layernorm.weight`),
    qProj: hasQLora ? null : w.matrix(`${a}.q_proj.weight`),
    qA: hasQLora ? w.matrix(`${a}.q_a_proj.weight`) : null,
    qANorm: hasQLora ? w.vector(`${a}.q_a_layernorm.weight`) : null,
    qB: hasQLora ? w.matrix(`${a}.q_b_proj.weight`) : null,
    kvA: w.matrix(`${a}.kv_a_proj_with_mqa.weight`),
    kvANorm: w.vector(`${a}.kv_a_layernorm.weight`),
    kvB: w.matrix(`${a}.kv_b_proj.weight`),
    oProj: w.matrix(`${a}.o_proj.weight`),
    indexer,
    dense,
    moe,
  };
}

/** Per-layer caches of one sequence: the MLA latent rows [c_kv | k_pe] (fp32, bf16 bit patterns, or FP8 rows of
 *  latentFp8RowBytes each) and the indexer
 *  keys, either fp32 rows or e4m3 rows with one fp32 power-of-two scale each (the 132-byte layout for a 128-dim
 *  indexer). */
interface LayerCache {
  kv: Float32Array | Uint16Array | Uint8Array;
  indexKeys: Float32Array | null;
  indexKeysFp8: Uint8Array | null;
  indexKeyScales: Float32Array | null;
}

/** Buffers that one forward pass reuses from layer to layer instead of allocating them per layer. */
interface ForwardScratch {
  /** the new tokens' latent KV rows [T, latent] where they cannot be written straight into the cache (a bf16 or fp8 cache,
   *  or several sequences): every layer overwrites all of it and stores it into the caches before the next one */
  kvRows: Float32Array | null;
}

/** The new tokens of one sequence within a forward pass: `count` rows at positions start.. of `caches`. */
interface Segment {
  caches: LayerCache[];
  start: number;
  count: number;
}

class ForwardPass {
  readonly latentDim: number;
  readonly qHeadDim: number;
  /** bytes of one latent row in the cache (fp8 only: the others are typed arrays of latentDim elements) */
  readonly fp8RowBytes: number;

  constructor(
    readonly native: NativeAddon,
    readonly config: ModelConfig,
    readonly layers: Layer[],
    readonly embed: NativeWeight,
    readonly lmHead: NativeWeight,
    readonly finalNorm: Float32Array,
    readonly attention: AttentionMode,
    readonly indexerPrecision: IndexerPrecision,
    readonly kvCacheDtype: KvCacheDtype,
  ) {
    this.latentDim = config.kvLoraRank + config.qkRopeHeadDim;
    this.qHeadDim = config.qkNopeHeadDim + config.qkRopeHeadDim;
    this.fp8RowBytes = latentFp8RowBytes(config.kvLoraRank, config.qkRopeHeadDim);
  }

  /** Zeroed cache memory from the addon (huge pages for the scattered row gathers of sparse decode). */
  private cacheBuffer(bytes: number): ArrayBuffer {
    return this.native.allocCacheBuffer(bytes);
  }

  private newLatentCache(capacity: number): Float32Array | Uint16Array | Uint8Array {
    switch (this.kvCacheDtype) {
      case 'fp8': return new Uint8Array(this.cacheBuffer(capacity * this.fp8RowBytes));
      case 'bf16': return new Uint16Array(this.cacheBuffer(capacity * this.latentDim * 2));
      default: return new Float32Array(this.cacheBuffer(capacity * this.latentDim * 4));
    }
  }

  newCaches(capacity: number): LayerCache[] {
    const useIndexer = this.attention === 'sparse' && this.config.indexer !== null;
    const fp8 = useIndexer && this.indexerPrecision === 'fp8';
    const Di = this.config.indexer?.headDim ?? 0;
    return this.layers.map(() => ({
      kv: this.newLatentCache(capacity),
      indexKeys: useIndexer && !fp8 ? new Float32Array(this.cacheBuffer(capacity * Di * 4)) : null,
      indexKeysFp8: fp8 ? new Uint8Array(this.cacheBuffer(capacity * Di)) : null,
      indexKeyScales: fp8 ? new Float32Array(this.cacheBuffer(capacity * 4)) : null,
    }));
  }

  /** Copies the first `used` tokens of every cache into `next` (cache growth). */
  copyCaches(from: LayerCache[], next: LayerCache[], used: number): void {
    const latent = this.latentDim;
    const Di = this.config.indexer?.headDim ?? 0;
    for (let l = 0; l < next.length; l++) {
      const a = from[l];
      const b = next[l];
      if (a.kv instanceof Float32Array && b.kv instanceof Float32Array) b.kv.set(a.kv.subarray(0, used * latent));
      else if (a.kv instanceof Uint16Array && b.kv instanceof Uint16Array) b.kv.set(a.kv.subarray(0, used * latent));
      else if (a.kv instanceof Uint8Array && b.kv instanceof Uint8Array) b.kv.set(a.kv.subarray(0, used * this.fp8RowBytes));
      else throw new Error('latent caches of different dtypes');
      if (a.indexKeys && b.indexKeys) b.indexKeys.set(a.indexKeys.subarray(0, used * Di));
      if (a.indexKeysFp8 && b.indexKeysFp8) b.indexKeysFp8.set(a.indexKeysFp8.subarray(0, used * Di));
      if (a.indexKeyScales && b.indexKeyScales) b.indexKeyScales.set(a.indexKeyScales.subarray(0, used));
    }
  }

  /** Runs T tokens at positions start..start+T−1 (the caches hold the first `start`). Returns final hidden states [T, D]. */
  run(caches: LayerCache[], ids: Int32Array, start: number): Float32Array {
    return this.runSegments([{ caches, start, count: ids.length }], ids);
  }

  /** Runs several sequences' new tokens in one pass: `ids` holds each segment's tokens in order. Every row-wise
   *  part (projections, norms, MLPs, experts) runs once over all rows, so the weights stream once per step;
   *  only the cache writes, the indexer's selection and the attention are per sequence. */
  runSegments(segments: readonly Segment[], ids: Int32Array): Float32Array {
    const { native, config } = this;
    const T = ids.length;
    const D = config.hiddenSize;
    const positions = new Int32Array(T);
    let r = 0;
    for (const seg of segments) for (let t = 0; t < seg.count; t++) positions[r++] = seg.start + t;
    if (r !== T) throw new Error(`segments cover ${r} rows, ids has ${T}`);
    const h = new Float32Array(T * D);
    native.embedding(h, ids, this.embed);
    const x = new Float32Array(T * D);
    const scratch: ForwardScratch = { kvRows: null };
    for (let l = 0; l < this.layers.length; l++) {
      const layer = this.layers[l];
      native.rmsNorm(x, h, T, D, layer.inputNorm, config.rmsNormEps);
      const attnOut = this.attentionBlock(layer, l, segments, x, T, positions, scratch);
      addInPlace(h, attnOut);
      native.rmsNorm(x, h, T, D, layer.postAttentionNorm, config.rmsNormEps);
      const mlpOut = layer.moe ? this.moeBlock(layer.moe, x, T) : this.mlp(layer.dense!, x, T);
      addInPlace(h, mlpOut);
    }
    native.rmsNorm(h, h, T, D, this.finalNorm, config.rmsNormEps);
    return h;
  }

  logits(hidden: Float32Array, T: number): Float32Array {
    const out = new Float32Array(T * this.config.vocabSize);
    this.native.matmul(out, hidden, T, this.lmHead);
    return out;
  }

  private attentionBlock(
    layer: Layer, l: number, segments: readonly Segment[], x: Float32Array, T: number, positions: Int32Array, scratch: ForwardScratch,
  ): Float32Array {
    const { native, config } = this;
    const H = config.numHeads;
    const nope = config.qkNopeHeadDim;
    const rope = config.qkRopeHeadDim;
    const kvLora = config.kvLoraRank;
    const latent = this.latentDim;
    const qHead = this.qHeadDim;
    const single = segments.length === 1;

    // Query: [T, H, nope + rope]; qr (the normalised q latent) also feeds the indexer.
    let q: Float32Array;
    let qr: Float32Array | null = null;
    if (layer.qA) {
      const qLora = config.qLoraRank!;
      qr = new Float32Array(T * qLora);
      native.matmul(qr, x, T, layer.qA);
      native.rmsNorm(qr, qr, T, qLora, layer.qANorm!, LATENT_NORM_EPS);
      q = new Float32Array(T * H * qHead);
      native.matmul(q, qr, T, layer.qB!);
    } else {
      q = new Float32Array(T * H * qHead);
      native.matmul(q, x, T, layer.qProj!);
    }
    native.rope(q, T, H, qHead, nope, rope, positions, config.rope.invFreq, config.rope.attentionFactor, true);

    // Latent KV row of each new token: [c_kv (normalised) | k_pe (roped)]. One sequence with an fp32 cache writes
    // straight into it; otherwise the rows are computed together in the pass's scratch and then stored (rounded to
    // bf16 for a bf16 cache, quantised to FP8 rows for an fp8 one) each in its own sequence's cache.
    const firstKv = segments[0].caches[l].kv;
    const direct = single && firstKv instanceof Float32Array;
    const kvRows = direct
      ? firstKv.subarray(segments[0].start * latent, (segments[0].start + T) * latent)
      : (scratch.kvRows ??= new Float32Array(T * latent));
    native.matmul(kvRows, x, T, layer.kvA);
    rmsNormStrided(native, kvRows, T, latent, kvLora, layer.kvANorm, LATENT_NORM_EPS);
    native.rope(kvRows, T, 1, latent, kvLora, rope, positions, config.rope.invFreq, config.rope.attentionFactor, true);
    if (!direct) {
      let row = 0;
      for (const seg of segments) {
        const rows = kvRows.subarray(row * latent, (row + seg.count) * latent);
        const cache = seg.caches[l].kv;
        if (cache instanceof Float32Array) cache.set(rows, seg.start * latent);
        else if (cache instanceof Uint16Array) storeBf16(cache, seg.start * latent, rows);
        else native.quantizeLatentFp8(cache, seg.start, rows, seg.count, kvLora, rope);
        row += seg.count;
      }
    }

    // Absorbed query [T, H, kvLora + rope]: q_nope · W_UK per head, then the roped part as is.
    const qAbs = new Float32Array(T * H * latent);
    native.mlaAbsorbQuery(qAbs, latent, q, qHead, T, H, nope, config.vHeadDim, layer.kvB);
    for (let t = 0; t < T; t++) {
      for (let hh = 0; hh < H; hh++) {
        const src = (t * H + hh) * qHead + nope;
        qAbs.set(q.subarray(src, src + rope), (t * H + hh) * latent + kvLora);
      }
    }

    const selections = layer.indexer && this.usesIndexer()
      ? this.indexerSelect(layer.indexer, l, segments, x, qr!, T, positions, config.indexer!.topk)
      : null;
    const o = new Float32Array(T * H * kvLora);
    let row = 0;
    for (let i = 0; i < segments.length; i++) {
      const seg = segments[i];
      const S = seg.start + seg.count;
      const indices = selections ? selections[i] : null;
      const k = indices ? config.indexer!.topk : 0;
      native.mlaAttention(
        o.subarray(row * H * kvLora, (row + seg.count) * H * kvLora),
        qAbs.subarray(row * H * latent, (row + seg.count) * H * latent),
        seg.caches[l].kv, S, seg.count, H, kvLora, rope, config.softmaxScale, indices, k,
        positions.subarray(row, row + seg.count),
      );
      row += seg.count;
    }
    const ov = new Float32Array(T * H * config.vHeadDim);
    native.mlaExpandValue(ov, o, T, H, nope, config.vHeadDim, layer.kvB);
    const out = new Float32Array(T * config.hiddenSize);
    native.matmul(out, ov, T, layer.oProj);
    return out;
  }

  private usesIndexer(): boolean {
    return this.attention === 'sparse' && this.config.indexer !== null;
  }

  /** Lightning indexer: caches the new tokens' keys, then scores every cached position for each query and keeps
   *  the top k (−1 padded), per segment. A segment's entry is null while its context holds no more than k tokens:
   *  every causal position is then selected, which is dense causal attention (DSA equals dense there), so scoring
   *  is skipped. */
  private indexerSelect(
    ix: IndexerLayer, l: number, segments: readonly Segment[], x: Float32Array, qr: Float32Array, T: number,
    positions: Int32Array, k: number,
  ): (Int32Array | null)[] {
    const { native, config } = this;
    const { nHeads: Hi, headDim: Di } = config.indexer!;
    const rope = config.qkRopeHeadDim;
    const fp8 = this.indexerPrecision === 'fp8';

    // Keys of the new tokens: LayerNorm(wk x), half-split RoPE on the first `rope` dims (layout [rope | nope]).
    const newKeys = new Float32Array(T * Di);
    native.matmul(newKeys, x, T, ix.wk);
    native.layerNorm(newKeys, newKeys, T, Di, ix.kNormWeight, ix.kNormBias, INDEXER_NORM_EPS);
    native.rope(newKeys, T, 1, Di, 0, rope, positions, config.rope.invFreq, config.rope.attentionFactor, false);
    let keys8: Uint8Array | null = null;
    let keyScales: Float32Array | null = null;
    if (fp8) {
      // DeepSeek's FP8 form: rotate (spreads outliers), then e4m3 rows with power-of-two scales.
      native.hadamardRows(newKeys, T, Di);
      keys8 = new Uint8Array(T * Di);
      keyScales = new Float32Array(T);
      native.quantizeFp8Rows(keys8, keyScales, newKeys, T, Di);
    }
    let row = 0;
    let anySparse = false;
    for (const seg of segments) {
      const c = seg.caches[l];
      const from = row * Di;
      const to = (row + seg.count) * Di;
      if (fp8) {
        c.indexKeysFp8!.set(keys8!.subarray(from, to), seg.start * Di);
        c.indexKeyScales!.set(keyScales!.subarray(row, row + seg.count), seg.start);
      } else {
        c.indexKeys!.set(newKeys.subarray(from, to), seg.start * Di);
      }
      if (seg.start + seg.count > k) anySparse = true;
      row += seg.count;
    }
    if (!anySparse) return segments.map(() => null);

    const qi = new Float32Array(T * Hi * Di);
    native.matmul(qi, qr, T, ix.wqB);
    native.rope(qi, T, Hi, Di, 0, rope, positions, config.rope.invFreq, config.rope.attentionFactor, false);
    // Head weights with the softmax scale and the 1/sqrt(heads) factor folded in (ReLU commutes with a positive scale).
    const w = new Float32Array(T * Hi);
    native.matmul(w, x, T, ix.weightsProj);
    const fold = Math.pow(Hi, -0.5) * Math.pow(Di, -0.5);
    let q8: Uint8Array | null = null;
    if (!fp8) {
      for (let i = 0; i < w.length; i++) w[i] *= fold;
    } else {
      native.hadamardRows(qi, T * Hi, Di);
      q8 = new Uint8Array(T * Hi * Di);
      const qScale = new Float32Array(T * Hi);
      native.quantizeFp8Rows(q8, qScale, qi, T * Hi, Di);
      // The query scale folds into the head weights, as DeepGEMM's fp8_mqa_logits contract wants.
      for (let i = 0; i < w.length; i++) w[i] *= fold * qScale[i];
    }
    const out: (Int32Array | null)[] = [];
    row = 0;
    for (const seg of segments) {
      const S = seg.start + seg.count;
      const n = seg.count;
      if (S <= k) {
        out.push(null);
        row += n;
        continue;
      }
      const c = seg.caches[l];
      const pos = positions.subarray(row, row + n);
      const wSeg = w.subarray(row * Hi, (row + n) * Hi);
      const idx = new Int32Array(n * k);
      if (!fp8) {
        const scores = new Float32Array(n * S);
        native.indexerScores(scores, qi.subarray(row * Hi * Di, (row + n) * Hi * Di), wSeg, c.indexKeys!, n, S, Hi, Di, pos);
        native.topk(idx, scores, n, S, k);
      } else {
        // scores and selection in one op: a decode step never materialises its [1, S] scores
        native.indexerTopk(
          idx, q8!.subarray(row * Hi * Di, (row + n) * Hi * Di), wSeg, c.indexKeysFp8!, c.indexKeyScales!, n, S, Hi, Di, pos, k,
        );
      }
      out.push(idx);
      row += n;
    }
    return out;
  }

  private mlp(m: Mlp, x: Float32Array, T: number): Float32Array {
    const { native } = this;
    const inter = m.gate.rows;
    const g = new Float32Array(T * inter);
    const u = new Float32Array(T * inter);
    native.matmul(g, x, T, m.gate);
    native.matmul(u, x, T, m.up);
    native.siluMul(g, g, u, T * inter);
    const out = new Float32Array(T * this.config.hiddenSize);
    native.matmul(out, g, T, m.down);
    return out;
  }

  private moeBlock(moe: MoeLayer, x: Float32Array, T: number): Float32Array {
    const { native, config } = this;
    const D = config.hiddenSize;
    const E = config.nRoutedExperts;
    const K = config.numExpertsPerTok;
    const logits = new Float32Array(T * E);
    native.matmul(logits, x, T, moe.router);
    const ids = new Int32Array(T * K);
    const wts = new Float32Array(T * K);
    native.moeRoute(ids, wts, logits, T, E, K, {
      scoring: config.scoringFunc,
      method: config.topkMethod,
      nGroup: config.nGroup,
      topkGroup: config.topkGroup,
      bias: moe.bias,
      normTopk: config.normTopkProb,
      scale: config.routedScalingFactor,
    });
    const out = moe.shared ? this.mlp(moe.shared, x, T) : new Float32Array(T * D);
    // Group tokens by expert so each expert's weights stream once for all of its tokens.
    const tokensOf: number[][] = Array.from({ length: E }, () => []);
    const slotOf: number[][] = Array.from({ length: E }, () => []);
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < K; j++) {
        const e = ids[t * K + j];
        tokensOf[e].push(t);
        slotOf[e].push(t * K + j);
      }
    }
    for (let e = 0; e < E; e++) {
      const toks = tokensOf[e];
      const n = toks.length;
      if (n === 0) continue;
      const xe = n === T && T === 1 ? x : gatherRows(x, toks, D);
      const ye = this.mlp(moe.experts[e], xe, n);
      for (let i = 0; i < n; i++) {
        const wgt = wts[slotOf[e][i]];
        const o = toks[i] * D;
        for (let d = 0; d < D; d++) out[o + d] += wgt * ye[i * D + d];
      }
    }
    return out;
  }
}

class KvSequence implements Sequence {
  private caches: LayerCache[];
  private capacity: number;
  private used = 0;

  constructor(readonly pass: ForwardPass, readonly maxTokens: number) {
    this.capacity = Math.min(maxTokens, 1024);
    this.caches = pass.newCaches(this.capacity);
  }

  get length(): number {
    return this.used;
  }

  forward(ids: Int32Array, allLogits: boolean): Float32Array {
    const cfg = this.pass.config;
    if (ids.length === 0) throw new GlanceError('bad_input', 'no input ids to run');
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!(id >= 0 && id < cfg.vocabSize)) {
        throw new GlanceError('bad_input', `token id ${id} at position ${i} is outside the vocabulary (0..${cfg.vocabSize - 1})`);
      }
    }
    const needed = this.used + ids.length;
    if (needed > this.maxTokens) {
      throw new GlanceError(
        'context_overflow',
        `${needed} tokens do not fit in the context window of ${this.maxTokens} tokens (${this.used} cached + ${ids.length} new)`,
      );
    }
    this.reserve(needed);
    const V = cfg.vocabSize;
    const out = new Float32Array((allLogits ? ids.length : 1) * V);
    for (let c = 0; c < ids.length; c += PREFILL_CHUNK) {
      const chunk = ids.subarray(c, Math.min(ids.length, c + PREFILL_CHUNK));
      const hidden = this.pass.run(this.caches, chunk, this.used);
      this.used += chunk.length;
      const T = chunk.length;
      if (allLogits) {
        out.set(this.pass.logits(hidden, T), c * V);
      } else if (c + T === ids.length) {
        out.set(this.pass.logits(hidden.subarray((T - 1) * cfg.hiddenSize), 1));
      }
    }
    return out;
  }

  truncate(length: number): void {
    if (!(Number.isInteger(length) && length >= 0 && length <= this.used)) {
      throw new GlanceError('bad_input', `cannot truncate a sequence of ${this.used} tokens to ${length}`);
    }
    this.used = length;
  }

  copyPrefixFrom(source: Sequence, length: number): void {
    if (!(source instanceof KvSequence) || source.pass !== this.pass) {
      throw new GlanceError('bad_input', 'a sequence can copy a prefix only from another sequence of the same model');
    }
    if (!(Number.isInteger(length) && length >= 0 && length <= source.used && length <= this.maxTokens)) {
      throw new GlanceError('bad_input', `cannot copy ${length} tokens from a sequence of ${source.used} (capacity ${this.maxTokens})`);
    }
    this.used = 0;
    this.reserve(length);
    this.pass.copyCaches(source.caches, this.caches, length);
    this.used = length;
  }

  get cacheBytes(): number {
    let bytes = 0;
    for (const c of this.caches) {
      bytes += c.kv.byteLength + (c.indexKeys?.byteLength ?? 0) + (c.indexKeysFp8?.byteLength ?? 0) + (c.indexKeyScales?.byteLength ?? 0);
    }
    return bytes;
  }

  /** One token on each sequence in a single forward pass (see ForwardPass.runSegments). */
  static decodeBatch(pass: ForwardPass, steps: readonly BatchStep[]): Float32Array[] {
    if (steps.length === 0) return [];
    const seqs: KvSequence[] = [];
    for (const s of steps) {
      if (!(s.sequence instanceof KvSequence) || s.sequence.pass !== pass) {
        throw new GlanceError('bad_input', 'decodeBatch: every sequence must belong to this model');
      }
      if (seqs.includes(s.sequence)) throw new GlanceError('bad_input', 'decodeBatch: a sequence appears twice in one step');
      seqs.push(s.sequence);
    }
    if (steps.length === 1) return [seqs[0].forward(Int32Array.of(steps[0].id), false)];
    const V = pass.config.vocabSize;
    const ids = new Int32Array(steps.length);
    steps.forEach((s, i) => {
      if (!(s.id >= 0 && s.id < V)) throw new GlanceError('bad_input', `token id ${s.id} is outside the vocabulary (0..${V - 1})`);
      ids[i] = s.id;
    });
    for (const seq of seqs) {
      if (seq.used + 1 > seq.maxTokens) {
        throw new GlanceError('context_overflow', `${seq.used + 1} tokens do not fit in the context window of ${seq.maxTokens} tokens`);
      }
      seq.reserve(seq.used + 1);
    }
    const hidden = pass.runSegments(seqs.map((seq) => ({ caches: seq.caches, start: seq.used, count: 1 })), ids);
    for (const seq of seqs) seq.used += 1;
    const logits = pass.logits(hidden, steps.length);
    return seqs.map((_, i) => logits.slice(i * V, (i + 1) * V));
  }

  /** Grows the caches geometrically (copying the used rows) so long contexts cost amortised O(1) per token. */
  private reserve(tokens: number): void {
    if (tokens <= this.capacity) return;
    let cap = this.capacity;
    while (cap < tokens) cap *= 2;
    cap = Math.min(cap, this.maxTokens);
    const next = this.pass.newCaches(cap);
    this.pass.copyCaches(this.caches, next, this.used);
    this.caches = next;
    this.capacity = cap;
  }
}

function addInPlace(a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
}

/** dst[offset + i] = bf16(src[i]), rounded to nearest even as torch's .to(torch.bfloat16) does; NaN stays NaN. */
function storeBf16(dst: Uint16Array, offset: number, src: Float32Array): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const u = bits[i];
    dst[offset + i] = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 0x40 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
}

function gatherRows(x: Float32Array, rows: number[], D: number): Float32Array {
  const out = new Float32Array(rows.length * D);
  for (let i = 0; i < rows.length; i++) out.set(x.subarray(rows[i] * D, rows[i] * D + D), i * D);
  return out;
}

/** RMSNorm of the first `dim` entries of each row of stride `stride`, in place. */
function rmsNormStrided(
  native: NativeAddon, rows: Float32Array, T: number, stride: number, dim: number, weight: Float32Array, eps: number,
): void {
  if (stride === dim) {
    native.rmsNorm(rows, rows, T, dim, weight, eps);
    return;
  }
  for (let t = 0; t < T; t++) {
    const row = rows.subarray(t * stride, t * stride + dim);
    native.rmsNorm(row, row, 1, dim, weight, eps);
  }
}
