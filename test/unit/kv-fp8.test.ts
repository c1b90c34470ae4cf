// The FP8 latent KV cache (kvCache 'fp8'): quantizeLatentFp8 and mlaAttention over its rows, then the engine with it.
//   - quantizeLatentFp8 against a reference written here from the contract (least power-of-two scale per tile by search,
//     e4m3fn by nearest-value search with ties to the even code): hand-made rows (powers of two, e4m3 subnormals, fp32
//     subnormals, zeros and -0, saturation, NaN, infinities, the exponent clamp, bf16 rope rounding, the pad byte) and
//     random rows with a wide dynamic range, byte for byte; dequantised rows equal the input wherever it is representable;
//   - mlaAttention over FP8 rows: on the AVX2 and scalar bodies bit-identical to the fp32 op on the dequantised rows; on
//     AVX-512-BF16 / AMX bit-identical to the bf16 op on the same rows (the decode is exact) and within the bf16 bound of
//     the fp32 op; sparse, dense, split-KV decode, prefill, tiles of 128 and 64, odd row sizes;
//   - bad arguments of both ops;
//   - the engine on models/glance-tiny (kv_lora_rank 192: tiles of 64): decode with an fp8 cache equals a re-prefill, a
//     copied prefix continues like the original, fp8-cache logits stay near the fp32-cache logits with the same argmax;
//     a model whose kv_lora_rank has no FP8 form, the GPU model and the CLI flag.
// The kernel tests run again in child processes with GLANCE_SIMD=scalar / avx2 / avx512 where the CPU has more, so every
// body is reached (the engine tests run once, in the parent).

import test from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { parseCommandLine } from '../../sidecar/src/cli/main';
import { readConfig } from '../../sidecar/src/engine/config';
import { loadModelOnDevice } from '../../sidecar/src/engine/device';
import { loadGpuModel } from '../../sidecar/src/engine/gpu/gpu-model';
import { latentFp8RowBytes, latentRowBytes, loadModel } from '../../sidecar/src/engine/model';
import { loadTokenizer } from '../../sidecar/src/engine/tokenizer';
import { openWeights } from '../../sidecar/src/engine/weights';
import { loadNative } from '../../sidecar/src/native/index';
import { argmax, fixturesDir, relativeError } from '../helpers/golden';
import { runTestFileWithSimd, withThreads } from '../helpers/kernel-checks';
import { rand, randInt, seedNote } from '../helpers/seeded-random';

const native = loadNative();
const BF16_DOT = native.backends().cpu.bf16Dot;
const IS_CHILD = process.env.GLANCE_TEST_CHILD === '1';
const modelDir = path.resolve(fixturesDir(), '..', '..', 'models', 'glance-tiny');

// ---- a reference of the row format, from the contract ---------------------------------------------------------

/** e4m3fn code -> value (NaN for 0x7F / 0xFF). */
const E4M3 = Float64Array.from({ length: 256 }, (_, b) => {
  const m = b & 7;
  const e = (b >> 3) & 15;
  if ((b & 0x7f) === 0x7f) return NaN;
  const mag = e === 0 ? (m / 8) * 2 ** -6 : (1 + m / 8) * 2 ** (e - 7);
  return b & 0x80 ? -mag : mag;
});

/** Nearest e4m3fn code of v (|v| saturated to 448), ties to the even code, sign kept (signBit: of v's fp32 bits). */
function refE4m3(v: number, signBit: number): number {
  const sign = signBit ? 0x80 : 0;
  if (Number.isNaN(v)) return 0x7f | sign;
  const a = Math.min(Math.abs(v), 448);
  let best = 0;
  for (let c = 1; c <= 0x7e; c++) {
    const d = Math.abs(E4M3[c] - a);
    const bd = Math.abs(E4M3[best] - a);
    if (d < bd || (d === bd && (c & 1) === 0)) best = c;
  }
  return best | sign;
}

function f32(v: number): number {
  return Math.fround(v);
}

/** bf16 bits of v, nearest even; NaN a quiet NaN. */
function refBf16(v: number): number {
  const u = new Uint32Array(Float32Array.of(v).buffer)[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

function bf16Value(bits: number): number {
  return new Float32Array(Uint32Array.of(bits << 16).buffer)[0];
}

const tileOf = (L: number): number => (L % 128 === 0 ? 128 : 64);

/** The bytes quantizeLatentFp8 must write for rows src [rows, L + R]. */
function refQuantize(src: Float32Array, rows: number, L: number, R: number): Uint8Array {
  const rb = latentFp8RowBytes(L, R);
  const tile = tileOf(L);
  const out = new Uint8Array(rows * rb);
  const D = L + R;
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let r = 0; r < rows; r++) {
    const x = src.subarray(r * D, (r + 1) * D);
    const row = out.subarray(r * rb, (r + 1) * rb);
    for (let c0 = 0; c0 < L; c0 += tile) {
      let amax = 0;
      for (let c = c0; c < c0 + tile; c++) if (Number.isFinite(x[c])) amax = Math.max(amax, Math.abs(x[c]));
      let e = 0;
      if (amax > 0) {
        e = -200;
        while (amax > 448 * 2 ** e) e++; // the least e with amax <= 448 * 2^e
      }
      e = Math.min(119, Math.max(-117, e));
      for (let c = c0; c < c0 + tile; c++) row[c] = refE4m3(x[c] / 2 ** e, bits[r * D + c] >>> 31);
      row[L + 2 * R + c0 / tile] = e & 0xff;
    }
    for (let i = 0; i < R; i++) {
      const b = refBf16(x[L + i]);
      row[L + 2 * i] = b & 0xff;
      row[L + 2 * i + 1] = b >>> 8;
    }
  }
  return out;
}

/** The fp32 rows [S, L + R] that FP8 rows hold. */
function dequantize(bytes: Uint8Array, S: number, L: number, R: number): Float32Array {
  const rb = latentFp8RowBytes(L, R);
  const tile = tileOf(L);
  const D = L + R;
  const out = new Float32Array(S * D);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let s = 0; s < S; s++) {
    for (let c = 0; c < L; c++) out[s * D + c] = E4M3[bytes[s * rb + c]] * 2 ** dv.getInt8(s * rb + L + 2 * R + Math.floor(c / tile));
    for (let i = 0; i < R; i++) out[s * D + L + i] = bf16Value(dv.getUint16(s * rb + L + 2 * i, true));
  }
  return out;
}

function quantize(src: Float32Array, rows: number, L: number, R: number): Uint8Array {
  const dst = new Uint8Array(rows * latentFp8RowBytes(L, R)).fill(0xa5); // poisoned: every byte must be written
  native.quantizeLatentFp8(dst, 0, src, rows, L, R);
  return dst;
}

function assertBytes(ours: Uint8Array, ref: Uint8Array, label: string): void {
  assert.equal(ours.length, ref.length, `${label}: length`);
  for (let i = 0; i < ref.length; i++) {
    if (ours[i] !== ref[i]) assert.fail(`${label}: byte ${i} is 0x${ours[i].toString(16)}, expected 0x${ref[i].toString(16)} ${seedNote}`);
  }
}

// ---- quantizeLatentFp8 ------------------------------------------------------------------------------------------

test('latentFp8RowBytes: [kvLora e4m3][rope bf16][an exponent per tile] padded to an even count', () => {
  assert.equal(latentFp8RowBytes(512, 64), 644); // DeepSeek-V3.2's 512 + 64 (FlashMLA stores fp32 scales: 656)
  assert.equal(latentFp8RowBytes(192, 32), 260); // glance-tiny: 192 + 64 + 3 = 259, padded
  assert.equal(latentFp8RowBytes(64, 4), 74);
  assert.equal(latentRowBytes('fp8', 256, 32), 322);
  assert.equal(latentRowBytes('bf16', 256, 32), 576);
  assert.equal(latentRowBytes('fp32', 256, 32), 1152);
});

test('quantizeLatentFp8: hand-made rows, byte for byte, and exact round trips', () => {
  // Tile 128 (L = 256: two tiles) and tile 64 (L = 192: three), rope 5 (odd: a pad byte follows the exponents).
  for (const [L, R] of [[256, 5], [192, 5]] as const) {
    const tile = tileOf(L);
    const D = L + R;
    const rows: number[][] = [];
    const tiles = (fill: (c: number) => number): number[] => Array.from({ length: D }, (_, c) => (c < L ? fill(c) : 0));
    // powers of two over 20 octaves (tile amax 2^9: e = 1; 2^-10 and below fall under e4m3's smallest step there)
    rows.push(tiles((c) => (c % 2 ? -1 : 1) * 2 ** ((c % 20) - 10)));
    // e4m3 subnormals: amax 1 (e = -8), values 2^-16, 3 * 2^-17, 2^-18 (a tie between 0 and 2^-9 after scaling: 0)
    rows.push(tiles((c) => [1, 2 ** -16, 3 * 2 ** -17, 2 ** -18, -(2 ** -16), 0][c % 6]));
    // zeros, -0 (code 0x80), and an all-zero tile (e = 0)
    rows.push(tiles((c) => (c < tile ? [0, -0][c % 2] : c % 3 === 0 ? 0.75 : -0)));
    // saturation: 3e38 needs e = 120 > 119, the clamp: 3e38 / 2^119 = 451.3 -> 448; 464 (e = 1): 232 -> 224 (tie, even)
    rows.push(tiles((c) => (c < tile ? [3e38, -3e38, 1e38, 1][c % 4] : [464, 300, -464, 7][c % 4])));
    // NaN keeps its sign as 0x7F / 0xFF and leaves the tile's scale alone; infinities saturate to +-448 * 2^e
    rows.push(tiles((c) => [NaN, NaN, Infinity, -Infinity, 3, -1.5, 0.1][c % 7])); // the second NaN made negative below
    // fp32 subnormals and tiny normals: e is clamped to -117, so 2^-120 -> 2^-3 exactly, 2^-126 -> code 1, 2^-127 -> 0
    rows.push(tiles((c) => (c < tile ? [2 ** -120, 2 ** -126, 2 ** -127, 1e-40, -(2 ** -124)][c % 5] : [1e-40, 1e-45, -1e-42][c % 3])));
    // random normal values over 30 octaves
    rows.push(tiles(() => (rand() < 0.5 ? -1 : 1) * 2 ** (rand() * 30 - 15)));
    const src = new Float32Array(rows.length * D);
    rows.forEach((r, i) => {
      // k_pe: bf16 ties (1 + 2^-8 -> 1, 1 + 3 * 2^-8 -> 1 + 2^-6), a NaN, random values
      const rope = [1 + 2 ** -8, 1 + 3 * 2 ** -8, NaN, -(2 ** -130), rand() * 8 - 4];
      for (let j = 0; j < D; j++) src[i * D + j] = j < L ? r[j] : rope[(j - L + i) % rope.length];
    });
    const srcBits = new Uint32Array(src.buffer);
    for (let c = 1; c < L; c += 7) srcBits[4 * D + c] = 0xffc00000; // -NaN (JS has no NaN sign of its own)
    const ours = quantize(src, rows.length, L, R);
    const ref = refQuantize(src, rows.length, L, R);
    assertBytes(ours, ref, `quantizeLatentFp8 L=${L} R=${R}`);
    const rb = latentFp8RowBytes(L, R);
    const E = (row: number, t: number): number => (ours[row * rb + L + 2 * R + t] << 24) >> 24;
    // the hand-made expectations themselves, so that a shared misreading of the contract cannot pass
    assert.equal(E(0, 0), 1, 'powers of two: amax 2^9 -> e = 1');
    assert.equal(E(1, 0), -8, 'amax 1 -> e = -8');
    assert.equal(ours[1 * rb + 1], 0x02, '2^-16 / 2^-8 = 2^-8: e4m3 subnormal code 2');
    assert.equal(ours[1 * rb + 2], 0x03, '3 * 2^-17: code 3');
    assert.equal(ours[1 * rb + 3], 0x00, '2^-18: a tie to even, 0');
    assert.equal(E(2, 0), 0, 'an all-zero tile has e = 0');
    assert.equal(ours[2 * rb + 1], 0x80, '-0 keeps its sign');
    assert.equal(E(3, 0), 119, 'the exponent clamp');
    assert.equal(ours[3 * rb + 0], 0x7e, '3e38 saturates to 448');
    assert.equal(ours[3 * rb + 1], 0xfe, '-3e38 saturates to -448');
    assert.equal(E(3, 1), 1, '464 -> e = 1');
    assert.equal(ours[3 * rb + tile], 0x76, '464 / 2 = 232: the tie goes to the even code (224)');
    assert.equal(ours[4 * rb + 0], 0x7f, 'NaN');
    assert.equal(ours[4 * rb + 1], 0xff, '-NaN');
    assert.equal(E(4, 0), -7, 'NaN and infinities are left out of amax (3 <= 448 * 2^-7)');
    assert.equal(ours[4 * rb + 2], 0x7e, 'Infinity saturates');
    assert.equal(ours[4 * rb + 3], 0xfe, '-Infinity saturates');
    assert.equal(E(5, 0), -117, 'tiny tiles: e clamped to -117');
    assert.deepEqual([ours[5 * rb], ours[5 * rb + 1], ours[5 * rb + 2], ours[5 * rb + 3]], [0x20, 0x01, 0x00, 0x00], '2^-120, 2^-126, 2^-127, 1e-40');
    if ((L + 2 * R + L / tile) % 2 === 1) for (let r = 0; r < rows.length; r++) assert.equal(ours[r * rb + rb - 1], 0, 'pad byte');
    // round trip: every input that is e4m3 * 2^e (finite) comes back exactly; the rope part is the bf16 rounding
    const back = dequantize(ours, rows.length, L, R);
    for (let i = 0; i < rows.length * D; i++) {
      const c = i % D;
      const x = src[i];
      if (c >= L) {
        const b = refBf16(x);
        if (!Object.is(back[i], bf16Value(b))) assert.fail(`rope ${i}: ${back[i]} vs bf16(${x})`);
        continue;
      }
      const r = Math.floor(i / D);
      if (Number.isNaN(x)) assert.ok(Number.isNaN(back[i]), `NaN at ${i}`);
      else if ((r === 0 && c % 20 >= 2) || (r === 1 && c % 6 !== 3) || r === 2) assert.ok(Object.is(back[i], x), `row ${r} col ${c}: ${x} came back as ${back[i]}`);
    }
  }
});

test('quantizeLatentFp8: random rows with a wide dynamic range equal the reference; rowOffset writes only its rows', () => {
  for (const [L, R] of [[512, 64], [192, 32], [64, 3]] as const) {
    const rows = 40;
    const D = L + R;
    const src = new Float32Array(rows * D);
    for (let r = 0; r < rows; r++) {
      const scale = 2 ** (randInt(60) - 30); // each row its own magnitude, and inside it tiles of mixed ranges
      for (let c = 0; c < D; c++) src[r * D + c] = f32((rand() * 2 - 1) * scale * (randInt(4) === 0 ? 2 ** (randInt(20) - 10) : 1));
    }
    const ref = refQuantize(src, rows, L, R);
    assertBytes(quantize(src, rows, L, R), ref, `random L=${L} R=${R}`);
    for (const threads of [1]) withThreads(native, threads, () => assertBytes(quantize(src, rows, L, R), ref, `random L=${L} R=${R} 1 thread`));
    const rb = latentFp8RowBytes(L, R);
    const dst = new Uint8Array((rows + 7) * rb).fill(0x5a);
    native.quantizeLatentFp8(dst, 3, src, rows, L, R);
    assert.ok(dst.subarray(0, 3 * rb).every((b) => b === 0x5a), 'rows before rowOffset untouched');
    assert.ok(dst.subarray((rows + 3) * rb).every((b) => b === 0x5a), 'rows after untouched');
    assertBytes(dst.subarray(3 * rb, (rows + 3) * rb), ref, 'at rowOffset 3');
  }
});

// ---- mlaAttention over FP8 rows ---------------------------------------------------------------------------------

interface AttentionCase { T: number; S: number; H: number; L: number; R: number; k: number; sparse: boolean }

/** A random FP8 cache (longer than S: only S rows are read), q, positions and a selection with some -1. */
function fp8AttentionCase(c: AttentionCase) {
  const D = c.L + c.R;
  const rows = c.S + 3;
  const src = new Float32Array(rows * D);
  for (let r = 0; r < rows; r++) {
    const scale = 2 ** (randInt(6) - 3); // RMS-normed c_kv times a gain: O(1) with a spread
    for (let i = 0; i < D; i++) src[r * D + i] = (rand() * 2 - 1) * scale * (randInt(16) === 0 ? 8 : 1);
  }
  const fp8 = quantize(src, rows, c.L, c.R);
  const deq = dequantize(fp8, rows, c.L, c.R);
  const q = Float32Array.from({ length: c.T * c.H * D }, () => (rand() * 2 - 1) * 0.3);
  const positions = Int32Array.from({ length: c.T }, (_, t) => c.S - c.T + t);
  let indices: Int32Array | null = null;
  if (c.sparse) {
    indices = new Int32Array(c.T * c.k);
    for (let i = 0; i < indices.length; i++) indices[i] = randInt(8) === 0 ? -1 : randInt(c.S);
  }
  const run = (kv: Float32Array | Uint16Array | Uint8Array): Float32Array => {
    const out = new Float32Array(c.T * c.H * c.L).fill(NaN);
    native.mlaAttention(out, q, kv, c.S, c.T, c.H, c.L, c.R, 0.125, indices, c.k, positions);
    return out;
  };
  const bf16 = Uint16Array.from(deq, (v) => refBf16(v)); // exact: every dequantised value is a bf16 number
  return { fp8, deq, bf16, run };
}

const ATTENTION_CASES: AttentionCase[] = [
  { T: 1, S: 3000, H: 8, L: 256, R: 32, k: 2048, sparse: true }, // decode: split-KV over the selected rows, tile 128
  { T: 1, S: 700, H: 8, L: 512, R: 64, k: 0, sparse: false }, // decode, dense, the V3.2 row
  { T: 5, S: 300, H: 20, L: 128, R: 16, k: 40, sparse: true }, // more than 16 heads, several queries
  { T: 37, S: 37, H: 3, L: 64, R: 8, k: 0, sparse: false }, // prefill, causal, tile 64, an odd row (a pad byte)
  { T: 2, S: 50, H: 1, L: 192, R: 3, k: 7, sparse: true }, // one head, fewer rows than a block, glance-tiny's tiles
];

test('mlaAttention over FP8 rows equals the fp32 op on the dequantised rows (AVX2 / scalar bodies: exactly)', { skip: BF16_DOT && 'AVX-512-BF16 path: see the next test' }, () => {
  for (const c of ATTENTION_CASES) {
    const { fp8, deq, run } = fp8AttentionCase(c);
    const ref = run(deq);
    for (const threads of [0, 1]) {
      const out = threads === 0 ? run(fp8) : withThreads(native, threads, () => run(fp8));
      for (let i = 0; i < ref.length; i++) {
        if (!Object.is(out[i], ref[i])) assert.fail(`mlaAttention fp8 ${JSON.stringify(c)} threads=${threads}: element ${i} is ${out[i]}, fp32 op gives ${ref[i]} ${seedNote}`);
      }
    }
  }
});

// The bf16 bodies: the decode into bf16 is exact, so the result is the bf16 op's on the same values, bit for bit; and
// that is within the bf16 contract's bound of the fp32 op (the bound the bf16-cache tests use).
test('mlaAttention over FP8 rows on AVX-512-BF16 / AMX equals the bf16 op on the same rows and is within bf16 rounding of the fp32 op', { skip: !BF16_DOT && 'no AVX-512-BF16 path on this CPU / GLANCE_SIMD' }, () => {
  for (const c of ATTENTION_CASES) {
    const { fp8, deq, bf16, run } = fp8AttentionCase(c);
    const ref = run(deq);
    const viaBf16 = run(bf16);
    for (const threads of [0, 1]) {
      const out = threads === 0 ? run(fp8) : withThreads(native, threads, () => run(fp8));
      for (let i = 0; i < out.length; i++) {
        if (!Object.is(out[i], viaBf16[i])) assert.fail(`mlaAttention fp8 ${JSON.stringify(c)} threads=${threads}: element ${i} is ${out[i]}, the bf16 op gives ${viaBf16[i]} ${seedNote}`);
      }
      for (let th = 0; th < c.T * c.H; th++) {
        let num = 0;
        let den = 0;
        for (let i = th * c.L; i < (th + 1) * c.L; i++) {
          num += (out[i] - ref[i]) ** 2;
          den += ref[i] ** 2;
        }
        const rel = Math.sqrt(num / den);
        if (!(rel <= 1e-2)) assert.fail(`mlaAttention fp8 ${JSON.stringify(c)}: (token, head) ${th} relative error ${rel} > 1e-2 ${seedNote}`);
      }
    }
  }
});

test('mlaAttention over FP8 rows: NaN codes give NaN where they are attended; out-of-range exponent bytes read as the bounds', () => {
  const L = 64;
  const R = 0;
  const rb = latentFp8RowBytes(L, R);
  const kv = new Uint8Array(2 * rb);
  for (let c = 0; c < L; c++) kv[c] = kv[rb + c] = 0x38; // 1.0
  kv[L] = 0x80; // exponent -128: read as -117
  kv[rb + L] = 0x7f; // 127: read as 119
  const deq = new Float32Array(2 * L);
  for (let c = 0; c < L; c++) {
    deq[c] = 2 ** -117;
    deq[L + c] = 2 ** 119;
  }
  const q = new Float32Array(L); // all-zero q: equal weights, out = the mean of the two rows
  const out = new Float32Array(L);
  const ref = new Float32Array(L);
  native.mlaAttention(out, q, kv, 2, 1, 1, L, R, 1, null, 0, Int32Array.of(1));
  native.mlaAttention(ref, q, deq, 2, 1, 1, L, R, 1, null, 0, Int32Array.of(1));
  for (let c = 0; c < L; c++) assert.equal(out[c], ref[c], `column ${c}`);
  kv[5] = 0x7f;
  native.mlaAttention(out, q, kv, 2, 1, 1, L, R, 1, null, 0, Int32Array.of(1));
  assert.ok(Number.isNaN(out[5]), 'a NaN code attended gives NaN');
  native.mlaAttention(out, q, kv, 2, 1, 1, L, R, 1, Int32Array.of(1), 1, Int32Array.of(1));
  assert.ok(out.every(Number.isFinite), 'a row not selected is not read');
});

test('quantizeLatentFp8 and mlaAttention: bad FP8 arguments are refused with errors naming them', () => {
  const src = new Float32Array(2 * 71);
  const dst = new Uint8Array(2 * latentFp8RowBytes(64, 7)); // 80 bytes a row
  assert.throws(() => native.quantizeLatentFp8(dst, 0, new Float32Array(2 * 104), 2, 96, 8), {
    name: 'RangeError',
    message: /quantizeLatentFp8: kvLora = 96 has no FP8 latent cache form: .*multiple of 64/,
  });
  assert.throws(() => native.quantizeLatentFp8(dst, 0, src.subarray(1), 2, 64, 7), {
    name: 'RangeError',
    message: /quantizeLatentFp8: src has length 141, expected 142 \(rows\*\(kvLora\+rope\) = 2\*71\)/,
  });
  assert.throws(() => native.quantizeLatentFp8(dst, 1, src, 2, 64, 7), {
    name: 'RangeError',
    message: /quantizeLatentFp8: dst has length 160, expected at least 240 \(\(rowOffset\+rows\)\*rowBytes = 3\*80\)/,
  });
  assert.throws(() => native.quantizeLatentFp8(new Uint16Array(80) as unknown as Uint8Array, 0, src, 2, 64, 7), {
    name: 'TypeError',
    message: /quantizeLatentFp8: dst must be a Uint8Array/,
  });
  assert.throws(() => native.quantizeLatentFp8(dst, 0, new Float64Array(142) as unknown as Float32Array, 2, 64, 7), {
    name: 'TypeError',
    message: /quantizeLatentFp8: src must be a Float32Array/,
  });
  assert.throws(() => native.quantizeLatentFp8(dst, -1, src, 2, 64, 7), { name: 'RangeError', message: /quantizeLatentFp8: rowOffset = -1 is out of range/ });
  assert.throws(() => native.quantizeLatentFp8(dst, 0, src, 2.5, 64, 7), { name: 'TypeError', message: /quantizeLatentFp8: rows must be an integer/ });
  // @ts-expect-error: a missing argument
  assert.throws(() => native.quantizeLatentFp8(dst, 0, src, 2, 64), { name: 'TypeError', message: /quantizeLatentFp8: expected 6 arguments, got 5/ });
  const shared = new ArrayBuffer(4096);
  assert.throws(() => native.quantizeLatentFp8(new Uint8Array(shared, 0, 160), 0, new Float32Array(shared, 0, 142), 2, 64, 7), {
    name: 'RangeError',
    message: /quantizeLatentFp8: dst must not overlap src/,
  });

  const q = new Float32Array(2 * 71);
  const out = new Float32Array(2 * 64);
  const kv = new Uint8Array(10 * 80);
  assert.throws(() => native.mlaAttention(out, q, kv.subarray(1), 10, 1, 2, 64, 7, 1, null, 0, Int32Array.of(9)), {
    name: 'RangeError',
    message: /mlaAttention: kv has length 799, expected at least 800 \(S\*rowBytes = 10\*80\)/,
  });
  assert.throws(() => native.mlaAttention(out, q, kv.subarray(1, 801 - 80), 9, 1, 2, 64, 7, 1, null, 0, Int32Array.of(8)), {
    name: 'RangeError',
    message: /mlaAttention: kv \(FP8 latent rows\) must start at an even byte offset/,
  });
  assert.throws(() => native.mlaAttention(new Float32Array(2 * 96), new Float32Array(2 * 104), new Uint8Array(2000), 10, 1, 2, 96, 8, 1, null, 0, Int32Array.of(9)), {
    name: 'RangeError',
    message: /mlaAttention: kvLora = 96 has no FP8 latent cache form/,
  });
  assert.throws(() => native.mlaAttention(out, q, new Int8Array(800) as unknown as Uint8Array, 10, 1, 2, 64, 7, 1, null, 0, Int32Array.of(9)), {
    name: 'TypeError',
    message: /mlaAttention: kv must be a Float32Array, a Uint16Array \(bf16\) or a Uint8Array \(FP8 latent rows\)/,
  });
  assert.throws(() => native.mlaAttention(out, q, kv, 10, 1, 2, 64, 7, 1, Int32Array.of(10), 1, Int32Array.of(9)), {
    name: 'RangeError',
    message: /mlaAttention: indices\[0\] = 10 is out of range \[-1, S = 10\)/,
  });
});

// ---- the engine -------------------------------------------------------------------------------------------------

const engineSkip = IS_CHILD && 'child run: the kernel tests only';

/** A TypeScript prompt of glance-tiny's kind, long enough (> index_topk 256) for the sparse path to select. */
function tsPromptIds(minTokens: number): Int32Array {
  const tok = loadTokenizer(modelDir);
  if (!tok) throw new Error(`${modelDir} has no tokenizer`);
  let text = '';
  let i = 0;
  while (tok.encode(text).length < minTokens) {
    text += `export function scale${i}(values: number[], factor: number): number[] {\n  const out: number[] = [];\n` +
      `  for (const v of values) out.push(v * factor + ${i});\n  return out;\n}\n\n`;
    i++;
  }
  return Int32Array.from(tok.encode(text));
}

function lastRow(logits: Float32Array, V: number): Float32Array {
  return logits.subarray(logits.length - V);
}

test('engine: an fp8 latent cache decodes like a re-prefill, copies prefixes, and accounts its bytes (glance-tiny)', { skip: engineSkip }, async () => {
  const model = await loadModel(modelDir, { attention: 'sparse', indexerPrecision: 'fp32', kvCache: 'fp8' });
  assert.equal(model.kvCacheDtype, 'fp8');
  const V = model.config.vocabSize;
  const ids = tsPromptIds(300);
  const n = ids.length;
  const full = model.createSequence().forward(ids, true);
  const seq = model.createSequence();
  const split = n - 12;
  const parts: Float32Array[] = [seq.forward(ids.subarray(0, split), true)];
  for (let i = split; i < n; i++) parts.push(seq.forward(ids.subarray(i, i + 1), true));
  const decoded = full.subarray(split * V);
  const stepwise = new Float32Array(decoded.length);
  for (let i = 1; i < parts.length; i++) stepwise.set(parts[i], (i - 1) * V);
  // The same FP8 rows feed both (a row is quantised once, from a prompt GEMM or a one-token GEMV whose fp32 sums differ
  // in the last bits, so an element can land one e4m3 step apart). Measured 2e-4 here; a wrong row or scale gives O(1).
  const err = relativeError(stepwise, decoded);
  console.log(`# fp8 cache, 12 decode steps vs a re-prefill of ${n} tokens: relative logit error ${err.toExponential(2)}`);
  assert.ok(err <= 5e-3, `fp8 cache: decode vs prefill relative error ${err.toExponential(3)}`);
  for (let t = 0; t < 12; t++) assert.equal(argmax(stepwise.subarray(t * V, (t + 1) * V)), argmax(decoded.subarray(t * V, (t + 1) * V)), `argmax at decoded position ${t}`);

  const L = model.config.kvLoraRank;
  const R = model.config.qkRopeHeadDim;
  const Di = model.config.indexer!.headDim;
  assert.equal(seq.cacheBytes, model.config.numLayers * 1024 * (latentFp8RowBytes(L, R) + 4 * Di), 'capacity 1024: fp8 latent rows + fp32 index keys');

  // a copied prefix of fp8 rows continues exactly as a sequence that computed the prefix itself
  const copy = model.createSequence();
  copy.copyPrefixFrom(seq, split);
  const own = model.createSequence();
  own.forward(ids.subarray(0, split), false);
  const cont = copy.forward(ids.subarray(split), true);
  const ref = own.forward(ids.subarray(split), true);
  assert.equal(relativeError(cont, ref), 0, 'copied prefix');
});

test('engine: fp8-cache logits stay close to the fp32-cache logits on glance-tiny (same argmax)', { skip: engineSkip }, async () => {
  // The shipped model's reference prompts (test/fixtures/glance-tiny-reference.json): TypeScript, a FIM prompt and 320
  // tokens of held-out code (past index_topk 256: the sparse path selects there).
  const reference = JSON.parse(fs.readFileSync(path.join(fixturesDir(), 'glance-tiny-reference.json'), 'utf8')) as {
    sequences: { name: string; ids: number[] }[];
  };
  const fp32 = await loadModel(modelDir, { attention: 'sparse', kvCache: 'fp32' });
  const fp8 = await loadModel(modelDir, { attention: 'sparse', kvCache: 'fp8' });
  const V = fp32.config.vocabSize;
  const report: string[] = [];
  for (const s of reference.sequences) {
    const ids = Int32Array.from(s.ids);
    const a = fp32.createSequence().forward(ids, true);
    const b = fp8.createSequence().forward(ids, true);
    const all = relativeError(b, a);
    const last = relativeError(lastRow(b, V), lastRow(a, V));
    let agree = 0;
    for (let t = 0; t < ids.length; t++) if (argmax(b.subarray(t * V, (t + 1) * V)) === argmax(a.subarray(t * V, (t + 1) * V))) agree++;
    report.push(`${s.name} (${ids.length} tokens): all positions ${all.toExponential(2)}, last ${last.toExponential(2)}, argmax agrees at ${agree}/${ids.length}`);
    // e4m3 keeps 3 mantissa bits (an element's error up to 2^-4, ~2.5% RMS) against bf16's 7. Measured on this machine:
    // all positions 1.0e-2 to 2.8e-2, last position 0.7e-2 to 1.2e-2, argmax agreeing at >= 97% of positions (the bf16
    // cache: 1.3e-3 to 1.8e-2, 99.7%); a wrong scale, tile or row gives O(1).
    assert.ok(all <= 6e-2, `${s.name}: fp8-cache logits relative error ${all.toExponential(3)} > 6e-2 (all positions)`);
    assert.ok(last <= 3e-2, `${s.name}: fp8-cache logits relative error ${last.toExponential(3)} > 3e-2 (last position)`);
    assert.equal(argmax(lastRow(b, V)), argmax(lastRow(a, V)), `${s.name}: argmax of the last position`);
    assert.ok(agree >= 0.9 * ids.length, `${s.name}: argmax agrees at ${agree}/${ids.length} positions only`);
  }
  console.log(`# fp8 vs fp32 latent cache, relative logit error: ${report.join('; ')}`);
});

test('engine: an fp8 cache is refused with a clear error where kv_lora_rank has no FP8 form, and by the GPU model', { skip: engineSkip }, async () => {
  const fixture = path.join(fixturesDir(), 'golden', 'v32_fp32'); // kv_lora_rank 32
  await assert.rejects(loadModel(fixture, { attention: 'sparse', kvCache: 'fp8' }), /fp8 latent cache needs kv_lora_rank to be a multiple of 64 .*kv_lora_rank 32/);
  await assert.rejects(loadModel(fixture, { attention: 'sparse', kvCache: 'fp16' as never }), /kvCache must be one of fp32, bf16, fp8; got "fp16"/);
  const config = readConfig(modelDir);
  const weights = openWeights(modelDir, config, native);
  assert.throws(() => loadGpuModel(modelDir, config, weights, native, { attention: 'sparse', indexerPrecision: 'fp8', kvCache: 'fp8' }), {
    message: /the CUDA backend keeps bf16 or fp32 latent rows; --kv-cache fp8 is CPU-only/,
  });
  const onCpu = await loadModelOnDevice(modelDir, { device: 'cpu', attention: 'sparse', kvCache: 'fp8', native });
  assert.equal(onCpu.model.kvCacheDtype, 'fp8');
  const auto = await loadModelOnDevice(modelDir, { device: 'auto', attention: 'sparse', kvCache: 'fp8', native });
  assert.equal(auto.kind, 'cpu');
  assert.equal(auto.model.kvCacheDtype, 'fp8');
  const dflt = await loadModelOnDevice(modelDir, { device: 'cpu', attention: 'sparse', native });
  assert.equal(dflt.model.kvCacheDtype, 'bf16', 'the default stays the checkpoint precision');
});

test('CLI: --kv-cache fp32|bf16|fp8 for logits and generate', () => {
  const p = parseCommandLine(['logits', '--ids', '1,2', '--kv-cache', 'fp8']);
  assert.equal(p.kind === 'run' && p.command.kvCache, 'fp8');
  const g = parseCommandLine(['generate', '--ids', '1,2', '--max-tokens', '3', '--kv-cache', 'bf16']);
  assert.equal(g.kind === 'run' && g.command.kvCache, 'bf16');
  const none = parseCommandLine(['logits', '--ids', '1,2']);
  assert.equal(none.kind === 'run' && 'kvCache' in none.command, false, 'unset unless given');
  assert.throws(() => parseCommandLine(['logits', '--ids', '1', '--kv-cache', 'int4']), /--kv-cache must be fp32, bf16 or fp8; got "int4"/);
  assert.throws(() => parseCommandLine(['info', '--kv-cache', 'fp8']), /kv-cache/);
});

// ---- the other SIMD bodies --------------------------------------------------------------------------------------

test('the scalar bodies pass the FP8 kernel tests (child process, GLANCE_SIMD=scalar)', { skip: IS_CHILD }, () => {
  const out = runTestFileWithSimd(__filename, 'scalar', 300_000);
  assert.match(out, /ok \d+ - mlaAttention over FP8 rows equals the fp32 op on the dequantised rows/);
});

test('the AVX2 bodies pass the FP8 kernel tests on a CPU with AVX-512-BF16 (child process, GLANCE_SIMD=avx2)', { skip: (IS_CHILD || !BF16_DOT) && 'child run, or no AVX-512-BF16 path here' }, () => {
  const out = runTestFileWithSimd(__filename, 'avx2', 300_000);
  assert.match(out, /ok \d+ - mlaAttention over FP8 rows equals the fp32 op on the dequantised rows/);
});

test('the AVX-512-BF16 bodies pass the FP8 kernel tests on a CPU with AMX (child process, GLANCE_SIMD=avx512)', { skip: (IS_CHILD || !native.backends().cpu.amx) && 'child run, or no AMX path here' }, () => {
  const out = runTestFileWithSimd(__filename, 'avx512', 300_000);
  assert.match(out, /ok \d+ - mlaAttention over FP8 rows on AVX-512-BF16 \/ AMX equals the bf16 op/);
});
