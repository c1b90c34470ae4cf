// The weight store: the tensor manifest a config implies (HF / DeepSeek names and shapes), checked against a
// checkpoint, with lazily registered native weights over the memory-mapped files.
//
// Accepted layouts:
//   - per-expert tensors  model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight  (DeepSeek, HF ≤ 4.x)
//   - packed experts      model.layers.N.mlp.experts.gate_up_proj [E, 2I, H] and .down_proj [E, H, I]
//     (HF transformers 5); per-expert weights are then slices of the same mapping (gate = rows [0, I) of
//     gate_up_proj[e], up = rows [I, 2I)).
//   - FP8: a `X.weight` of dtype F8_E4M3 comes with `X.weight_scale_inv`, F32 [ceil(rows/128), ceil(cols/128)].

import * as path from 'node:path';

import type { NativeAddon, NativeWeight, WeightDType } from '../native/contract';
import { GlanceError, fmtShape } from './errors';
import { dtypeSize, openCheckpoint, type Checkpoint, type TensorInfo } from './safetensors';
import type { ModelConfig, WeightStore } from './types';

/** The part of the native addon the weight store uses. */
export type WeightNative = Pick<NativeAddon, 'mapFile' | 'createWeight' | 'toFloat32'>;

export type TensorRole = 'matrix' | 'vector';

/** One tensor the config implies. */
export interface ExpectedTensor {
  readonly name: string;
  readonly shape: readonly number[];
  /** how the shape follows from the config, e.g. "[num_attention_heads·(qk_nope_head_dim+v_head_dim) = 16·(128+128), …]" */
  readonly why: string;
  readonly role: TensorRole;
  /** why the tensor is needed at all (for "missing" messages) */
  readonly reason: string;
  /** layer index, or -1 for embeddings / final norm / head */
  readonly layer: number;
  /** for routed experts: [layer, expert] (active-parameter counting) */
  readonly expert?: readonly [number, number];
}

interface Dim {
  v: number;
  expr: string;
}

function dim(v: number, expr: string): Dim {
  return { v, expr };
}

function describeDims(dims: Dim[]): string {
  return `[${dims.map((d) => (String(d.v) === d.expr ? d.expr : `${d.expr} = ${d.v}`)).join(', ')}]`;
}

/** The full tensor manifest of a config, in checkpoint order. */
export function expectedTensors(config: ModelConfig): ExpectedTensor[] {
  const c = config;
  const out: ExpectedTensor[] = [];
  const add = (name: string, dims: Dim[], role: TensorRole, reason: string, layer: number, expert?: [number, number]): void => {
    out.push({ name, shape: dims.map((d) => d.v), why: describeDims(dims), role, reason, layer, ...(expert ? { expert } : {}) });
  };
  const H = dim(c.hiddenSize, 'hidden_size');
  const V = dim(c.vocabSize, 'vocab_size');
  const nH = c.numHeads;
  const qkHead = c.qkNopeHeadDim + c.qkRopeHeadDim;

  add('model.embed_tokens.weight', [V, H], 'matrix', 'token embeddings', -1);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const why = `layer ${l} of num_hidden_layers=${c.numLayers}`;
    add(`${p}input_layernorm.weight`, [H], 'vector', why, l);
    if (c.qLoraRank === null) {
      add(`${p}self_attn.q_proj.weight`, [dim(nH * qkHead, `num_attention_heads·(qk_nope_head_dim+qk_rope_head_dim) = ${nH}·(${c.qkNopeHeadDim}+${c.qkRopeHeadDim})`), H], 'matrix', `${why}, q_lora_rank is null`, l);
    } else {
      const Q = dim(c.qLoraRank, 'q_lora_rank');
      add(`${p}self_attn.q_a_proj.weight`, [Q, H], 'matrix', `${why}, q_lora_rank=${c.qLoraRank}`, l);
      add(`${p}self_attn.q_a_layernorm.weight`, [Q], 'vector', `${why}, q_lora_rank=${c.qLoraRank}`, l);
      add(`${p}self_attn.q_b_proj.weight`, [dim(nH * qkHead, `num_attention_heads·(qk_nope_head_dim+qk_rope_head_dim) = ${nH}·(${c.qkNopeHeadDim}+${c.qkRopeHeadDim})`), Q], 'matrix', `${why}, q_lora_rank=${c.qLoraRank}`, l);
    }
    add(`${p}self_attn.kv_a_proj_with_mqa.weight`, [dim(c.kvLoraRank + c.qkRopeHeadDim, `kv_lora_rank+qk_rope_head_dim = ${c.kvLoraRank}+${c.qkRopeHeadDim}`), H], 'matrix', why, l);
    add(`${p}self_attn.kv_a_layernorm.weight`, [dim(c.kvLoraRank, 'kv_lora_rank')], 'vector', why, l);
    add(`${p}self_attn.kv_b_proj.weight`, [dim(nH * (c.qkNopeHeadDim + c.vHeadDim), `num_attention_heads·(qk_nope_head_dim+v_head_dim) = ${nH}·(${c.qkNopeHeadDim}+${c.vHeadDim})`), dim(c.kvLoraRank, 'kv_lora_rank')], 'matrix', why, l);
    add(`${p}self_attn.o_proj.weight`, [H, dim(nH * c.vHeadDim, `num_attention_heads·v_head_dim = ${nH}·${c.vHeadDim}`)], 'matrix', why, l);
    if (c.indexer) {
      const ix = c.indexer;
      const iwhy = `${why}, model_type ${c.modelType} has a lightning indexer in every layer`;
      const D = dim(ix.headDim, 'index_head_dim');
      add(`${p}self_attn.indexer.wq_b.weight`, [dim(ix.nHeads * ix.headDim, `index_n_heads·index_head_dim = ${ix.nHeads}·${ix.headDim}`), dim(c.qLoraRank ?? 0, 'q_lora_rank')], 'matrix', iwhy, l);
      add(`${p}self_attn.indexer.wk.weight`, [D, H], 'matrix', iwhy, l);
      add(`${p}self_attn.indexer.k_norm.weight`, [D], 'vector', iwhy, l);
      add(`${p}self_attn.indexer.k_norm.bias`, [D], 'vector', iwhy, l);
      add(`${p}self_attn.indexer.weights_proj.weight`, [dim(ix.nHeads, 'index_n_heads'), H], 'matrix', iwhy, l);
    }
    add(`${p}post_attention_layernorm.weight`, [H], 'vector', why, l);
    if (c.mlpLayerTypes[l] === 'dense') {
      const I = dim(c.intermediateSize, 'intermediate_size');
      const dwhy = `layer ${l} has a dense MLP (mlp_layer_types / first_k_dense_replace=${String(c.raw.first_k_dense_replace ?? 'default')})`;
      add(`${p}mlp.gate_proj.weight`, [I, H], 'matrix', dwhy, l);
      add(`${p}mlp.up_proj.weight`, [I, H], 'matrix', dwhy, l);
      add(`${p}mlp.down_proj.weight`, [H, I], 'matrix', dwhy, l);
    } else {
      const E = dim(c.nRoutedExperts, 'n_routed_experts');
      const mwhy = `layer ${l} is MoE (mlp_layer_types / first_k_dense_replace=${String(c.raw.first_k_dense_replace ?? 'default')})`;
      add(`${p}mlp.gate.weight`, [E, H], 'matrix', mwhy, l);
      if (c.topkMethod === 'noaux_tc') {
        add(`${p}mlp.gate.e_score_correction_bias`, [E], 'vector', `${mwhy}, routing noaux_tc`, l);
      }
      const I = dim(c.moeIntermediateSize, 'moe_intermediate_size');
      for (let e = 0; e < c.nRoutedExperts; e++) {
        const ep = `${p}mlp.experts.${e}.`;
        const ewhy = `${mwhy}, expert ${e} of n_routed_experts=${c.nRoutedExperts}`;
        add(`${ep}gate_proj.weight`, [I, H], 'matrix', ewhy, l, [l, e]);
        add(`${ep}up_proj.weight`, [I, H], 'matrix', ewhy, l, [l, e]);
        add(`${ep}down_proj.weight`, [H, I], 'matrix', ewhy, l, [l, e]);
      }
      if (c.nSharedExperts > 0) {
        const S = dim(c.moeIntermediateSize * c.nSharedExperts, `moe_intermediate_size·n_shared_experts = ${c.moeIntermediateSize}·${c.nSharedExperts}`);
        const swhy = `${mwhy}, n_shared_experts=${c.nSharedExperts}`;
        add(`${p}mlp.shared_experts.gate_proj.weight`, [S, H], 'matrix', swhy, l);
        add(`${p}mlp.shared_experts.up_proj.weight`, [S, H], 'matrix', swhy, l);
        add(`${p}mlp.shared_experts.down_proj.weight`, [H, S], 'matrix', swhy, l);
      }
    }
  }
  add('model.norm.weight', [H], 'vector', 'final norm', -1);
  if (!c.tieWordEmbeddings) add('lm_head.weight', [V, H], 'matrix', 'output head (tie_word_embeddings is false)', -1);
  return out;
}

/** Parameter counts implied by the config: all weights, and those one token uses (non-selected routed experts excluded). */
export function parameterCounts(config: ModelConfig): { total: number; active: number; routedExperts: number } {
  let total = 0;
  let routed = 0;
  for (const t of expectedTensors(config)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    total += n;
    if (t.expert) routed += n;
  }
  const moeLayers = config.mlpLayerTypes.filter((t) => t === 'sparse').length;
  const perExpert = moeLayers > 0 && config.nRoutedExperts > 0 ? routed / (moeLayers * config.nRoutedExperts) : 0;
  const inactive = moeLayers * (config.nRoutedExperts - config.numExpertsPerTok) * perExpert;
  return { total, active: total - inactive, routedExperts: routed };
}

// ---------------------------------------------------------------------------------------------------------------

/** Where a (possibly virtual) weight's bytes are. */
interface Source {
  readonly name: string;
  readonly tensor: TensorInfo;
  /** byte offset inside the tensor's data */
  readonly offset: number;
  readonly byteLength: number;
  readonly rows: number;
  readonly cols: number;
  readonly dtype: WeightDType;
  readonly scaleInv: TensorInfo | null;
}

export interface DTypeStat {
  tensors: number;
  elements: number;
  bytes: number;
}

function scaleShape(rows: number, cols: number): [number, number] {
  return [Math.ceil(rows / 128), Math.ceil(cols / 128)];
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * Math.pow(2, -24);
  if (e === 31) return m === 0 ? s * Infinity : NaN;
  return s * (1 + m / 1024) * Math.pow(2, e - 15);
}

/** Converts little-endian F32 / BF16 / F16 bytes to a new Float32Array. */
export function bytesToFloat32(bytes: Uint8Array, dtype: string, numel: number): Float32Array {
  const out = new Float32Array(numel);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < numel; i++) out[i] = dv.getFloat32(i * 4, true);
      return out;
    case 'BF16': {
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < numel; i++) u[i] = dv.getUint16(i * 2, true) << 16;
      return out;
    }
    case 'F16':
      for (let i = 0; i < numel; i++) out[i] = halfToFloat(dv.getUint16(i * 2, true));
      return out;
    default:
      throw new Error(`bytesToFloat32: unsupported dtype ${dtype}`);
  }
}

const MATRIX_DTYPES: readonly string[] = ['F32', 'BF16', 'F16', 'F8_E4M3'];
const VECTOR_DTYPES: readonly string[] = ['F32', 'BF16', 'F16'];

/** A WeightStore over a checkpoint, validated against a config. */
export class CheckpointWeights implements WeightStore {
  readonly files: string[];
  readonly totalBytes: number;
  readonly totalParams: number;
  /** checkpoint tensors the config does not use (e.g. the MTP layer model.layers.61.*), sorted */
  readonly extras: string[];
  /** per dtype: tensors, elements and bytes of the tensors the model uses (FP8 scales included) */
  readonly dtypeStats: Record<string, DTypeStat>;
  /** 'per-expert' or 'packed' when the model has MoE layers, else null */
  readonly expertLayout: 'per-expert' | 'packed' | 'mixed' | null;
  readonly manifest: readonly ExpectedTensor[];

  private readonly sources = new Map<string, Source>();
  private readonly cache = new Map<string, NativeWeight>();

  constructor(
    readonly checkpoint: Checkpoint,
    readonly config: ModelConfig,
    private readonly native: WeightNative | null,
  ) {
    this.files = [...checkpoint.files];
    const tensors = checkpoint.tensors;
    const used = new Set<string>();
    const fileList = checkpoint.files.map((f) => path.basename(f)).join(', ');
    const manifest = expectedTensors(config);
    this.manifest = manifest;

    // Layers with packed experts (HF transformers 5)
    const packedLayers = new Set<number>();
    let perExpertLayers = 0;
    config.mlpLayerTypes.forEach((t, l) => {
      if (t !== 'sparse') return;
      const p = `model.layers.${l}.mlp.experts.`;
      if (!tensors.has(`${p}0.gate_proj.weight`) && (tensors.has(`${p}gate_up_proj`) || tensors.has(`${p}down_proj`))) {
        packedLayers.add(l);
      } else {
        perExpertLayers++;
      }
    });
    this.expertLayout = packedLayers.size > 0 ? (perExpertLayers > 0 ? 'mixed' : 'packed') : perExpertLayers > 0 ? 'per-expert' : null;

    const missing: ExpectedTensor[] = [];
    for (const exp of manifest) {
      if (exp.expert && packedLayers.has(exp.expert[0])) continue; // resolved below
      const t = tensors.get(exp.name);
      if (!t) {
        missing.push(exp);
        continue;
      }
      if (missing.length > 0) continue; // report the first missing one; shapes of the rest are checked after
      this.addSource(exp, t, fileList, used);
    }
    if (missing.length > 0) throw this.missingError(missing, fileList);

    for (const l of packedLayers) this.addPackedLayer(l, fileList, used);

    if (config.tieWordEmbeddings) {
      const emb = this.sources.get('model.embed_tokens.weight');
      if (emb) this.sources.set('lm_head.weight', { ...emb, name: 'lm_head.weight' });
    }

    // totals
    let bytes = 0;
    let params = 0;
    const stats: Record<string, DTypeStat> = {};
    for (const name of used) {
      const t = tensors.get(name)!;
      const b = t.end - t.begin;
      bytes += b;
      if (!name.endsWith('_scale_inv')) params += t.numel;
      const s = (stats[t.dtype] ??= { tensors: 0, elements: 0, bytes: 0 });
      s.tensors++;
      s.elements += t.numel;
      s.bytes += b;
    }
    this.totalBytes = bytes;
    this.totalParams = params;
    this.dtypeStats = stats;
    this.extras = [...tensors.keys()].filter((n) => !used.has(n)).sort();
  }

  private missingError(missing: ExpectedTensor[], fileList: string): GlanceError {
    const first = missing[0]!;
    const tensors = this.checkpoint.tensors;
    const hints: string[] = [];
    const names = [...tensors.keys()];
    if (names.length > 0 && !names.some((n) => n.startsWith('model.'))) {
      hints.push('this checkpoint does not use Hugging Face tensor names (model.layers.N.…); convert it to the HF layout first');
    } else if (first.layer >= 0) {
      let maxLayer = -1;
      for (const n of names) {
        const m = /^model\.layers\.(\d+)\./.exec(n);
        if (m) maxLayer = Math.max(maxLayer, Number(m[1]));
      }
      if (maxLayer < first.layer) {
        hints.push(`the checkpoint has layers 0..${maxLayer} only, but config num_hidden_layers is ${this.config.numLayers}`);
      }
    }
    const others = missing.length - 1;
    return new GlanceError(
      'missing_tensor',
      `missing tensor ${first.name} (${first.reason}; expected shape ${first.why}); searched ${fileList}` +
        (others > 0 ? `; ${others} more expected tensor(s) are missing too` : '') +
        (hints.length > 0 ? `. Hint: ${hints.join('; ')}` : ''),
      { tensor: first.name, files: this.checkpoint.files, missing: missing.slice(0, 50).map((m) => m.name), missingCount: missing.length },
    );
  }

  private addSource(exp: ExpectedTensor, t: TensorInfo, fileList: string, used: Set<string>): void {
    const file = path.basename(t.file);
    if (!sameShape(t.shape, exp.shape)) {
      throw new GlanceError(
        'shape_mismatch',
        `tensor ${exp.name} in ${file} has shape ${fmtShape(t.shape)}, but the config implies ${exp.why}`,
        { tensor: exp.name, file: t.file, expected: exp.shape, found: t.shape, why: exp.why },
      );
    }
    const allowed = exp.role === 'matrix' ? MATRIX_DTYPES : VECTOR_DTYPES;
    if (!allowed.includes(t.dtype)) {
      throw new GlanceError(
        'bad_weight',
        `tensor ${exp.name} in ${file} has dtype ${t.dtype}; a ${exp.role === 'matrix' ? 'weight matrix' : 'norm/bias vector'} must be ${allowed.join(', ')}`,
        { tensor: exp.name, file: t.file, dtype: t.dtype },
      );
    }
    used.add(exp.name);
    let scaleInv: TensorInfo | null = null;
    if (t.dtype === 'F8_E4M3') {
      const [rows, cols] = exp.shape as [number, number];
      scaleInv = this.checkScale(exp.name, rows, cols, [rows, cols], fileList);
      used.add(scaleInv.name);
    }
    if (exp.role === 'matrix') {
      const [rows, cols] = exp.shape as [number, number];
      this.sources.set(exp.name, {
        name: exp.name,
        tensor: t,
        offset: 0,
        byteLength: t.end - t.begin,
        rows,
        cols,
        dtype: t.dtype as WeightDType,
        scaleInv,
      });
    }
  }

  private checkScale(name: string, rows: number, cols: number, weightShape: number[], fileList: string): TensorInfo {
    const scaleName = `${name}_scale_inv`;
    const s = this.checkpoint.tensors.get(scaleName);
    if (!s) {
      throw new GlanceError(
        'missing_tensor',
        `tensor ${name} is FP8 (F8_E4M3) but its block scales ${scaleName} are missing (searched ${fileList}); ` +
          `expected F32 ${fmtShape(scaleShape(rows, cols))}`,
        { tensor: scaleName, weight: name },
      );
    }
    const want = scaleShape(rows, cols);
    if (!sameShape(s.shape, want)) {
      throw new GlanceError(
        'shape_mismatch',
        `FP8 scales ${scaleName} in ${path.basename(s.file)} have shape ${fmtShape(s.shape)}, but weight ${fmtShape(weightShape)} ` +
          `in 128×128 blocks needs ${fmtShape(want)} = [ceil(${rows}/128), ceil(${cols}/128)]`,
        { tensor: scaleName, expected: want, found: s.shape },
      );
    }
    if (s.dtype !== 'F32') {
      throw new GlanceError('bad_weight', `FP8 scales ${scaleName} in ${path.basename(s.file)} have dtype ${s.dtype}; they must be F32`, {
        tensor: scaleName,
        dtype: s.dtype,
      });
    }
    return s;
  }

  private addPackedLayer(l: number, fileList: string, used: Set<string>): void {
    const c = this.config;
    const p = `model.layers.${l}.mlp.experts.`;
    const E = c.nRoutedExperts;
    const I = c.moeIntermediateSize;
    const H = c.hiddenSize;
    const specs: [string, number[], string][] = [
      [`${p}gate_up_proj`, [E, 2 * I, H], `[n_routed_experts = ${E}, 2·moe_intermediate_size = ${2 * I}, hidden_size = ${H}]`],
      [`${p}down_proj`, [E, H, I], `[n_routed_experts = ${E}, hidden_size = ${H}, moe_intermediate_size = ${I}]`],
    ];
    const found: TensorInfo[] = [];
    for (const [name, shape, why] of specs) {
      const t = this.checkpoint.tensors.get(name);
      if (!t) {
        throw new GlanceError(
          'missing_tensor',
          `missing tensor ${name} (layer ${l} stores its experts packed, HF transformers 5 layout; expected shape ${why}); searched ${fileList}`,
          { tensor: name, files: this.checkpoint.files },
        );
      }
      if (!sameShape(t.shape, shape)) {
        throw new GlanceError(
          'shape_mismatch',
          `tensor ${name} in ${path.basename(t.file)} has shape ${fmtShape(t.shape)}, but the config implies ${why}`,
          { tensor: name, expected: shape, found: t.shape, why },
        );
      }
      if (t.dtype === 'F8_E4M3') {
        throw new GlanceError(
          'bad_weight',
          `tensor ${name} is FP8 in the packed-experts layout, which is not supported; store FP8 experts per expert (mlp.experts.E.*_proj.weight with weight_scale_inv)`,
          { tensor: name },
        );
      }
      if (!MATRIX_DTYPES.includes(t.dtype)) {
        throw new GlanceError('bad_weight', `tensor ${name} has dtype ${t.dtype}; expert weights must be ${MATRIX_DTYPES.join(', ')}`, {
          tensor: name,
          dtype: t.dtype,
        });
      }
      used.add(name);
      found.push(t);
    }
    const [gateUp, down] = found as [TensorInfo, TensorInfo];
    const gs = dtypeSize(gateUp.dtype);
    const ds = dtypeSize(down.dtype);
    for (let e = 0; e < E; e++) {
      const ep = `${p}${e}.`;
      const base = e * 2 * I * H * gs;
      this.sources.set(`${ep}gate_proj.weight`, {
        name: `${ep}gate_proj.weight`, tensor: gateUp, offset: base, byteLength: I * H * gs, rows: I, cols: H, dtype: gateUp.dtype as WeightDType, scaleInv: null,
      });
      this.sources.set(`${ep}up_proj.weight`, {
        name: `${ep}up_proj.weight`, tensor: gateUp, offset: base + I * H * gs, byteLength: I * H * gs, rows: I, cols: H, dtype: gateUp.dtype as WeightDType, scaleInv: null,
      });
      this.sources.set(`${ep}down_proj.weight`, {
        name: `${ep}down_proj.weight`, tensor: down, offset: e * H * I * ds, byteLength: H * I * ds, rows: H, cols: I, dtype: down.dtype as WeightDType, scaleInv: null,
      });
    }
  }

  has(name: string): boolean {
    return this.sources.has(name) || this.checkpoint.tensors.has(name);
  }

  /** Shape of a tensor as the model sees it (virtual per-expert slices included). */
  shape(name: string): readonly number[] | null {
    const s = this.sources.get(name);
    if (s) return [s.rows, s.cols];
    return this.checkpoint.tensors.get(name)?.shape ?? null;
  }

  private requireNative(what: string): WeightNative {
    if (!this.native) {
      throw new GlanceError('native_unavailable', `cannot ${what}: the weights were opened header-only, without the native addon`);
    }
    return this.native;
  }

  private notFound(name: string): GlanceError {
    return new GlanceError(
      'missing_tensor',
      `no tensor ${name} in ${this.checkpoint.files.map((f) => path.basename(f)).join(', ')}`,
      { tensor: name, files: this.checkpoint.files },
    );
  }

  matrix(name: string): NativeWeight {
    let src = this.sources.get(name);
    const cached = this.cache.get(src ? `${src.tensor.name}@${src.offset}` : name);
    if (cached) return cached;
    if (!src) {
      const t = this.checkpoint.tensors.get(name);
      if (!t) throw this.notFound(name);
      if (t.shape.length !== 2 || !MATRIX_DTYPES.includes(t.dtype)) {
        throw new GlanceError('bad_weight', `tensor ${name} (${t.dtype} ${fmtShape(t.shape)}) is not a 2-D weight of dtype ${MATRIX_DTYPES.join('/')}`, { tensor: name });
      }
      const scaleInv = t.dtype === 'F8_E4M3' ? this.checkScale(name, t.shape[0]!, t.shape[1]!, [...t.shape], this.files.join(', ')) : null;
      src = { name, tensor: t, offset: 0, byteLength: t.end - t.begin, rows: t.shape[0]!, cols: t.shape[1]!, dtype: t.dtype as WeightDType, scaleInv };
    }
    const native = this.requireNative(`register weight ${name}`);
    const all = this.checkpoint.bytes(src.tensor.name);
    const data = all.subarray(src.offset, src.offset + src.byteLength);
    let w: NativeWeight;
    if (src.scaleInv) {
      const sb = this.checkpoint.bytes(src.scaleInv.name);
      const scale =
        sb.byteOffset % 4 === 0
          ? new Float32Array(sb.buffer, sb.byteOffset, src.scaleInv.numel)
          : bytesToFloat32(sb, 'F32', src.scaleInv.numel);
      w = native.createWeight(data, src.dtype, src.rows, src.cols, scale);
    } else {
      w = native.createWeight(data, src.dtype, src.rows, src.cols);
    }
    this.cache.set(`${src.tensor.name}@${src.offset}`, w);
    return w;
  }

  vector(name: string): Float32Array {
    const src = this.sources.get(name);
    if (src && src.dtype === 'F8_E4M3') return this.requireNative(`dequantise ${name}`).toFloat32(this.matrix(name));
    const t = src?.tensor ?? this.checkpoint.tensors.get(name);
    if (!t) throw this.notFound(name);
    if (t.dtype === 'F8_E4M3' && t.shape.length === 2) return this.requireNative(`dequantise ${name}`).toFloat32(this.matrix(name));
    if (!VECTOR_DTYPES.includes(t.dtype)) {
      throw new GlanceError('bad_weight', `tensor ${name} has dtype ${t.dtype}; it cannot be read as fp32 (${VECTOR_DTYPES.join(', ')} can)`, { tensor: name, dtype: t.dtype });
    }
    const all = this.checkpoint.bytes(t.name);
    if (src) {
      const size = dtypeSize(t.dtype);
      return bytesToFloat32(all.subarray(src.offset, src.offset + src.byteLength), t.dtype, src.byteLength / size);
    }
    return bytesToFloat32(all, t.dtype, t.numel);
  }
}

/** Opens and validates the weights of `dir` against `config`; tensor data stays in the mapping. */
export function openWeights(dir: string, config: ModelConfig, native: WeightNative): CheckpointWeights {
  const ckpt = openCheckpoint(dir, (p) => native.mapFile(p));
  return new CheckpointWeights(ckpt, config, native);
}

/** Validates the weights of `dir` from their headers only (no addon needed); matrix()/vector() then throw. */
export function inspectWeights(dir: string, config: ModelConfig): CheckpointWeights {
  return new CheckpointWeights(openCheckpoint(dir, null), config, null);
}
