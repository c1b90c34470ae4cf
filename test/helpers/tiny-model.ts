// Tiny DeepSeek-architecture checkpoints for tests: a config.json object per model type, the tensor list written
// independently of the engine's manifest (so tests check the engine against an outside list), and a writer.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  encodeValues,
  quantizeFp8Blockwise,
  writeSafetensors,
  writeShardedSafetensors,
  type TensorSpec,
  type WriterDType,
} from './safetensors-writer';

export type TinyType = 'deepseek_v32' | 'deepseek_v3' | 'deepseek_v2';

/** A small config of each type (2 layers: one dense, one MoE). */
export function tinyConfig(type: TinyType, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const base: Record<string, unknown> = {
    model_type: type,
    vocab_size: 64,
    hidden_size: 32,
    intermediate_size: 48,
    moe_intermediate_size: 16,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 2,
    n_shared_experts: 1,
    n_routed_experts: 4,
    num_experts_per_tok: 2,
    kv_lora_rank: 16,
    q_lora_rank: 24,
    qk_nope_head_dim: 8,
    qk_rope_head_dim: 8,
    v_head_dim: 8,
    first_k_dense_replace: 1,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-6,
    bos_token_id: 0,
    eos_token_id: 1,
    tie_word_embeddings: false,
    rope_theta: 10000,
  };
  if (type === 'deepseek_v2') {
    Object.assign(base, { topk_method: 'greedy', scoring_func: 'softmax', norm_topk_prob: false, routed_scaling_factor: 1.0, n_group: 1, topk_group: 1 });
  } else {
    Object.assign(base, { topk_method: 'noaux_tc', scoring_func: 'sigmoid', norm_topk_prob: true, routed_scaling_factor: 2.5, n_group: 2, topk_group: 1 });
  }
  if (type === 'deepseek_v32') Object.assign(base, { index_n_heads: 2, index_head_dim: 16, index_topk: 4 });
  return { ...base, ...overrides };
}

function num(c: Record<string, unknown>, k: string): number {
  const v = c[k];
  if (typeof v !== 'number') throw new Error(`tiny config: ${k} is not a number`);
  return v;
}

/** Every tensor name and shape of a tiny config, in HF naming. `packed`: HF 5 packed experts. */
export function tinyTensorShapes(c: Record<string, unknown>, opts: { packed?: boolean } = {}): [string, number[]][] {
  const H = num(c, 'hidden_size');
  const V = num(c, 'vocab_size');
  const nH = num(c, 'num_attention_heads');
  const nope = num(c, 'qk_nope_head_dim');
  const rope = num(c, 'qk_rope_head_dim');
  const v = num(c, 'v_head_dim');
  const kv = num(c, 'kv_lora_rank');
  const q = c.q_lora_rank as number | null;
  const L = num(c, 'num_hidden_layers');
  const E = num(c, 'n_routed_experts');
  const I = num(c, 'intermediate_size');
  const Im = num(c, 'moe_intermediate_size');
  const S = num(c, 'n_shared_experts');
  const k = num(c, 'first_k_dense_replace');
  const out: [string, number[]][] = [['model.embed_tokens.weight', [V, H]]];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    out.push([`${p}input_layernorm.weight`, [H]], [`${p}post_attention_layernorm.weight`, [H]]);
    if (q === null || q === 0) {
      out.push([`${p}self_attn.q_proj.weight`, [nH * (nope + rope), H]]);
    } else {
      out.push([`${p}self_attn.q_a_proj.weight`, [q, H]], [`${p}self_attn.q_a_layernorm.weight`, [q]], [`${p}self_attn.q_b_proj.weight`, [nH * (nope + rope), q]]);
    }
    out.push(
      [`${p}self_attn.kv_a_proj_with_mqa.weight`, [kv + rope, H]],
      [`${p}self_attn.kv_a_layernorm.weight`, [kv]],
      [`${p}self_attn.kv_b_proj.weight`, [nH * (nope + v), kv]],
      [`${p}self_attn.o_proj.weight`, [H, nH * v]],
    );
    if (c.model_type === 'deepseek_v32') {
      const ih = num(c, 'index_n_heads');
      const id = num(c, 'index_head_dim');
      out.push(
        [`${p}self_attn.indexer.wq_b.weight`, [ih * id, q as number]],
        [`${p}self_attn.indexer.wk.weight`, [id, H]],
        [`${p}self_attn.indexer.k_norm.weight`, [id]],
        [`${p}self_attn.indexer.k_norm.bias`, [id]],
        [`${p}self_attn.indexer.weights_proj.weight`, [ih, H]],
      );
    }
    if (l < k) {
      out.push([`${p}mlp.gate_proj.weight`, [I, H]], [`${p}mlp.up_proj.weight`, [I, H]], [`${p}mlp.down_proj.weight`, [H, I]]);
    } else {
      out.push([`${p}mlp.gate.weight`, [E, H]]);
      if (c.model_type !== 'deepseek_v2') out.push([`${p}mlp.gate.e_score_correction_bias`, [E]]);
      if (opts.packed) {
        out.push([`${p}mlp.experts.gate_up_proj`, [E, 2 * Im, H]], [`${p}mlp.experts.down_proj`, [E, H, Im]]);
      } else {
        for (let e = 0; e < E; e++) {
          out.push(
            [`${p}mlp.experts.${e}.gate_proj.weight`, [Im, H]],
            [`${p}mlp.experts.${e}.up_proj.weight`, [Im, H]],
            [`${p}mlp.experts.${e}.down_proj.weight`, [H, Im]],
          );
        }
      }
      if (S > 0) {
        out.push(
          [`${p}mlp.shared_experts.gate_proj.weight`, [Im * S, H]],
          [`${p}mlp.shared_experts.up_proj.weight`, [Im * S, H]],
          [`${p}mlp.shared_experts.down_proj.weight`, [H, Im * S]],
        );
      }
    }
  }
  out.push(['model.norm.weight', [H]]);
  if (c.tie_word_embeddings !== true) out.push(['lm_head.weight', [V, H]]);
  return out;
}

/** Deterministic values: tensor i, element j → a small distinct number. */
export function tinyValues(seed: number, n: number): Float32Array {
  const out = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = (s / 4294967296 - 0.5) * 0.25;
  }
  return out;
}

export interface TinyModelOptions {
  dtype?: WriterDType;
  packed?: boolean;
  /** store 2-D weights as FP8 with weight_scale_inv */
  fp8?: boolean;
  /** split into this many shards (with index.json) */
  shards?: number;
  /** extra tensors to add (e.g. an MTP layer) */
  extra?: TensorSpec[];
  /** drop these names */
  drop?: string[];
  /** change shapes by name */
  reshape?: Record<string, number[]>;
}

export function tinyTensors(c: Record<string, unknown>, opts: TinyModelOptions = {}): TensorSpec[] {
  const dtype = opts.dtype ?? 'BF16';
  const out: TensorSpec[] = [];
  tinyTensorShapes(c, opts.packed ? { packed: true } : {}).forEach(([name, shape0], i) => {
    const shape = opts.reshape?.[name] ?? shape0;
    const n = shape.reduce((a, b) => a * b, 1);
    const values = name.endsWith('norm.weight') || name.endsWith('layernorm.weight') ? new Float32Array(n).fill(1) : tinyValues(i + 1, n);
    const isBias = name.endsWith('e_score_correction_bias');
    if (opts.fp8 && shape.length === 2 && !name.includes('embed_tokens') && !name.includes('weights_proj') && !name.endsWith('mlp.gate.weight')) {
      const q = quantizeFp8Blockwise(values, shape[0]!, shape[1]!);
      out.push({ name, dtype: 'F8_E4M3', shape, data: q.data });
      out.push({ name: `${name}_scale_inv`, dtype: 'F32', shape: q.scaleShape, data: encodeValues(q.scaleInv, 'F32') });
    } else {
      out.push({ name, dtype: isBias ? 'F32' : dtype, shape, values });
    }
  });
  const kept = opts.drop ? out.filter((t) => !opts.drop!.includes(t.name)) : out;
  if (opts.extra) kept.push(...opts.extra);
  return kept;
}

/** Writes config.json and the weights into `dir` (a new temp dir when omitted); returns the dir. */
export function writeTinyModel(c: Record<string, unknown>, opts: TinyModelOptions = {}, dir?: string): string {
  const d = dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'glance-tiny-'));
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(c, null, 2));
  const tensors = tinyTensors(c, opts);
  const n = opts.shards ?? 1;
  if (n <= 1) {
    writeSafetensors(path.join(d, 'model.safetensors'), tensors);
  } else {
    const per = Math.ceil(tensors.length / n);
    const shards: TensorSpec[][] = [];
    for (let i = 0; i < n; i++) shards.push(tensors.slice(i * per, (i + 1) * per));
    writeShardedSafetensors(d, shards);
  }
  return d;
}

export function tempDir(prefix = 'glance-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}
