// Shared shapes of the engine: the normalised model configuration and the weight store.
// config.ts parses config.json into ModelConfig; weights.ts builds a WeightStore over the safetensors files;
// model.ts runs the forward pass on both.

import type { NativeWeight, RouterMethod, RouterScoring } from '../native/contract';

export type ModelType = 'deepseek_v32' | 'deepseek_v3' | 'deepseek_v2';

/** RoPE tables derived from config (HF transformers semantics, `rope_parameters` / legacy `rope_scaling`). */
export interface RopeTables {
  /** 'default' or 'yarn'. */
  type: 'default' | 'yarn';
  /** inverse frequencies, qk_rope_head_dim / 2 of them */
  invFreq: Float32Array;
  /** multiplies cos and sin (YaRN attention factor; 1 for default rope) */
  attentionFactor: number;
}

export interface ModelConfig {
  modelType: ModelType;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  /** null = no query compression (q_proj) */
  qLoraRank: number | null;
  kvLoraRank: number;
  qkNopeHeadDim: number;
  qkRopeHeadDim: number;
  vHeadDim: number;
  /** intermediate size of the dense MLP layers */
  intermediateSize: number;
  moeIntermediateSize: number;
  nRoutedExperts: number;
  nSharedExperts: number;
  numExpertsPerTok: number;
  nGroup: number;
  topkGroup: number;
  routedScalingFactor: number;
  normTopkProb: boolean;
  scoringFunc: RouterScoring;
  topkMethod: RouterMethod;
  /** per layer: dense MLP or MoE (from mlp_layer_types, else first_k_dense_replace / moe_layer_freq) */
  mlpLayerTypes: ('dense' | 'sparse')[];
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** lightning indexer; null for deepseek_v3 / deepseek_v2 (dense attention only) */
  indexer: { nHeads: number; headDim: number; topk: number } | null;
  rope: RopeTables;
  /** MLA softmax scale: qk_head_dim^-0.5 · mscale(factor, mscale_all_dim)² for YaRN */
  softmaxScale: number;
  /** weight storage: FP8 block quantisation from quantization_config, else null */
  quantization: { method: 'fp8'; blockSize: [number, number] } | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** the raw config.json object, for `info` */
  raw: Record<string, unknown>;
}

/** Tensors of a loaded checkpoint, validated against the config. Names are the HF / DeepSeek names. */
export interface WeightStore {
  /** A 2-D weight registered with the addon; throws GlanceError('missing_tensor') naming `name`. */
  matrix(name: string): NativeWeight;
  /** A small tensor (norm weight, bias, router bias) as fp32; throws when missing. */
  vector(name: string): Float32Array;
  has(name: string): boolean;
  /** total bytes of tensor data on disk, and count of parameters */
  readonly totalBytes: number;
  readonly totalParams: number;
  /** which files the tensors came from (for messages) */
  readonly files: string[];
}
