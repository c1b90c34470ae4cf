// A random-weight deepseek_v32 checkpoint for benchmarks (the weights' values do not matter for speed,
// only their shapes and dtype). Written once into bench/out/ and reused.

import * as fs from 'node:fs';
import * as path from 'node:path';

import { encodeValues, quantizeFp8Blockwise, writeSafetensors, type TensorSpec } from '../test/helpers/safetensors-writer';

/** ~57M parameters: the "~50M deepseek_v32 config" for the CPU benchmark. */
export const BENCH_50M_CONFIG = {
  model_type: 'deepseek_v32',
  architectures: ['DeepseekV32ForCausalLM'],
  vocab_size: 16384,
  hidden_size: 512,
  intermediate_size: 1536,
  moe_intermediate_size: 160,
  num_hidden_layers: 8,
  num_attention_heads: 8,
  num_key_value_heads: 8,
  n_shared_experts: 1,
  n_routed_experts: 16,
  routed_scaling_factor: 2.5,
  kv_lora_rank: 256,
  q_lora_rank: 256,
  qk_rope_head_dim: 32,
  qk_nope_head_dim: 64,
  v_head_dim: 64,
  n_group: 4,
  topk_group: 2,
  num_experts_per_tok: 2,
  first_k_dense_replace: 1,
  norm_topk_prob: true,
  hidden_act: 'silu',
  max_position_embeddings: 65536,
  rms_norm_eps: 1e-6,
  tie_word_embeddings: false,
  index_n_heads: 4,
  index_head_dim: 64,
  index_topk: 2048,
  rope_parameters: {
    rope_type: 'yarn',
    rope_theta: 10000,
    factor: 16,
    original_max_position_embeddings: 4096,
    beta_fast: 32,
    beta_slow: 1,
    mscale: 1,
    mscale_all_dim: 1,
  },
  bos_token_id: 0,
  eos_token_id: 1,
  torch_dtype: 'bfloat16',
};

type Cfg = typeof BENCH_50M_CONFIG;

/** Every tensor of the config with its shape, in HF / DeepSeek naming. */
export function tensorShapes(c: Cfg): [string, number[]][] {
  const out: [string, number[]][] = [];
  const D = c.hidden_size;
  const H = c.num_attention_heads;
  const qHead = c.qk_nope_head_dim + c.qk_rope_head_dim;
  out.push(['model.embed_tokens.weight', [c.vocab_size, D]]);
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    const a = `${p}.self_attn`;
    out.push([`${p}.input_layernorm.weight`, [D]], [`${p}.post_attention_layernorm.weight`, [D]]);
    out.push([`${a}.q_a_proj.weight`, [c.q_lora_rank, D]], [`${a}.q_a_layernorm.weight`, [c.q_lora_rank]]);
    out.push([`${a}.q_b_proj.weight`, [H * qHead, c.q_lora_rank]]);
    out.push([`${a}.kv_a_proj_with_mqa.weight`, [c.kv_lora_rank + c.qk_rope_head_dim, D]]);
    out.push([`${a}.kv_a_layernorm.weight`, [c.kv_lora_rank]]);
    out.push([`${a}.kv_b_proj.weight`, [H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank]]);
    out.push([`${a}.o_proj.weight`, [D, H * c.v_head_dim]]);
    out.push([`${a}.indexer.wq_b.weight`, [c.index_n_heads * c.index_head_dim, c.q_lora_rank]]);
    out.push([`${a}.indexer.wk.weight`, [c.index_head_dim, D]]);
    out.push([`${a}.indexer.k_norm.weight`, [c.index_head_dim]], [`${a}.indexer.k_norm.bias`, [c.index_head_dim]]);
    out.push([`${a}.indexer.weights_proj.weight`, [c.index_n_heads, D]]);
    const mlp = (prefix: string, inter: number) => {
      out.push([`${prefix}.gate_proj.weight`, [inter, D]], [`${prefix}.up_proj.weight`, [inter, D]]);
      out.push([`${prefix}.down_proj.weight`, [D, inter]]);
    };
    if (l < c.first_k_dense_replace) {
      mlp(`${p}.mlp`, c.intermediate_size);
    } else {
      out.push([`${p}.mlp.gate.weight`, [c.n_routed_experts, D]]);
      out.push([`${p}.mlp.gate.e_score_correction_bias`, [c.n_routed_experts]]);
      for (let e = 0; e < c.n_routed_experts; e++) mlp(`${p}.mlp.experts.${e}`, c.moe_intermediate_size);
      mlp(`${p}.mlp.shared_experts`, c.moe_intermediate_size * c.n_shared_experts);
    }
  }
  out.push(['model.norm.weight', [D]], ['lm_head.weight', [c.vocab_size, D]]);
  return out;
}

/** Deterministic pseudo-random normal values (xorshift + Box–Muller), so the file is reproducible. */
function gaussian(n: number, std: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(next()));
    const th = 2 * Math.PI * next();
    out[i] = r * Math.cos(th) * std;
    if (i + 1 < n) out[i + 1] = r * Math.sin(th) * std;
  }
  return out;
}

/** Weight precision of the random checkpoint: all bf16, or DeepSeek's FP8 format (e4m3 matrices with a
 *  `weight_scale_inv` per 128×128 block; the embedding, the LM head and the router stay bf16, as in DeepSeek-V3.2's
 *  own checkpoints). */
export type BenchWeights = 'bf16' | 'fp8';

/** DeepSeek's FP8 block format, as its checkpoints' config.json declares it. */
const FP8_QUANTIZATION_CONFIG = { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [128, 128] };

/** Whether a tensor is one of the matrices DeepSeek's checkpoints store in FP8. */
export function isFp8Matrix(name: string, shape: readonly number[]): boolean {
  return shape.length === 2 && !name.includes('embed_tokens') && !name.startsWith('lm_head') &&
    !name.includes('weights_proj') && !name.endsWith('mlp.gate.weight');
}

/** Writes config.json + model.safetensors (bf16 or FP8 weights) into dir unless they are already there. */
export function ensureRandomModel(dir: string, config: Cfg = BENCH_50M_CONFIG, weights: BenchWeights = 'bf16'): string {
  const marker = path.join(dir, 'model.safetensors');
  if (fs.existsSync(marker) && fs.existsSync(path.join(dir, 'config.json'))) return dir;
  fs.mkdirSync(dir, { recursive: true });
  const tensors: TensorSpec[] = [];
  let seed = 1;
  for (const [name, shape] of tensorShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    let values: Float32Array;
    if (name.endsWith('norm.weight') || name.endsWith('layernorm.weight')) values = new Float32Array(n).fill(1);
    else if (name.endsWith('.bias')) values = new Float32Array(n);
    else values = gaussian(n, shape.length === 2 ? 1 / Math.sqrt(shape[1]) : 0.02, seed++);
    if (weights === 'fp8' && isFp8Matrix(name, shape)) {
      const q = quantizeFp8Blockwise(values, shape[0]!, shape[1]!);
      tensors.push({ name, dtype: 'F8_E4M3', shape, data: q.data });
      tensors.push({ name: `${name}_scale_inv`, dtype: 'F32', shape: q.scaleShape, data: encodeValues(q.scaleInv, 'F32') });
      continue;
    }
    tensors.push({ name, dtype: name.includes('weights_proj') || name.includes('e_score') ? 'F32' : 'BF16', shape, values });
  }
  writeSafetensors(marker, tensors);
  const written = weights === 'fp8' ? { ...config, quantization_config: FP8_QUANTIZATION_CONFIG } : config;
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(written, null, 2));
  return dir;
}
