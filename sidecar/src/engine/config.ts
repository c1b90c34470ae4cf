// config.json → ModelConfig, with Hugging Face transformers 5.x semantics for deepseek_v32, deepseek_v3 and
// deepseek_v2 (defaults, legacy `rope_scaling`, YaRN tables, MLA softmax scale, MoE routing). Every field the
// engine uses is validated; a contradiction is a GlanceError('bad_config') that names the file and field.
//
// Where transformers silently ignores a field that would change the model (deepseek_v2's `scoring_func` and
// `norm_topk_prob`, deepseek_v3's `scoring_func` / `topk_method`, `rope_interleave`, `moe_layer_freq`), a value
// that contradicts what transformers computes is rejected instead of being ignored, so that our numbers can
// always be compared with transformers'.
//
// Checked against transformers 5.17 + torch 2.11 (GPU host, 2026-11-22) on 14 configs (V3.2-Exp, V3, V2-Lite,
// tiny variants): attention factor, MLA softmax scale and MLP layer types equal bit for bit; inv_freq equal bit for
// bit except 1 ulp in one entry for two unusual thetas (torch's vectorised pow is not correctly rounded).

import * as fs from 'node:fs';
import * as path from 'node:path';

import type { RouterMethod, RouterScoring } from '../native/contract';
import { GlanceError, describeValue } from './errors';
import type { ModelConfig, ModelType, RopeTables } from './types';

export const SUPPORTED_MODEL_TYPES: readonly ModelType[] = ['deepseek_v32', 'deepseek_v3', 'deepseek_v2'];

type Json = Record<string, unknown>;

/** Class defaults of the three transformers configs (DeepseekV32Config, DeepseekV3Config, DeepseekV2Config). */
interface Defaults {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  moe_intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  n_shared_experts: number | null;
  n_routed_experts: number | null;
  routed_scaling_factor: number;
  kv_lora_rank: number;
  q_lora_rank: number | null;
  qk_rope_head_dim: number;
  v_head_dim: number;
  qk_nope_head_dim: number;
  n_group: number | null;
  topk_group: number | null;
  num_experts_per_tok: number | null;
  first_k_dense_replace: number;
  norm_topk_prob: boolean;
  max_position_embeddings: number;
  rms_norm_eps: number;
  bos_token_id: number | null;
  eos_token_id: number | null;
}

const V3_DEFAULTS: Defaults = {
  vocab_size: 129280,
  hidden_size: 7168,
  intermediate_size: 18432,
  moe_intermediate_size: 2048,
  num_hidden_layers: 61,
  num_attention_heads: 128,
  n_shared_experts: 1,
  n_routed_experts: 256,
  routed_scaling_factor: 2.5,
  kv_lora_rank: 512,
  q_lora_rank: 1536,
  qk_rope_head_dim: 64,
  v_head_dim: 128,
  qk_nope_head_dim: 128,
  n_group: 8,
  topk_group: 4,
  num_experts_per_tok: 8,
  first_k_dense_replace: 3,
  norm_topk_prob: true,
  max_position_embeddings: 4096,
  rms_norm_eps: 1e-6,
  bos_token_id: 0,
  eos_token_id: 1,
};

const DEFAULTS: Record<ModelType, Defaults> = {
  deepseek_v3: V3_DEFAULTS,
  deepseek_v32: { ...V3_DEFAULTS, max_position_embeddings: 163840 },
  deepseek_v2: {
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 11008,
    moe_intermediate_size: 1407,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    n_shared_experts: 2,
    n_routed_experts: 64,
    routed_scaling_factor: 1.0,
    kv_lora_rank: 512,
    q_lora_rank: 1536,
    qk_rope_head_dim: 64,
    v_head_dim: 128,
    qk_nope_head_dim: 128,
    n_group: null,
    topk_group: null,
    num_experts_per_tok: null,
    first_k_dense_replace: 0,
    norm_topk_prob: false,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-6,
    bos_token_id: 1,
    eos_token_id: 2,
  },
};

const INDEXER_DEFAULTS = { index_n_heads: 64, index_head_dim: 128, index_topk: 2048 };
const DEFAULT_ROPE_THETA = 10000.0;

// ---------------------------------------------------------------------------------------------------------------
// field readers

class Reader {
  constructor(readonly obj: Json, readonly file: string, readonly prefix = '') {}

  private fail(key: string, expected: string, found: unknown): never {
    throw new GlanceError(
      'bad_config',
      `${this.file}: field "${this.prefix}${key}" must be ${expected}; found ${describeValue(found)}`,
      { file: this.file, field: this.prefix + key, expected, found },
    );
  }

  has(key: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.obj, key) && this.obj[key] !== undefined;
  }

  /** An integer ≥ min; null/absent gives the default (which may be null). */
  int(key: string, def: number | null, min = 1): number | null {
    const v = this.obj[key];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
      this.fail(key, min === 1 ? 'a positive integer' : `an integer ≥ ${min}`, v);
    }
    return v;
  }

  reqInt(key: string, def: number | null, min = 1, why = ''): number {
    const v = this.int(key, def, min);
    if (v === null) this.fail(key, `${min === 1 ? 'a positive integer' : `an integer ≥ ${min}`}${why}`, this.obj[key]);
    return v;
  }

  num(key: string, def: number | null, check?: { gt?: number; ge?: number }): number | null {
    const v = this.obj[key];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, 'a finite number', v);
    if (check?.gt !== undefined && !(v > check.gt)) this.fail(key, `a number > ${check.gt}`, v);
    if (check?.ge !== undefined && !(v >= check.ge)) this.fail(key, `a number ≥ ${check.ge}`, v);
    return v;
  }

  bool(key: string, def: boolean): boolean {
    const v = this.obj[key];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'boolean') this.fail(key, 'true or false', v);
    return v;
  }

  str(key: string, def: string | null): string | null {
    const v = this.obj[key];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'string') this.fail(key, 'a string', v);
    return v;
  }

  /** The value must be one of `allowed` when present (HF ignores it, or only supports these). */
  oneOf<T extends string | number | boolean>(key: string, allowed: readonly T[], why: string): void {
    const v = this.obj[key];
    if (v === undefined || v === null) return;
    if (!allowed.includes(v as T)) {
      throw new GlanceError(
        'bad_config',
        `${this.file}: field "${this.prefix}${key}" is ${describeValue(v)}, but only ${allowed
          .map((a) => JSON.stringify(a))
          .join(' or ')} is supported: ${why}`,
        { file: this.file, field: this.prefix + key, found: v, allowed },
      );
    }
  }
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function badConfig(file: string, field: string, message: string, extra?: Record<string, unknown>): GlanceError {
  return new GlanceError('bad_config', `${file}: ${message}`, { file, field, ...extra });
}

// ---------------------------------------------------------------------------------------------------------------
// RoPE (transformers modeling_rope_utils: _compute_default_rope_parameters / _compute_yarn_parameters)

const f32 = Math.fround;

/** get_mscale(scale, mscale) of transformers' YaRN code (also DeepSeek's yarn_get_mscale). */
export function getMscale(scale: number, mscale = 1): number {
  if (scale <= 1) return 1.0;
  return 0.1 * mscale * Math.log(scale) + 1.0;
}

/** `base ** (torch.arange(0, dim, 2).float() / dim)` in float32, as torch computes it on the CPU. */
function posFreqs(base: number, dim: number): Float32Array {
  const half = dim >> 1;
  const out = new Float32Array(half);
  const b = f32(base);
  for (let i = 0; i < half; i++) {
    const e = f32((2 * i) / dim);
    out[i] = f32(Math.pow(b, e));
  }
  return out;
}

/** Default RoPE: inv_freq = 1 / base^(2i/dim), fp32. */
export function defaultInvFreq(base: number, dim: number): Float32Array {
  const p = posFreqs(base, dim);
  const out = new Float32Array(p.length);
  for (let i = 0; i < p.length; i++) out[i] = f32(1 / p[i]!);
  return out;
}

export interface YarnParams {
  base: number;
  dim: number;
  factor: number;
  originalMaxPositionEmbeddings: number;
  betaFast: number;
  betaSlow: number;
  truncate: boolean;
  attentionFactor: number;
}

/** YaRN inverse frequencies exactly as transformers computes them (fp32 tensor ops, Python-double range). */
export function yarnInvFreq(p: YarnParams): Float32Array {
  const { base, dim, factor } = p;
  const findCorrectionDim = (numRotations: number): number =>
    (dim * Math.log(p.originalMaxPositionEmbeddings / (numRotations * 2 * Math.PI))) / (2 * Math.log(base));
  let low = findCorrectionDim(p.betaFast);
  let high = findCorrectionDim(p.betaSlow);
  if (p.truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001; // "Prevent singularity"

  const pos = posFreqs(base, dim);
  const half = pos.length;
  const fFactor = f32(factor);
  const fLow = f32(low);
  const fRange = f32(high - low);
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const extrapolation = f32(1 / pos[i]!);
    const interpolation = f32(1 / f32(fFactor * pos[i]!));
    let ramp = f32(f32(i - fLow) / fRange);
    ramp = Math.min(Math.max(ramp, 0), 1);
    const extrapolationFactor = f32(1 - ramp);
    out[i] = f32(
      f32(interpolation * f32(1 - extrapolationFactor)) + f32(extrapolation * extrapolationFactor),
    );
  }
  return out;
}

interface RopeResult {
  rope: RopeTables;
  /** rope parameters after standardisation (for the MLA softmax scale) */
  params: Json;
  ropeType: string;
}

function parseRope(raw: Json, file: string, ropeDim: number, maxPos: number, modelType: ModelType): RopeResult {
  const scaling = raw.rope_scaling;
  const parameters = raw.rope_parameters;
  for (const [key, v] of [['rope_scaling', scaling], ['rope_parameters', parameters]] as const) {
    if (v !== undefined && v !== null && !isObject(v)) {
      throw badConfig(file, key, `field "${key}" must be an object or null; found ${describeValue(v)}`);
    }
  }
  // transformers: `self.rope_parameters = rope_scaling or self.rope_parameters` (a non-empty legacy dict wins)
  let source = 'rope_parameters';
  let rp: Json = {};
  if (isObject(scaling) && Object.keys(scaling).length > 0) {
    rp = { ...scaling };
    source = 'rope_scaling';
  } else if (isObject(parameters)) {
    rp = { ...parameters };
  }
  // Per-layer-type rope dicts ({"deepseek_sparse_attention": {...}}): one shared dict only.
  const layerTypes = new Set<string>(
    Array.isArray(raw.layer_types) ? raw.layer_types.filter((x): x is string => typeof x === 'string') : [],
  );
  if (modelType === 'deepseek_v32') layerTypes.add('deepseek_sparse_attention');
  const keys = Object.keys(rp);
  if (keys.length > 0 && keys.every((k) => layerTypes.has(k))) {
    const dicts = keys.map((k) => rp[k]);
    const first = dicts[0];
    if (!isObject(first) || dicts.some((d) => JSON.stringify(d) !== JSON.stringify(first))) {
      throw badConfig(file, source, `field "${source}" gives different RoPE parameters per layer type; only one set is supported`);
    }
    rp = { ...first };
  }
  const r = new Reader(rp, file, `${source}.`);
  const top = new Reader(raw, file);

  if (!r.has('rope_theta')) rp.rope_theta = top.num('rope_theta', DEFAULT_ROPE_THETA, { gt: 0 });
  const theta = r.num('rope_theta', null, { gt: 0 });
  if (theta === null) throw badConfig(file, `${source}.rope_theta`, `field "${source}.rope_theta" must be a positive number; found null`);
  if (theta === 1) throw badConfig(file, `${source}.rope_theta`, `field "${source}.rope_theta" must not be 1 (log(base) = 0)`);

  const ropeType = r.has('rope_type') ? r.str('rope_type', 'default') : r.str('type', 'default');
  rp.rope_type = ropeType;
  const prf = r.has('partial_rotary_factor') ? r.num('partial_rotary_factor', 1) : top.num('partial_rotary_factor', 1);
  if (prf !== 1) {
    throw badConfig(file, 'partial_rotary_factor', `partial_rotary_factor is ${prf}; DeepSeek models rotate the whole qk_rope_head_dim (1.0)`);
  }

  if (ropeType === 'default') {
    return { rope: { type: 'default', invFreq: defaultInvFreq(theta, ropeDim), attentionFactor: 1.0 }, params: rp, ropeType: 'default' };
  }
  if (ropeType !== 'yarn') {
    throw new GlanceError(
      'bad_config',
      `${file}: ${source}.rope_type is ${JSON.stringify(ropeType)}; supported RoPE types are "default" and "yarn"`,
      { file, field: `${source}.rope_type`, found: ropeType, allowed: ['default', 'yarn'] },
    );
  }

  // original_max_position_embeddings: a top-level field wins (transformers standardize_rope_params), else the
  // rope dict's, else max_position_embeddings.
  let orig: number;
  if (top.has('original_max_position_embeddings')) {
    orig = top.reqInt('original_max_position_embeddings', null);
    rp.original_max_position_embeddings = orig;
  } else {
    orig = r.reqInt('original_max_position_embeddings', maxPos);
    rp.original_max_position_embeddings = orig;
  }
  if (!Object.prototype.hasOwnProperty.call(rp, 'factor')) {
    throw badConfig(file, `${source}.factor`, `YaRN needs field "${source}.factor" (the context extension factor); it is absent`);
  }
  let factor = r.num('factor', null, { ge: 1 });
  if (factor === null) factor = maxPos / orig; // transformers: factor None → max_position_embeddings / original
  rp.factor = factor;
  const attentionFactorCfg = r.num('attention_factor', null, { ge: 0 });
  const mscale = r.num('mscale', null);
  const mscaleAllDim = r.num('mscale_all_dim', null);
  const betaFast = r.num('beta_fast', null) || 32;
  const betaSlow = r.num('beta_slow', null) || 1;
  const truncate = r.bool('truncate', true);
  let attentionFactor: number;
  if (attentionFactorCfg !== null) attentionFactor = attentionFactorCfg;
  else if (mscale && mscaleAllDim) attentionFactor = getMscale(factor, mscale) / getMscale(factor, mscaleAllDim);
  else attentionFactor = getMscale(factor);

  const invFreq = yarnInvFreq({
    base: theta,
    dim: ropeDim,
    factor,
    originalMaxPositionEmbeddings: orig,
    betaFast,
    betaSlow,
    truncate,
    attentionFactor,
  });
  return { rope: { type: 'yarn', invFreq, attentionFactor }, params: rp, ropeType: 'yarn' };
}

// ---------------------------------------------------------------------------------------------------------------

function parseQuantization(raw: Json, file: string): ModelConfig['quantization'] {
  const q = raw.quantization_config;
  if (q === undefined || q === null) return null;
  if (!isObject(q)) throw badConfig(file, 'quantization_config', `field "quantization_config" must be an object; found ${describeValue(q)}`);
  const method = q.quant_method;
  if (method !== 'fp8') {
    throw new GlanceError(
      'bad_config',
      `${file}: quantization_config.quant_method is ${describeValue(method)}; only DeepSeek FP8 ("fp8", e4m3 weights with ` +
        `128×128 block scales) is supported. Use an unquantised (bf16/fp16/fp32) or FP8 checkpoint.`,
      { file, field: 'quantization_config.quant_method', found: method },
    );
  }
  const fmt = q.fmt;
  if (fmt !== undefined && fmt !== null && fmt !== 'e4m3') {
    throw badConfig(file, 'quantization_config.fmt', `quantization_config.fmt is ${describeValue(fmt)}; only "e4m3" is supported`);
  }
  const bs = q.weight_block_size;
  if (!Array.isArray(bs) || bs.length !== 2 || bs[0] !== 128 || bs[1] !== 128) {
    throw badConfig(
      file,
      'quantization_config.weight_block_size',
      `quantization_config.weight_block_size must be [128, 128] (one fp32 scale per 128×128 block); found ${describeValue(bs)}`,
    );
  }
  return { method: 'fp8', blockSize: [128, 128] };
}

function parseTokenIds(raw: Json, file: string, key: string, def: number | null): number[] {
  const v = raw[key] === undefined ? def : raw[key];
  if (v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const id of list) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw badConfig(file, key, `field "${key}" must be a token id (a non-negative integer) or a list of them; found ${describeValue(v)}`);
    }
  }
  return list as number[];
}

/** Parses and validates a config.json object. `file` is only used in messages. */
export function parseConfig(json: unknown, file: string): ModelConfig {
  if (!isObject(json)) {
    throw new GlanceError('bad_config', `${file}: expected a JSON object; found ${describeValue(json)}`, { file });
  }
  const raw = json;
  const mt = raw.model_type;
  if (typeof mt !== 'string' || !(SUPPORTED_MODEL_TYPES as readonly string[]).includes(mt)) {
    const arch = Array.isArray(raw.architectures) ? ` (architectures: ${raw.architectures.join(', ')})` : '';
    throw new GlanceError(
      'unknown_model_type',
      `${file}: model_type is ${describeValue(mt)}${arch}; supported model types are ${SUPPORTED_MODEL_TYPES.join(', ')}`,
      { file, found: mt, supported: [...SUPPORTED_MODEL_TYPES] },
    );
  }
  const modelType = mt as ModelType;
  const d = DEFAULTS[modelType];
  const r = new Reader(raw, file);

  const vocabSize = r.reqInt('vocab_size', d.vocab_size);
  const hiddenSize = r.reqInt('hidden_size', d.hidden_size);
  const numLayers = r.reqInt('num_hidden_layers', d.num_hidden_layers);
  const numHeads = r.reqInt('num_attention_heads', d.num_attention_heads);
  const kvHeads = r.int('num_key_value_heads', numHeads);
  if (kvHeads !== numHeads) {
    throw badConfig(
      file,
      'num_key_value_heads',
      `num_key_value_heads (${kvHeads}) must equal num_attention_heads (${numHeads}): MLA expands one latent KV into every head`,
    );
  }
  // an explicit null means "no query compression" (q_proj); only an absent field takes the class default
  let qLoraRank: number | null = raw.q_lora_rank === null ? null : r.int('q_lora_rank', d.q_lora_rank, 0);
  if (qLoraRank === 0) qLoraRank = null;
  const kvLoraRank = r.reqInt('kv_lora_rank', d.kv_lora_rank);
  const qkNopeHeadDim = r.reqInt('qk_nope_head_dim', d.qk_nope_head_dim);
  const qkRopeHeadDim = r.reqInt('qk_rope_head_dim', d.qk_rope_head_dim);
  if (qkRopeHeadDim % 2 !== 0) {
    throw badConfig(file, 'qk_rope_head_dim', `qk_rope_head_dim must be even (RoPE rotates pairs); found ${qkRopeHeadDim}`);
  }
  const vHeadDim = r.reqInt('v_head_dim', d.v_head_dim);
  const intermediateSize = r.reqInt('intermediate_size', d.intermediate_size);
  const maxPositionEmbeddings = r.reqInt('max_position_embeddings', d.max_position_embeddings);
  const rmsNormEps = r.num('rms_norm_eps', d.rms_norm_eps, { gt: 0 }) as number;
  const tieWordEmbeddings = r.bool('tie_word_embeddings', false);

  r.oneOf('hidden_act', ['silu'], 'the MLPs are SwiGLU (silu(gate)·up)');
  r.oneOf('attention_bias', [false], 'attention projections without bias');
  r.oneOf('mlp_bias', [false], 'MLP projections without bias');
  r.oneOf('rope_interleave', [true], 'MLA RoPE is interleaved (pairs 2i, 2i+1)');
  r.oneOf('moe_layer_freq', [1], 'transformers places an MoE block in every layer from first_k_dense_replace on');

  // MLP layer types
  const firstKDense = r.reqInt('first_k_dense_replace', d.first_k_dense_replace, 0);
  let mlpLayerTypes: ('dense' | 'sparse')[];
  const mlt = raw.mlp_layer_types;
  if (mlt !== undefined && mlt !== null) {
    if (!Array.isArray(mlt) || mlt.length !== numLayers || !mlt.every((t) => t === 'dense' || t === 'sparse')) {
      throw badConfig(
        file,
        'mlp_layer_types',
        `mlp_layer_types must be a list of num_hidden_layers (${numLayers}) entries, each "dense" or "sparse"; found ${describeValue(mlt)}`,
      );
    }
    mlpLayerTypes = mlt as ('dense' | 'sparse')[];
  } else {
    const nDense = Math.min(firstKDense, numLayers);
    mlpLayerTypes = Array.from({ length: numLayers }, (_, i) => (i < nDense ? 'dense' : 'sparse'));
  }
  const moeLayers = mlpLayerTypes.reduce((n, t) => n + (t === 'sparse' ? 1 : 0), 0);
  const needMoe = moeLayers > 0;
  const why = needMoe ? ` (${moeLayers} layer(s) are MoE)` : '';

  // alias fields (DeepseekV32Config.attribute_map / BC kwargs)
  let nRoutedRaw: unknown = raw.n_routed_experts;
  if (modelType === 'deepseek_v32') {
    if (raw.num_experts !== undefined && raw.num_experts !== null) nRoutedRaw = raw.num_experts;
    else if ((nRoutedRaw === undefined || nRoutedRaw === null) && raw.num_local_experts !== undefined) nRoutedRaw = raw.num_local_experts;
  }
  const moeReader = new Reader({ ...raw, n_routed_experts: nRoutedRaw }, file);

  let moeIntermediateSize = 0;
  let nRoutedExperts = 0;
  let nSharedExperts = 0;
  let numExpertsPerTok = 0;
  let nGroup = 1;
  let topkGroup = 1;
  let routedScalingFactor = 1;
  let normTopkProb = false;
  let scoringFunc: RouterScoring;
  let topkMethod: RouterMethod;

  if (modelType === 'deepseek_v2') {
    r.oneOf('scoring_func', ['softmax'], 'transformers routes deepseek_v2 with a softmax over the router logits');
    const method = r.str('topk_method', 'greedy');
    if (method !== 'greedy' && method !== 'group_limited_greedy') {
      throw badConfig(file, 'topk_method', `topk_method is ${describeValue(method)}; deepseek_v2 supports "greedy" and "group_limited_greedy"`);
    }
    r.oneOf('norm_topk_prob', [false], 'transformers does not renormalise deepseek_v2 routing weights');
    scoringFunc = 'softmax';
    topkMethod = method;
    normTopkProb = false;
  } else {
    r.oneOf('scoring_func', ['sigmoid'], `transformers routes ${modelType} with sigmoid scores`);
    r.oneOf('topk_method', ['noaux_tc'], `transformers routes ${modelType} with noaux_tc (bias-corrected group top-k)`);
    scoringFunc = 'sigmoid';
    topkMethod = 'noaux_tc';
    normTopkProb = r.bool('norm_topk_prob', d.norm_topk_prob);
  }

  if (needMoe) {
    moeIntermediateSize = r.reqInt('moe_intermediate_size', d.moe_intermediate_size, 1, why);
    nRoutedExperts = moeReader.reqInt('n_routed_experts', d.n_routed_experts, 1, why);
    nSharedExperts = r.reqInt('n_shared_experts', d.n_shared_experts ?? 0, 0);
    numExpertsPerTok = r.reqInt('num_experts_per_tok', d.num_experts_per_tok, 1, why);
    nGroup = r.reqInt('n_group', d.n_group ?? 1);
    topkGroup = r.reqInt('topk_group', d.topk_group ?? 1);
    routedScalingFactor = r.num('routed_scaling_factor', d.routed_scaling_factor, { gt: 0 }) as number;
    if (numExpertsPerTok > nRoutedExperts) {
      throw badConfig(file, 'num_experts_per_tok', `num_experts_per_tok (${numExpertsPerTok}) exceeds n_routed_experts (${nRoutedExperts})`);
    }
    const grouped = topkMethod !== 'greedy';
    if (grouped) {
      if (nRoutedExperts % nGroup !== 0) {
        throw badConfig(file, 'n_group', `n_routed_experts (${nRoutedExperts}) must be divisible by n_group (${nGroup})`);
      }
      if (topkGroup > nGroup) {
        throw badConfig(file, 'topk_group', `topk_group (${topkGroup}) exceeds n_group (${nGroup})`);
      }
      const perGroup = nRoutedExperts / nGroup;
      if (topkMethod === 'noaux_tc' && perGroup < 2) {
        throw badConfig(
          file,
          'n_group',
          `noaux_tc scores each group by the sum of its top 2 experts, so every group needs at least 2 experts; ` +
            `n_routed_experts / n_group = ${nRoutedExperts} / ${nGroup} = ${perGroup}`,
        );
      }
      if (numExpertsPerTok > topkGroup * perGroup) {
        throw badConfig(
          file,
          'num_experts_per_tok',
          `num_experts_per_tok (${numExpertsPerTok}) exceeds the experts in the topk_group (${topkGroup}) selected groups ` +
            `of ${perGroup} experts each (${topkGroup * perGroup})`,
        );
      }
    }
  }

  // Indexer (DSA)
  let indexer: ModelConfig['indexer'] = null;
  if (modelType === 'deepseek_v32') {
    const nHeads = r.reqInt('index_n_heads', INDEXER_DEFAULTS.index_n_heads);
    const headDim = r.reqInt('index_head_dim', INDEXER_DEFAULTS.index_head_dim);
    const topk = r.reqInt('index_topk', INDEXER_DEFAULTS.index_topk);
    if (headDim < qkRopeHeadDim) {
      throw badConfig(
        file,
        'index_head_dim',
        `index_head_dim (${headDim}) must be at least qk_rope_head_dim (${qkRopeHeadDim}): the indexer rotates its first qk_rope_head_dim dims`,
      );
    }
    if (qLoraRank === null) {
      throw badConfig(file, 'q_lora_rank', 'deepseek_v32 needs q_lora_rank: the lightning indexer reads the compressed query (q_a_layernorm output)');
    }
    indexer = { nHeads, headDim, topk };
  }

  const { rope, params: ropeParams, ropeType } = parseRope(raw, file, qkRopeHeadDim, maxPositionEmbeddings, modelType);

  // MLA softmax scale (transformers 5 yarn_apply_mscale, used by DeepseekV2/V3/V32Attention alike):
  // qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)² when RoPE is scaled and mscale_all_dim is set.
  const qkHeadDim = qkNopeHeadDim + qkRopeHeadDim;
  let softmaxScale = Math.pow(qkHeadDim, -0.5);
  if (ropeType !== 'default') {
    const mscaleAllDim = typeof ropeParams.mscale_all_dim === 'number' ? ropeParams.mscale_all_dim : 0;
    const factor = ropeParams.factor as number;
    if (mscaleAllDim) {
      const m = getMscale(factor, mscaleAllDim);
      softmaxScale = softmaxScale * m * m;
    }
  }

  const bos = parseTokenIds(raw, file, 'bos_token_id', d.bos_token_id);
  if (bos.length > 1) throw badConfig(file, 'bos_token_id', `bos_token_id must be a single id; found ${describeValue(raw.bos_token_id)}`);
  const eosTokenIds = parseTokenIds(raw, file, 'eos_token_id', d.eos_token_id);
  for (const [key, ids] of [['bos_token_id', bos], ['eos_token_id', eosTokenIds]] as const) {
    for (const id of ids) {
      if (id >= vocabSize) throw badConfig(file, key, `${key} ${id} is outside the vocabulary (vocab_size ${vocabSize})`);
    }
  }

  return {
    modelType,
    vocabSize,
    hiddenSize,
    numLayers,
    numHeads,
    qLoraRank,
    kvLoraRank,
    qkNopeHeadDim,
    qkRopeHeadDim,
    vHeadDim,
    intermediateSize,
    moeIntermediateSize,
    nRoutedExperts,
    nSharedExperts,
    numExpertsPerTok,
    nGroup,
    topkGroup,
    routedScalingFactor,
    normTopkProb,
    scoringFunc,
    topkMethod,
    mlpLayerTypes,
    rmsNormEps,
    maxPositionEmbeddings,
    tieWordEmbeddings,
    indexer,
    rope,
    softmaxScale,
    quantization: parseQuantization(raw, file),
    bosTokenId: bos.length > 0 ? bos[0]! : null,
    eosTokenIds,
    raw,
  };
}

/** Reads and parses `dir/config.json`. */
export function readConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      const dirExists = fs.existsSync(dir);
      throw new GlanceError(
        'missing_file',
        dirExists ? `${file} does not exist: ${dir} is not a Hugging Face model directory` : `model directory ${dir} does not exist`,
        { file, dir },
      );
    }
    throw new GlanceError('io', `cannot read ${file}: ${(e as Error).message}`, { file }, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new GlanceError('bad_config', `${file} is not valid JSON: ${(e as Error).message}`, { file }, { cause: e });
  }
  return parseConfig(json, file);
}
