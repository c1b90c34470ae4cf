import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import test from 'node:test';

import type { NativeWeight, WeightDType } from '../../sidecar/src/native/contract';
import { parseConfig } from '../../sidecar/src/engine/config';
import { bytesToFloat32, expectedTensors, inspectWeights, openWeights, parameterCounts, type WeightNative } from '../../sidecar/src/engine/weights';
import { bf16BitsToF32, e4m3BitsToF32, f32ToBf16Bits } from '../helpers/safetensors-writer';
import { tinyConfig, tinyTensorShapes, tinyValues, writeTinyModel, type TinyModelOptions } from '../helpers/tiny-model';
import { expectError } from '../helpers/errors';

interface FakeWeight extends NativeWeight {
  data: Uint8Array;
  scaleInv: Float32Array | undefined;
}

const SIZE: Record<WeightDType, number> = { F32: 4, BF16: 2, F16: 2, F8_E4M3: 1 };

/** A stand-in for the native addon: maps by reading, records createWeight calls, dequantises in JS. */
function fakeNative(): WeightNative & { created: FakeWeight[] } {
  const created: FakeWeight[] = [];
  return {
    created,
    mapFile(p: string): ArrayBuffer {
      const b = fs.readFileSync(p);
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
    },
    createWeight(data: Uint8Array, dtype: WeightDType, rows: number, cols: number, scaleInv?: Float32Array): NativeWeight {
      assert.equal(data.byteLength, rows * cols * SIZE[dtype], 'createWeight: byteLength = rows·cols·sizeof(dtype)');
      if (dtype === 'F8_E4M3') {
        assert.ok(scaleInv, 'FP8 weights come with scales');
        assert.equal(scaleInv.length, Math.ceil(rows / 128) * Math.ceil(cols / 128));
      }
      const w: FakeWeight = { rows, cols, dtype, data, scaleInv };
      created.push(w);
      return w;
    },
    toFloat32(w: NativeWeight): Float32Array {
      const f = w as FakeWeight;
      const n = f.rows * f.cols;
      if (f.dtype !== 'F8_E4M3') return bytesToFloat32(f.data, f.dtype, n);
      const out = new Float32Array(n);
      const bc = Math.ceil(f.cols / 128);
      for (let r = 0; r < f.rows; r++) {
        for (let c = 0; c < f.cols; c++) out[r * f.cols + c] = e4m3BitsToF32(f.data[r * f.cols + c]!) * f.scaleInv![Math.floor(r / 128) * bc + Math.floor(c / 128)]!;
      }
      return out;
    },
  };
}


function withModel(cfg: Record<string, unknown>, opts: TinyModelOptions, fn: (dir: string) => void): void {
  const dir = writeTinyModel(cfg, opts);
  try {
    fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const bf16 = (v: number): number => bf16BitsToF32(f32ToBf16Bits(v));

/** Values the tiny model writer stored for `name` (the i-th tensor of the list gets seed i + 1). */
function writtenValues(cfg: Record<string, unknown>, name: string, opts: { packed?: boolean } = {}): Float32Array {
  const shapes = tinyTensorShapes(cfg, opts);
  const i = shapes.findIndex(([n]) => n === name);
  assert.ok(i >= 0, name);
  const n = shapes[i]![1].reduce((a, b) => a * b, 1);
  return tinyValues(i + 1, n);
}

for (const type of ['deepseek_v32', 'deepseek_v3', 'deepseek_v2'] as const) {
  test(`${type}: a complete checkpoint validates; matrices and vectors come from the mapping`, () => {
    const cfgJson = tinyConfig(type, type === 'deepseek_v2' ? { q_lora_rank: null } : {});
    withModel(cfgJson, {}, (dir) => {
      const config = parseConfig(cfgJson, 'config.json');
      const native = fakeNative();
      const w = openWeights(dir, config, native);
      assert.deepEqual(w.extras, []);
      assert.equal(w.expertLayout, 'per-expert');
      const shapes = tinyTensorShapes(cfgJson);
      const params = shapes.reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1), 0);
      assert.equal(w.totalParams, params);
      assert.equal(w.totalParams, parameterCounts(config).total);
      assert.equal(expectedTensors(config).length, shapes.length, 'manifest = independent tensor list');
      assert.equal(native.created.length, 0, 'weights are registered lazily');

      const name = 'model.layers.1.mlp.experts.3.up_proj.weight';
      const m = w.matrix(name) as FakeWeight;
      assert.equal(m.rows, 16);
      assert.equal(m.cols, 32);
      assert.equal(m.dtype, 'BF16');
      assert.equal(w.matrix(name), m, 'cached');
      assert.equal(native.created.length, 1);
      const expected = writtenValues(cfgJson, name);
      assert.deepEqual(Array.from(bytesToFloat32(m.data, 'BF16', 16 * 32)), Array.from(expected, bf16));

      assert.deepEqual(Array.from(w.vector('model.norm.weight')), new Array(32).fill(1));
      if (type !== 'deepseek_v2') {
        const bias = w.vector('model.layers.1.mlp.gate.e_score_correction_bias');
        assert.deepEqual(Array.from(bias), Array.from(writtenValues(cfgJson, 'model.layers.1.mlp.gate.e_score_correction_bias')));
      }
      if (type === 'deepseek_v32') assert.ok(w.has('model.layers.0.self_attn.indexer.k_norm.bias'));
      if (type === 'deepseek_v2') assert.ok(w.has('model.layers.0.self_attn.q_proj.weight'));
      expectError(() => w.matrix('model.layers.9.mlp.gate.weight'), 'missing_tensor', /no tensor model\.layers\.9\.mlp\.gate\.weight in model\.safetensors/);
    });
  });
}

test('missing tensor: names the tensor, why it is needed, its shape and the files searched', () => {
  const cfg = tinyConfig('deepseek_v32');
  withModel(cfg, { shards: 3, drop: ['model.layers.1.mlp.experts.2.down_proj.weight', 'model.norm.weight'] }, (dir) => {
    const e = expectError(
      () => openWeights(dir, parseConfig(cfg, 'config.json'), fakeNative()),
      'missing_tensor',
      /missing tensor model\.layers\.1\.mlp\.experts\.2\.down_proj\.weight/,
      /layer 1 is MoE/,
      /expert 2 of n_routed_experts=4/,
      /expected shape \[hidden_size = 32, moe_intermediate_size = 16\]/,
      /searched model-00001-of-00003\.safetensors, model-00002-of-00003\.safetensors, model-00003-of-00003\.safetensors/,
      /1 more expected tensor\(s\) are missing too/,
    );
    assert.equal(e.details?.missingCount, 2);
  });
});

test('missing tensor hints: fewer layers than the config, non-HF names', () => {
  const cfg = tinyConfig('deepseek_v3');
  withModel(cfg, {}, (dir) => {
    const more = parseConfig({ ...cfg, num_hidden_layers: 3 }, 'config.json');
    expectError(() => openWeights(dir, more, fakeNative()), 'missing_tensor', /missing tensor model\.layers\.2\.input_layernorm\.weight/, /checkpoint has layers 0\.\.1 only, but config num_hidden_layers is 3/);
  });
  const dir = writeTinyModel(cfg, { drop: tinyTensorShapes(cfg).map(([n]) => n), extra: [{ name: 'embed.weight', dtype: 'BF16', shape: [64, 32] }] });
  try {
    expectError(() => openWeights(dir, parseConfig(cfg, 'config.json'), fakeNative()), 'missing_tensor', /does not use Hugging Face tensor names/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('shape contradicting the config names the tensor, the config fields and the found shape', () => {
  const cfg = tinyConfig('deepseek_v32');
  withModel(cfg, { reshape: { 'model.layers.0.self_attn.kv_b_proj.weight': [24, 16] } }, (dir) => {
    expectError(
      () => openWeights(dir, parseConfig(cfg, 'config.json'), fakeNative()),
      'shape_mismatch',
      /tensor model\.layers\.0\.self_attn\.kv_b_proj\.weight in model\.safetensors has shape \[24, 16\]/,
      /config implies \[num_attention_heads·\(qk_nope_head_dim\+v_head_dim\) = 2·\(8\+8\) = 32, kv_lora_rank = 16\]/,
    );
  });
  withModel(cfg, {}, (dir) => {
    // the checkpoint is right, the config is not
    const wrong = parseConfig({ ...cfg, hidden_size: 40 }, 'config.json');
    expectError(() => openWeights(dir, wrong, fakeNative()), 'shape_mismatch', /model\.embed_tokens\.weight .* has shape \[64, 32\], but the config implies \[vocab_size = 64, hidden_size = 40\]/);
    const idx = parseConfig({ ...cfg, index_n_heads: 4 }, 'config.json');
    expectError(() => openWeights(dir, idx, fakeNative()), 'shape_mismatch', /indexer\.wq_b\.weight .* \[index_n_heads·index_head_dim = 4·16 = 64, q_lora_rank = 24\]/);
  });
});

test('unusable dtypes are rejected for their role', () => {
  const cfg = tinyConfig('deepseek_v3');
  withModel(cfg, { drop: ['model.norm.weight'], extra: [{ name: 'model.norm.weight', dtype: 'I32', shape: [32] }] }, (dir) => {
    expectError(() => openWeights(dir, parseConfig(cfg, 'config.json'), fakeNative()), 'bad_weight', /model\.norm\.weight in model\.safetensors has dtype I32; a norm\/bias vector must be F32, BF16, F16/);
  });
});

test('extras (e.g. the MTP layer) are ignored, listed, and not counted', () => {
  const cfg = tinyConfig('deepseek_v32');
  const extra = [
    { name: 'model.layers.2.eh_proj.weight', dtype: 'BF16', shape: [32, 64] },
    { name: 'model.layers.2.enorm.weight', dtype: 'BF16', shape: [32] },
  ];
  withModel(cfg, { extra }, (dir) => {
    const w = openWeights(dir, parseConfig(cfg, 'config.json'), fakeNative());
    assert.deepEqual(w.extras, ['model.layers.2.eh_proj.weight', 'model.layers.2.enorm.weight']);
    assert.equal(w.totalParams, parameterCounts(parseConfig(cfg, 'config.json')).total);
    assert.equal(w.totalBytes, w.totalParams * 2 + 4 * 4 /* F32 e_score_correction_bias */ - 4 * 2);
  });
});

test('HF transformers 5 packed experts become per-expert slices of the same mapping', () => {
  const cfg = tinyConfig('deepseek_v3');
  withModel(cfg, { packed: true }, (dir) => {
    const config = parseConfig(cfg, 'config.json');
    const native = fakeNative();
    const w = openWeights(dir, config, native);
    assert.equal(w.expertLayout, 'packed');
    assert.deepEqual(w.extras, []);
    assert.equal(w.totalParams, parameterCounts(config).total);
    const E = 4;
    const I = 16;
    const H = 32;
    const gateUp = Array.from(writtenValues(cfg, 'model.layers.1.mlp.experts.gate_up_proj', { packed: true }), bf16);
    const down = Array.from(writtenValues(cfg, 'model.layers.1.mlp.experts.down_proj', { packed: true }), bf16);
    for (let e = 0; e < E; e++) {
      const g = w.matrix(`model.layers.1.mlp.experts.${e}.gate_proj.weight`) as FakeWeight;
      const u = w.matrix(`model.layers.1.mlp.experts.${e}.up_proj.weight`) as FakeWeight;
      const d = w.matrix(`model.layers.1.mlp.experts.${e}.down_proj.weight`) as FakeWeight;
      assert.deepEqual([g.rows, g.cols, u.rows, u.cols, d.rows, d.cols], [I, H, I, H, H, I]);
      assert.deepEqual(Array.from(bytesToFloat32(g.data, 'BF16', I * H)), gateUp.slice(e * 2 * I * H, e * 2 * I * H + I * H));
      assert.deepEqual(Array.from(bytesToFloat32(u.data, 'BF16', I * H)), gateUp.slice(e * 2 * I * H + I * H, (e + 1) * 2 * I * H));
      assert.deepEqual(Array.from(bytesToFloat32(d.data, 'BF16', H * I)), down.slice(e * H * I, (e + 1) * H * I));
      assert.equal(g.data.buffer, u.data.buffer, 'views into one mapping, not copies');
      assert.equal(g.data.buffer, d.data.buffer, 'views into one mapping, not copies');
    }
    assert.deepEqual(w.shape('model.layers.1.mlp.experts.3.down_proj.weight'), [H, I]);
  });
  withModel(cfg, { packed: true, reshape: { 'model.layers.1.mlp.experts.gate_up_proj': [4, 16, 32] } }, (dir) => {
    expectError(() => openWeights(dir, parseConfig(cfg, 'config.json'), fakeNative()), 'shape_mismatch', /gate_up_proj .* has shape \[4, 16, 32\], but the config implies \[n_routed_experts = 4, 2·moe_intermediate_size = 32, hidden_size = 32\]/);
  });
  withModel(cfg, { packed: true, drop: ['model.layers.1.mlp.experts.down_proj'] }, (dir) => {
    expectError(() => openWeights(dir, parseConfig(cfg, 'config.json'), fakeNative()), 'missing_tensor', /missing tensor model\.layers\.1\.mlp\.experts\.down_proj \(layer 1 stores its experts packed/);
  });
});

test('FP8: weights pair with F32 weight_scale_inv of [ceil(r/128), ceil(c/128)]', () => {
  const cfg = tinyConfig('deepseek_v32', { hidden_size: 160, quantization_config: { quant_method: 'fp8', fmt: 'e4m3', weight_block_size: [128, 128] } });
  withModel(cfg, { fp8: true, shards: 2 }, (dir) => {
    const config = parseConfig(cfg, 'config.json');
    const native = fakeNative();
    const w = openWeights(dir, config, native);
    assert.deepEqual(w.extras, []);
    assert.ok(w.dtypeStats.F8_E4M3!.tensors > 0);
    const name = 'model.layers.0.self_attn.kv_a_proj_with_mqa.weight'; // [24, 160] → scales [1, 2]
    const m = w.matrix(name) as FakeWeight;
    assert.equal(m.dtype, 'F8_E4M3');
    assert.equal(m.scaleInv!.length, 2);
    // dequantised through toFloat32 ≈ the original values
    const deq = w.vector(name);
    const orig = writtenValues(cfg, name);
    for (let i = 0; i < orig.length; i++) assert.ok(Math.abs(deq[i]! - orig[i]!) <= Math.abs(orig[i]!) * 0.07 + 1e-3, `${i}: ${deq[i]} vs ${orig[i]}`);
  });
  withModel(cfg, { fp8: true, drop: ['model.layers.0.self_attn.o_proj.weight_scale_inv'] }, (dir) => {
    expectError(
      () => openWeights(dir, parseConfig(cfg, 'config.json'), fakeNative()),
      'missing_tensor',
      /tensor model\.layers\.0\.self_attn\.o_proj\.weight is FP8 \(F8_E4M3\) but its block scales model\.layers\.0\.self_attn\.o_proj\.weight_scale_inv are missing/,
      /expected F32 \[2, 1\]/,
    );
  });
  withModel(cfg, { fp8: true, drop: ['model.layers.0.self_attn.o_proj.weight_scale_inv'], extra: [{ name: 'model.layers.0.self_attn.o_proj.weight_scale_inv', dtype: 'F32', shape: [1, 1], values: [1] }] }, (dir) => {
    expectError(
      () => openWeights(dir, parseConfig(cfg, 'config.json'), fakeNative()),
      'shape_mismatch',
      /FP8 scales model\.layers\.0\.self_attn\.o_proj\.weight_scale_inv in model\.safetensors have shape \[1, 1\], but weight \[160, 16\] in 128×128 blocks needs \[2, 1\] = \[ceil\(160\/128\), ceil\(16\/128\)\]/,
    );
  });
  withModel(cfg, { fp8: true, drop: ['model.layers.0.self_attn.o_proj.weight_scale_inv'], extra: [{ name: 'model.layers.0.self_attn.o_proj.weight_scale_inv', dtype: 'BF16', shape: [2, 1], values: [1, 1] }] }, (dir) => {
    expectError(() => openWeights(dir, parseConfig(cfg, 'config.json'), fakeNative()), 'bad_weight', /o_proj\.weight_scale_inv .* have dtype BF16; they must be F32/);
  });
});

test('tied embeddings: lm_head is the embedding', () => {
  const cfg = tinyConfig('deepseek_v3', { tie_word_embeddings: true });
  withModel(cfg, {}, (dir) => {
    const w = openWeights(dir, parseConfig(cfg, 'config.json'), fakeNative());
    assert.ok(w.has('lm_head.weight'));
    assert.equal(w.matrix('lm_head.weight'), w.matrix('model.embed_tokens.weight'));
  });
  const untied = tinyConfig('deepseek_v3');
  withModel(untied, { drop: ['lm_head.weight'] }, (dir) => {
    expectError(() => openWeights(dir, parseConfig(untied, 'config.json'), fakeNative()), 'missing_tensor', /missing tensor lm_head\.weight \(output head \(tie_word_embeddings is false\)/);
  });
});

test('header-only inspection validates without the addon; data access then needs it', () => {
  const cfg = tinyConfig('deepseek_v32');
  withModel(cfg, { dtype: 'F16' }, (dir) => {
    const w = inspectWeights(dir, parseConfig(cfg, 'config.json'));
    assert.equal(w.files.length, 1);
    assert.equal(path.basename(w.files[0]!), 'model.safetensors');
    assert.ok(w.dtypeStats.F16);
    expectError(() => w.matrix('model.embed_tokens.weight'), 'native_unavailable', /opened header-only/);
  });
});

test('parameter counts: active excludes the non-selected routed experts', () => {
  const config = parseConfig(tinyConfig('deepseek_v32'), 'config.json');
  const c = parameterCounts(config);
  const perExpert = 3 * 16 * 32;
  assert.equal(c.routedExperts, 4 * perExpert);
  assert.equal(c.total - c.active, (4 - 2) * perExpert);
  // 671B-shaped config: 671B total, ~37B active
  const big = parameterCounts(parseConfig({ model_type: 'deepseek_v32' }, 'config.json'));
  assert.ok(big.total > 670e9 && big.total < 672e9, String(big.total));
  assert.ok(big.active > 36e9 && big.active < 39e9, String(big.active));
});
