import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import test from 'node:test';

import { parseConfig, readConfig } from '../../sidecar/src/engine/config';
import { tempDir, tinyConfig } from '../helpers/tiny-model';
import { expectError } from '../helpers/errors';

const FILE = 'config.json';

/** DeepSeek-V3.2-Exp's HF config.json (the fields that matter), legacy rope_scaling form. */
function v32Full(): Record<string, unknown> {
  return {
    architectures: ['DeepseekV32ForCausalLM'],
    model_type: 'deepseek_v32',
    vocab_size: 129280,
    hidden_size: 7168,
    intermediate_size: 18432,
    moe_intermediate_size: 2048,
    num_hidden_layers: 61,
    num_nextn_predict_layers: 1,
    num_attention_heads: 128,
    num_key_value_heads: 128,
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
    scoring_func: 'sigmoid',
    topk_method: 'noaux_tc',
    hidden_act: 'silu',
    max_position_embeddings: 163840,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    rope_scaling: {
      beta_fast: 32,
      beta_slow: 1,
      factor: 40,
      mscale: 1.0,
      mscale_all_dim: 1.0,
      original_max_position_embeddings: 4096,
      type: 'yarn',
    },
    index_n_heads: 64,
    index_head_dim: 128,
    index_topk: 2048,
    bos_token_id: 0,
    eos_token_id: 1,
    tie_word_embeddings: false,
    quantization_config: { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [128, 128], scale_fmt: 'ue8m0' },
  };
}

/** DeepSeek-V2-Lite's config.json. */
function v2Lite(): Record<string, unknown> {
  return {
    model_type: 'deepseek_v2',
    vocab_size: 102400,
    hidden_size: 2048,
    intermediate_size: 10944,
    moe_intermediate_size: 1408,
    num_hidden_layers: 27,
    num_attention_heads: 16,
    num_key_value_heads: 16,
    n_shared_experts: 2,
    n_routed_experts: 64,
    num_experts_per_tok: 6,
    first_k_dense_replace: 1,
    moe_layer_freq: 1,
    n_group: 1,
    topk_group: 1,
    topk_method: 'greedy',
    scoring_func: 'softmax',
    norm_topk_prob: false,
    routed_scaling_factor: 1.0,
    q_lora_rank: null,
    kv_lora_rank: 512,
    qk_nope_head_dim: 128,
    qk_rope_head_dim: 64,
    v_head_dim: 128,
    max_position_embeddings: 163840,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    rope_scaling: {
      beta_fast: 32,
      beta_slow: 1,
      factor: 40,
      mscale: 0.707,
      mscale_all_dim: 0.707,
      original_max_position_embeddings: 4096,
      type: 'yarn',
    },
    bos_token_id: 100000,
    eos_token_id: 100001,
    tie_word_embeddings: false,
  };
}

/** Hand computation of YaRN inverse frequencies from the formulas, in double precision. */
function yarnByHand(base: number, dim: number, factor: number, orig: number, betaFast: number, betaSlow: number, truncate = true): number[] {
  const corr = (rot: number): number => (dim * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(base));
  let low = corr(betaFast);
  let high = corr(betaSlow);
  if (truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001;
  const out: number[] = [];
  for (let i = 0; i < dim / 2; i++) {
    const pos = Math.pow(base, (2 * i) / dim);
    const ramp = Math.min(Math.max((i - low) / (high - low), 0), 1);
    const extrapolationFactor = 1 - ramp;
    out.push((1 / (factor * pos)) * (1 - extrapolationFactor) + (1 / pos) * extrapolationFactor);
  }
  return out;
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rel = 2e-7): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    assert.ok(Math.abs(a - e) <= rel * Math.abs(e) + 1e-30, `index ${i}: ${a} vs ${e}`);
  }
}


test('DeepSeek-V3.2-Exp config: fields, routing, layer types', () => {
  const c = parseConfig(v32Full(), FILE);
  assert.equal(c.modelType, 'deepseek_v32');
  assert.equal(c.numLayers, 61);
  assert.equal(c.qLoraRank, 1536);
  assert.deepEqual(c.indexer, { nHeads: 64, headDim: 128, topk: 2048 });
  assert.equal(c.mlpLayerTypes.length, 61);
  assert.deepEqual(c.mlpLayerTypes.slice(0, 4), ['dense', 'dense', 'dense', 'sparse']);
  assert.equal(c.mlpLayerTypes.filter((t) => t === 'sparse').length, 58);
  assert.equal(c.scoringFunc, 'sigmoid');
  assert.equal(c.topkMethod, 'noaux_tc');
  assert.equal(c.nGroup, 8);
  assert.equal(c.topkGroup, 4);
  assert.equal(c.normTopkProb, true);
  assert.equal(c.routedScalingFactor, 2.5);
  assert.deepEqual(c.quantization, { method: 'fp8', blockSize: [128, 128] });
  assert.equal(c.bosTokenId, 0);
  assert.deepEqual(c.eosTokenIds, [1]);
  assert.equal(c.tieWordEmbeddings, false);
});

test('DeepSeek-V3.2 YaRN: inverse frequencies, attention factor, MLA softmax scale from the formulas', () => {
  const c = parseConfig(v32Full(), FILE);
  assert.equal(c.rope.type, 'yarn');
  assert.equal(c.rope.invFreq.length, 32);
  // attention_factor = get_mscale(40, 1) / get_mscale(40, 1) = 1
  assert.equal(c.rope.attentionFactor, 1);
  // softmax scale = 192^-0.5 · (0.1·1·ln 40 + 1)² = 0.135234 (anchors b.1)
  const m = 0.1 * 1 * Math.log(40) + 1;
  assert.ok(Math.abs(c.softmaxScale - Math.pow(192, -0.5) * m * m) < 1e-15);
  assert.ok(Math.abs(c.softmaxScale - 0.135234) < 1e-6);
  // correction range: low = floor(64·ln(4096/(32·2π)) / (2 ln 10000)) = 10, high = ceil(64·ln(4096/2π) / (2 ln 10000)) = 23
  const expected = yarnByHand(10000, 64, 40, 4096, 32, 1);
  assertClose(c.rope.invFreq, expected);
  // below `low` the frequencies are untouched, above `high` divided by the factor
  assert.equal(c.rope.invFreq[0], 1);
  assertClose([c.rope.invFreq[10]!], [1 / Math.pow(10000, 20 / 64)]);
  assertClose([c.rope.invFreq[31]!], [1 / (40 * Math.pow(10000, 62 / 64))]);
  // in between: a linear blend with ramp (i − 10) / 13
  const i = 16;
  const ramp = (i - 10) / 13;
  const pos = Math.pow(10000, (2 * i) / 64);
  assertClose([c.rope.invFreq[i]!], [(1 / (40 * pos)) * ramp + (1 / pos) * (1 - ramp)]);
});

test('DeepSeek-V2-Lite: q_proj, softmax/greedy routing, mscale ratio 1, mscale² in the softmax scale', () => {
  const c = parseConfig(v2Lite(), FILE);
  assert.equal(c.modelType, 'deepseek_v2');
  assert.equal(c.qLoraRank, null);
  assert.equal(c.indexer, null);
  assert.equal(c.scoringFunc, 'softmax');
  assert.equal(c.topkMethod, 'greedy');
  assert.equal(c.normTopkProb, false);
  assert.equal(c.routedScalingFactor, 1);
  assert.deepEqual(c.mlpLayerTypes.slice(0, 2), ['dense', 'sparse']);
  assert.deepEqual(c.eosTokenIds, [100001]);
  // get_mscale(40, 0.707) / get_mscale(40, 0.707)
  assert.equal(c.rope.attentionFactor, 1);
  // transformers 5.17 DeepseekV2Attention: yarn_apply_mscale → 192^-0.5 · (0.1·0.707·ln 40 + 1)² = 0.114722 (anchors b.2)
  const m = 0.1 * 0.707 * Math.log(40) + 1;
  assert.equal(c.softmaxScale, Math.pow(192, -0.5) * m * m);
  assert.ok(Math.abs(c.softmaxScale - 0.114722) < 1e-6);
  assertClose(c.rope.invFreq, yarnByHand(10000, 64, 40, 4096, 32, 1));
});

test('deepseek_v3 with default RoPE: inv_freq = 1 / theta^(2i/d), scale = qk_head_dim^-0.5', () => {
  const c = parseConfig(tinyConfig('deepseek_v3', { rope_theta: 50000 }), FILE);
  assert.equal(c.rope.type, 'default');
  assert.equal(c.rope.attentionFactor, 1);
  assertClose(c.rope.invFreq, [0, 1, 2, 3].map((i) => 1 / Math.pow(50000, (2 * i) / 8)));
  assert.equal(c.softmaxScale, Math.pow(16, -0.5));
  assert.equal(c.indexer, null);
  assert.equal(c.maxPositionEmbeddings, 256);
});

test('defaults follow the transformers classes of each type', () => {
  const v32 = parseConfig({ model_type: 'deepseek_v32' }, FILE);
  assert.equal(v32.hiddenSize, 7168);
  assert.equal(v32.maxPositionEmbeddings, 163840);
  assert.deepEqual(v32.indexer, { nHeads: 64, headDim: 128, topk: 2048 });
  assert.equal(v32.mlpLayerTypes.filter((t) => t === 'dense').length, 3);
  const v3 = parseConfig({ model_type: 'deepseek_v3' }, FILE);
  assert.equal(v3.maxPositionEmbeddings, 4096);
  assert.equal(v3.rope.type, 'default');
  const v2 = parseConfig({ model_type: 'deepseek_v2', num_experts_per_tok: 6 }, FILE);
  assert.equal(v2.vocabSize, 32000);
  assert.equal(v2.bosTokenId, 1);
  assert.deepEqual(v2.eosTokenIds, [2]);
  assert.equal(v2.mlpLayerTypes[0], 'sparse'); // first_k_dense_replace defaults to 0
  // more dense layers than layers: all dense, MoE fields not needed
  const allDense = parseConfig(tinyConfig('deepseek_v32', { first_k_dense_replace: 9, n_routed_experts: null }), FILE);
  assert.ok(allDense.mlpLayerTypes.every((t) => t === 'dense'));
});

test('rope_parameters (new style), legacy rope_scaling priority, top-level original_max_position_embeddings', () => {
  const rp = { rope_type: 'yarn', rope_theta: 20000, factor: 8, original_max_position_embeddings: 64, beta_fast: 16, beta_slow: 2, mscale: 1, mscale_all_dim: 0.5 };
  const c = parseConfig(tinyConfig('deepseek_v32', { rope_parameters: rp }), FILE);
  assertClose(c.rope.invFreq, yarnByHand(20000, 8, 8, 64, 16, 2));
  const gm = (s: number, m: number): number => 0.1 * m * Math.log(s) + 1;
  assert.ok(Math.abs(c.rope.attentionFactor - gm(8, 1) / gm(8, 0.5)) < 1e-15);
  assert.ok(Math.abs(c.softmaxScale - Math.pow(16, -0.5) * gm(8, 0.5) * gm(8, 0.5)) < 1e-15);

  // a non-empty rope_scaling wins over rope_parameters; rope_theta then comes from the top level
  const both = parseConfig(tinyConfig('deepseek_v3', { rope_theta: 30000, rope_parameters: rp, rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 64 } }), FILE);
  assertClose(both.rope.invFreq, yarnByHand(30000, 8, 4, 64, 32, 1));
  // mscale absent → attention factor = 0.1 ln(factor) + 1; no mscale_all_dim → scale unchanged
  assert.ok(Math.abs(both.rope.attentionFactor - gm(4, 1)) < 1e-15);
  assert.equal(both.softmaxScale, Math.pow(16, -0.5));

  // a top-level original_max_position_embeddings wins over the rope dict's
  const top = parseConfig(tinyConfig('deepseek_v3', { original_max_position_embeddings: 32, rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 64 } }), FILE);
  assertClose(top.rope.invFreq, yarnByHand(10000, 8, 4, 32, 32, 1));
});

test('YaRN options: explicit attention_factor, truncate false, beta 0 falls back to defaults', () => {
  const c = parseConfig(
    tinyConfig('deepseek_v3', { qk_rope_head_dim: 16, rope_scaling: { rope_type: 'yarn', factor: 16, original_max_position_embeddings: 128, attention_factor: 0.75, truncate: false, beta_fast: 0, beta_slow: 0 } }),
    FILE,
  );
  assert.equal(c.rope.attentionFactor, 0.75);
  assertClose(c.rope.invFreq, yarnByHand(10000, 16, 16, 128, 32, 1, false));
});

test('model_type must be one of the supported ones', () => {
  const e = expectError(() => parseConfig({ model_type: 'llama', architectures: ['LlamaForCausalLM'] }, FILE), 'unknown_model_type', /config\.json/, /"llama"/, /deepseek_v32, deepseek_v3, deepseek_v2/);
  assert.deepEqual(e.details?.supported, ['deepseek_v32', 'deepseek_v3', 'deepseek_v2']);
  expectError(() => parseConfig({}, FILE), 'unknown_model_type', /model_type is nothing/);
  expectError(() => parseConfig([1, 2], FILE), 'bad_config', /expected a JSON object/);
});

test('each bad field gives a bad_config error naming it', () => {
  const cases: [Record<string, unknown>, RegExp[]][] = [
    [{ hidden_size: -1 }, [/"hidden_size"/, /positive integer/, /-1/]],
    [{ hidden_size: 31.5 }, [/"hidden_size"/, /31\.5/]],
    [{ hidden_size: '32' }, [/"hidden_size"/, /"32"/]],
    [{ num_hidden_layers: 0 }, [/"num_hidden_layers"/]],
    [{ vocab_size: null, model_type: 'deepseek_v32' }, []], // null → default: not an error (checked below)
    [{ num_key_value_heads: 1 }, [/num_key_value_heads \(1\) must equal num_attention_heads \(2\)/]],
    [{ n_routed_experts: 5 }, [/n_routed_experts \(5\) must be divisible by n_group \(2\)/]],
    [{ topk_group: 3 }, [/topk_group \(3\) exceeds n_group \(2\)/]],
    [{ num_experts_per_tok: 8 }, [/num_experts_per_tok \(8\) exceeds n_routed_experts \(4\)/]],
    [{ n_routed_experts: 8, n_group: 4, topk_group: 1, num_experts_per_tok: 3 }, [/num_experts_per_tok \(3\) exceeds the experts in the topk_group \(1\)/]],
    [{ n_group: 4 }, [/at least 2 experts/]],
    [{ qk_rope_head_dim: 7 }, [/qk_rope_head_dim must be even/]],
    [{ mlp_layer_types: ['dense'] }, [/mlp_layer_types must be a list of num_hidden_layers \(2\)/]],
    [{ mlp_layer_types: ['dense', 'moe'] }, [/mlp_layer_types/]],
    [{ rms_norm_eps: 0 }, [/"rms_norm_eps"/, /> 0/]],
    [{ routed_scaling_factor: -1 }, [/"routed_scaling_factor"/]],
    [{ hidden_act: 'gelu' }, [/"hidden_act" is "gelu"/, /"silu"/]],
    [{ attention_bias: true }, [/"attention_bias"/]],
    [{ rope_interleave: false }, [/"rope_interleave"/, /interleaved/]],
    [{ moe_layer_freq: 2 }, [/"moe_layer_freq"/]],
    [{ scoring_func: 'softmax' }, [/"scoring_func" is "softmax"/, /sigmoid/]],
    [{ topk_method: 'greedy' }, [/"topk_method" is "greedy"/, /noaux_tc/]],
    [{ eos_token_id: 64 }, [/eos_token_id 64 is outside the vocabulary \(vocab_size 64\)/]],
    [{ eos_token_id: 'x' }, [/"eos_token_id"/]],
    [{ bos_token_id: [0, 1] }, [/bos_token_id must be a single id/]],
    [{ tie_word_embeddings: 'no' }, [/"tie_word_embeddings" must be true or false/]],
    [{ q_lora_rank: null }, [/deepseek_v32 needs q_lora_rank/]],
    [{ index_head_dim: 4 }, [/index_head_dim \(4\) must be at least qk_rope_head_dim \(8\)/]],
    [{ index_topk: 0 }, [/"index_topk"/]],
    [{ max_position_embeddings: -5 }, [/"max_position_embeddings"/]],
    [{ quantization_config: { quant_method: 'gptq', bits: 4 } }, [/quant_method is "gptq"/, /only DeepSeek FP8/]],
    [{ quantization_config: { quant_method: 'fp8', weight_block_size: [64, 64] } }, [/weight_block_size must be \[128, 128\]/, /\[64,64\]/]],
    [{ quantization_config: { quant_method: 'fp8', fmt: 'e5m2', weight_block_size: [128, 128] } }, [/fmt is "e5m2"/]],
    [{ rope_scaling: { type: 'linear', factor: 2 } }, [/rope_type is "linear"/, /"default" and "yarn"/]],
    [{ rope_scaling: { type: 'yarn', original_max_position_embeddings: 64 } }, [/YaRN needs field "rope_scaling\.factor"/]],
    [{ rope_scaling: { type: 'yarn', factor: 0.5 } }, [/"rope_scaling\.factor" must be a number ≥ 1/]],
    [{ rope_scaling: { type: 'yarn', factor: 4, truncate: 'yes' } }, [/"rope_scaling\.truncate"/]],
    [{ rope_scaling: 'yarn' }, [/"rope_scaling" must be an object/]],
    [{ rope_theta: -1 }, [/"rope_theta"/]],
    [{ partial_rotary_factor: 0.5 }, [/partial_rotary_factor is 0\.5/]],
  ];
  for (const [override, patterns] of cases) {
    const json = tinyConfig('deepseek_v32', override);
    if (patterns.length === 0) {
      assert.doesNotThrow(() => parseConfig(json, FILE));
      continue;
    }
    try {
      expectError(() => parseConfig(json, FILE), 'bad_config', /^config\.json: /, ...patterns);
    } catch (e) {
      throw new Error(`case ${JSON.stringify(override)}: ${(e as Error).message}`);
    }
  }
});

test('deepseek_v2 rejects what transformers would silently ignore', () => {
  expectError(() => parseConfig(tinyConfig('deepseek_v2', { scoring_func: 'sigmoid' }), FILE), 'bad_config', /"scoring_func" is "sigmoid"/);
  expectError(() => parseConfig(tinyConfig('deepseek_v2', { norm_topk_prob: true }), FILE), 'bad_config', /"norm_topk_prob"/, /does not renormalise/);
  expectError(() => parseConfig(tinyConfig('deepseek_v2', { topk_method: 'noaux_tc' }), FILE), 'bad_config', /topk_method is "noaux_tc"/);
  expectError(() => parseConfig(tinyConfig('deepseek_v2', { num_experts_per_tok: null }), FILE), 'bad_config', /"num_experts_per_tok"/, /1 layer\(s\) are MoE/);
  const g = parseConfig(tinyConfig('deepseek_v2', { topk_method: 'group_limited_greedy', n_group: 2, topk_group: 1 }), FILE);
  assert.equal(g.topkMethod, 'group_limited_greedy');
  assert.equal(g.scoringFunc, 'softmax');
});

test('readConfig: missing directory, missing file, invalid JSON', () => {
  const dir = tempDir();
  try {
    expectError(() => readConfig(path.join(dir, 'nope')), 'missing_file', /model directory .*nope does not exist/);
    expectError(() => readConfig(dir), 'missing_file', /config\.json does not exist/, /not a Hugging Face model directory/);
    fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type": "deepseek_v3",');
    expectError(() => readConfig(dir), 'bad_config', /config\.json is not valid JSON/);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(tinyConfig('deepseek_v3')));
    const c = readConfig(dir);
    assert.equal(c.modelType, 'deepseek_v3');
    assert.equal((c.raw as { model_type: string }).model_type, 'deepseek_v3');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('num_experts / num_local_experts alias n_routed_experts for deepseek_v32', () => {
  const c = parseConfig(tinyConfig('deepseek_v32', { n_routed_experts: undefined, num_local_experts: 8, n_group: 2 }), FILE);
  assert.equal(c.nRoutedExperts, 8);
  const d = parseConfig(tinyConfig('deepseek_v32', { num_experts: 6, n_group: 3 }), FILE);
  assert.equal(d.nRoutedExperts, 6);
});
