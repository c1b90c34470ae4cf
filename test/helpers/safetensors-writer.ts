// A small safetensors writer for tests, golden fixtures and benchmarks: real files in the real format
// (8-byte LE header length, JSON header padded with spaces to 8 bytes, tensors back to back), plus dtype
// encoders (BF16 / F16 round-to-nearest-even, FP8 e4m3fn) and DeepSeek-style 128×128 block FP8 quantisation.

import * as fs from 'node:fs';
import * as path from 'node:path';

export type WriterDType =
  | 'F32' | 'BF16' | 'F16' | 'F8_E4M3' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL' | (string & {});

export interface TensorSpec {
  name: string;
  dtype: WriterDType;
  shape: number[];
  /** values, converted to `dtype` (float dtypes round to nearest even; F8_E4M3 saturates at ±448) */
  values?: ArrayLike<number>;
  /** raw little-endian bytes, written as they are (wins over `values`) */
  data?: Uint8Array;
}

export interface WriteOptions {
  metadata?: Record<string, string>;
  /** pad the header so that the data section starts at a multiple of this (default 8, as safetensors does) */
  align?: number;
  /** edit the header object before it is serialised (to write deliberately broken files in tests) */
  patchHeader?: (header: Record<string, unknown>) => Record<string, unknown> | void;
}

const SIZES: Record<string, number> = {
  F32: 4, BF16: 2, F16: 2, F8_E4M3: 1, F8_E5M2: 1, F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** fp32 → bf16 bits, round to nearest even (torch's conversion); NaN → 0x7fc0. */
export function f32ToBf16Bits(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(b: number): number {
  u32buf[0] = (b & 0xffff) << 16;
  return f32buf[0]!;
}

/** fp32 → fp16 bits, round to nearest even, overflow → ±Inf. */
export function f32ToF16Bits(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  e = half >>> 10;
  return sign | (e >= 0x1f ? 0x7c00 : half);
}

export function f16BitsToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function rne(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** fp32 → float8 e4m3fn bits (bias 7, no infinities, max 448), round to nearest even, saturating; NaN → 0x7f. */
export function f32ToE4M3Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7f;
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const a = Math.abs(x);
  if (a >= 464) return sign | 0x7e; // beyond the midpoint between 448 and (non-existent) 480: saturate
  if (a < 2 ** -6) {
    const m = rne(a / 2 ** -9); // subnormal steps of 2^-9; m = 8 rounds up into the smallest normal (0x08)
    return sign | m;
  }
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  let m = rne((a / 2 ** e - 1) * 8);
  if (m === 8) {
    m = 0;
    e++;
  }
  const be = e + 7;
  if (be > 15 || (be === 15 && m === 7)) return sign | 0x7e;
  return sign | (be << 3) | m;
}

export function e4m3BitsToF32(b: number): number {
  const s = b & 0x80 ? -1 : 1;
  const e = (b >> 3) & 0xf;
  const m = b & 7;
  if (e === 15 && m === 7) return NaN;
  if (e === 0) return s * m * 2 ** -9;
  return s * (1 + m / 8) * 2 ** (e - 7);
}

/** Encodes values as little-endian bytes of `dtype`. */
export function encodeValues(values: ArrayLike<number>, dtype: WriterDType): Uint8Array {
  const n = values.length;
  const size = SIZES[dtype];
  if (size === undefined) throw new Error(`encodeValues: unknown dtype ${dtype}`);
  const out = new Uint8Array(n * size);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    switch (dtype) {
      case 'F32': dv.setFloat32(i * 4, v, true); break;
      case 'F64': dv.setFloat64(i * 8, v, true); break;
      case 'BF16': dv.setUint16(i * 2, f32ToBf16Bits(v), true); break;
      case 'F16': dv.setUint16(i * 2, f32ToF16Bits(v), true); break;
      case 'F8_E4M3': out[i] = f32ToE4M3Bits(v); break;
      case 'I64': dv.setBigInt64(i * 8, BigInt(Math.trunc(v)), true); break;
      case 'U64': dv.setBigUint64(i * 8, BigInt(Math.trunc(v)), true); break;
      case 'I32': dv.setInt32(i * 4, v, true); break;
      case 'U32': dv.setUint32(i * 4, v, true); break;
      case 'I16': dv.setInt16(i * 2, v, true); break;
      case 'U16': dv.setUint16(i * 2, v, true); break;
      case 'I8': dv.setInt8(i, v); break;
      case 'U8': case 'BOOL': out[i] = v; break;
      default: throw new Error(`encodeValues: cannot encode ${dtype}`);
    }
  }
  return out;
}

/** DeepSeek FP8 block quantisation of a [rows, cols] fp32 matrix: scale = amax/448 per 128×128 block;
 *  data = e4m3(x / scale); weight_scale_inv = scale (so w ≈ e4m3 · scale_inv). */
export function quantizeFp8Blockwise(values: ArrayLike<number>, rows: number, cols: number, block = 128): { data: Uint8Array; scaleInv: Float32Array; scaleShape: [number, number] } {
  const br = Math.ceil(rows / block);
  const bc = Math.ceil(cols / block);
  const scaleInv = new Float32Array(br * bc);
  const data = new Uint8Array(rows * cols);
  for (let bi = 0; bi < br; bi++) {
    for (let bj = 0; bj < bc; bj++) {
      let amax = 0;
      for (let r = bi * block; r < Math.min(rows, (bi + 1) * block); r++) {
        for (let c = bj * block; c < Math.min(cols, (bj + 1) * block); c++) amax = Math.max(amax, Math.abs(values[r * cols + c]!));
      }
      const scale = Math.fround(amax > 0 ? amax / 448 : 1);
      scaleInv[bi * bc + bj] = scale;
      for (let r = bi * block; r < Math.min(rows, (bi + 1) * block); r++) {
        for (let c = bj * block; c < Math.min(cols, (bj + 1) * block); c++) data[r * cols + c] = f32ToE4M3Bits(values[r * cols + c]! / scale);
      }
    }
  }
  return { data, scaleInv, scaleShape: [br, bc] };
}

/** The bytes of a safetensors file holding `tensors` (in order). */
export function encodeSafetensors(tensors: TensorSpec[], opts: WriteOptions = {}): Uint8Array {
  const align = opts.align ?? 8;
  let header: Record<string, unknown> = {};
  if (opts.metadata) header.__metadata__ = opts.metadata;
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const t of tensors) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    let bytes: Uint8Array;
    if (t.data) bytes = t.data;
    else if (t.values) bytes = encodeValues(t.values, t.dtype);
    else bytes = new Uint8Array(numel * (SIZES[t.dtype] ?? 1));
    if (!t.data && t.values && t.values.length !== numel) {
      throw new Error(`encodeSafetensors: ${t.name} has ${t.values.length} values for shape [${t.shape.join(', ')}]`);
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    blobs.push(bytes);
    offset += bytes.byteLength;
  }
  if (opts.patchHeader) header = opts.patchHeader(header) ?? header;
  let json = JSON.stringify(header);
  const enc = new TextEncoder();
  let hb = enc.encode(json);
  const pad = (align - ((8 + hb.byteLength) % align)) % align;
  if (pad > 0) {
    json += ' '.repeat(pad);
    hb = enc.encode(json);
  }
  const out = new Uint8Array(8 + hb.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.byteLength), true);
  out.set(hb, 8);
  let at = 8 + hb.byteLength;
  for (const b of blobs) {
    out.set(b, at);
    at += b.byteLength;
  }
  return out;
}

export function writeSafetensors(file: string, tensors: TensorSpec[], opts: WriteOptions = {}): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, encodeSafetensors(tensors, opts));
}

/** Writes shards model-0000i-of-0000n.safetensors and model.safetensors.index.json; returns the shard names. */
export function writeShardedSafetensors(dir: string, shards: TensorSpec[][], opts: WriteOptions = {}): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const n = shards.length;
  const names: string[] = [];
  const weightMap: Record<string, string> = {};
  let total = 0;
  shards.forEach((tensors, i) => {
    const name = `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
    const bytes = encodeSafetensors(tensors, opts);
    fs.writeFileSync(path.join(dir, name), bytes);
    names.push(name);
    for (const t of tensors) weightMap[t.name] = name;
    total += bytes.byteLength;
  });
  fs.writeFileSync(
    path.join(dir, 'model.safetensors.index.json'),
    JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2),
  );
  return names;
}
