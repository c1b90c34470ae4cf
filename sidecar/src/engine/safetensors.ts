// safetensors reader over memory-mapped files: tensor data is never copied into the JS heap.
// Format: 8-byte little-endian header length N, N bytes of UTF-8 JSON header
// {"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}},
// then the data section; offsets are relative to the data section's start (8 + N).
// Sharded checkpoints: model.safetensors.index.json {"weight_map": {"tensor": "model-00001-of-00002.safetensors"}}.

import * as fs from 'node:fs';
import * as path from 'node:path';

import { GlanceError, fmtShape } from './errors';

/** dtypes the engine can compute with. */
export const USABLE_DTYPES = ['F32', 'BF16', 'F16', 'F8_E4M3'] as const;
export type UsableDType = (typeof USABLE_DTYPES)[number];

/** Byte sizes of every dtype safetensors defines; the ones outside USABLE_DTYPES are accepted but unusable. */
const DTYPE_SIZES: Readonly<Record<string, number | undefined>> = {
  F32: 4,
  BF16: 2,
  F16: 2,
  F8_E4M3: 1,
  F64: 8,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E5M2: 1,
};

export type DType = UsableDType | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL' | 'F8_E5M2';

/** Largest header we accept (the safetensors reference implementation uses the same 100 MB limit). */
const MAX_HEADER_BYTES = 100_000_000;

export function dtypeSize(dtype: string): number {
  const s = DTYPE_SIZES[dtype];
  if (s === undefined) throw new Error(`unknown dtype ${dtype}`);
  return s;
}

export function isUsableDType(dtype: string): dtype is UsableDType {
  return (USABLE_DTYPES as readonly string[]).includes(dtype);
}

export interface TensorInfo {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** product of shape (1 for a scalar) */
  readonly numel: number;
  /** absolute byte offsets in the file */
  readonly begin: number;
  readonly end: number;
  /** the file this tensor lives in */
  readonly file: string;
  /** false for dtypes the engine cannot compute with (I64, BOOL, …) */
  readonly usable: boolean;
}

export interface SafetensorsHeader {
  readonly file: string;
  readonly fileSize: number;
  readonly headerLength: number;
  /** absolute offset of the data section (8 + headerLength) */
  readonly dataOffset: number;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Readonly<Record<string, string>> | null;
}

function bad(file: string, message: string, details: Record<string, unknown> = {}): GlanceError {
  return new GlanceError('bad_safetensors', `${file}: ${message}`, { file, ...details });
}

/** Reads the 8-byte header length; `prefix` holds at least the first 8 bytes of the file. */
function headerLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8) {
    throw bad(file, `file is ${fileSize} bytes, shorter than the 8-byte header length; it is truncated or not a safetensors file`, { fileSize });
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(fileSize - 8)) {
    throw bad(
      file,
      `header length ${n} runs past the end of the file (${fileSize} bytes, so at most ${fileSize - 8} header bytes); ` +
        'the file is truncated or not a safetensors file',
      { headerLength: n.toString(), fileSize },
    );
  }
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw bad(file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`, { headerLength: n.toString() });
  }
  return Number(n);
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Parses and validates a header. `headerBytes` are the N JSON bytes (after the 8-byte length). */
export function parseHeader(headerBytes: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  const n = headerBytes.byteLength;
  const dataOffset = 8 + n;
  const dataSize = fileSize - dataOffset;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw bad(file, `header (${n} bytes) is not valid UTF-8; the file is not a safetensors file`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    const head = text.slice(0, 40).replace(/[^\x20-\x7e]/g, '?');
    throw bad(file, `header is not valid JSON (${(e as Error).message}); it starts with ${JSON.stringify(head)}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw bad(file, `header must be a JSON object mapping tensor names to {dtype, shape, data_offsets}; found ${Array.isArray(json) ? 'an array' : typeof json}`);
  }
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> | null = null;
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
        throw bad(file, '__metadata__ must be an object of string values');
      }
      metadata = {};
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') throw bad(file, `__metadata__.${k} must be a string; found ${JSON.stringify(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      throw bad(file, `tensor ${name}: entry must be an object {dtype, shape, data_offsets}`, { tensor: name });
    }
    const e = entry as Record<string, unknown>;
    const dtype = e.dtype;
    if (typeof dtype !== 'string' || DTYPE_SIZES[dtype] === undefined) {
      throw new GlanceError(
        'unknown_dtype',
        `${file}: tensor ${name} has dtype ${JSON.stringify(dtype)}, which is not a safetensors dtype this engine knows; ` +
          `supported: ${USABLE_DTYPES.join(', ')} (also accepted but unusable for weights: ` +
          `${Object.keys(DTYPE_SIZES).filter((k) => !isUsableDType(k)).join(', ')})`,
        { file, tensor: name, dtype },
      );
    }
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      throw bad(file, `tensor ${name}: shape must be a list of non-negative integers; found ${JSON.stringify(shape)}`, { tensor: name });
    }
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !isNonNegInt(offs[0]) || !isNonNegInt(offs[1])) {
      throw bad(file, `tensor ${name}: data_offsets must be [begin, end], two non-negative integers; found ${JSON.stringify(offs)}`, { tensor: name });
    }
    const [b, en] = offs as [number, number];
    if (en < b) throw bad(file, `tensor ${name}: data_offsets [${b}, ${en}] end before they begin`, { tensor: name });
    if (en > dataSize) {
      throw bad(
        file,
        `tensor ${name}: data_offsets [${b}, ${en}] reach past the data section, which has ${dataSize} bytes; the file is truncated`,
        { tensor: name, dataSize },
      );
    }
    let numel = 1;
    for (const s of shape as number[]) numel *= s;
    const expected = numel * DTYPE_SIZES[dtype]!;
    if (!Number.isSafeInteger(expected) || expected !== en - b) {
      throw bad(
        file,
        `tensor ${name}: header lies about sizes: shape ${fmtShape(shape as number[])} of ${dtype} needs ${expected} bytes ` +
          `but data_offsets [${b}, ${en}] span ${en - b}`,
        { tensor: name, expectedBytes: expected, foundBytes: en - b },
      );
    }
    tensors.set(name, {
      name,
      dtype: dtype as DType,
      shape: shape as number[],
      numel,
      begin: dataOffset + b,
      end: dataOffset + en,
      file,
      usable: isUsableDType(dtype),
    });
  }
  // overlapping ranges
  const sorted = [...tensors.values()].filter((t) => t.end > t.begin).sort((x, y) => x.begin - y.begin || x.end - y.end);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.begin < prev.end) {
      throw bad(
        file,
        `tensors ${prev.name} [${prev.begin - dataOffset}, ${prev.end - dataOffset}] and ${cur.name} ` +
          `[${cur.begin - dataOffset}, ${cur.end - dataOffset}] overlap in the data section`,
        { tensors: [prev.name, cur.name] },
      );
    }
  }
  return { file, fileSize, headerLength: n, dataOffset, tensors, metadata };
}

/** A safetensors file whose bytes are available (memory-mapped, or a buffer in tests). */
export interface SafetensorsFile extends SafetensorsHeader {
  readonly buffer: ArrayBuffer;
  /** the tensor's bytes, a view into the mapping (read-only memory: never write through it) */
  bytes(name: string): Uint8Array;
}

/** Maps a file; the native addon's mapFile in production. */
export type MapFile = (path: string) => ArrayBuffer;

function statSize(file: string): number {
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new GlanceError('io', `${file} is not a regular file`, { file });
    return st.size;
  } catch (e) {
    if (e instanceof GlanceError) throw e;
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new GlanceError('missing_file', `${file} does not exist`, { file });
    }
    throw new GlanceError('io', `cannot stat ${file}: ${(e as Error).message}`, { file }, { cause: e });
  }
}

/** Parses a safetensors image held in `buffer` (a mapping of `file`). */
export function parseSafetensors(buffer: ArrayBuffer, file: string): SafetensorsFile {
  const all = new Uint8Array(buffer);
  const n = headerLength(all.subarray(0, Math.min(8, all.byteLength)), all.byteLength, file);
  const header = parseHeader(all.subarray(8, 8 + n), all.byteLength, file);
  return {
    ...header,
    buffer,
    bytes(name: string): Uint8Array {
      const t = header.tensors.get(name);
      if (!t) throw new GlanceError('missing_tensor', `${file}: no tensor ${name}`, { file, tensor: name });
      return new Uint8Array(buffer, t.begin, t.end - t.begin);
    },
  };
}

/** Maps and parses one .safetensors file. */
export function openSafetensors(file: string, mapFile: MapFile): SafetensorsFile {
  const size = statSize(file);
  if (size < 8) headerLength(new Uint8Array(8), size, file); // throws the "shorter than 8 bytes" error
  let buffer: ArrayBuffer;
  try {
    buffer = mapFile(file);
  } catch (e) {
    throw new GlanceError('io', `cannot map ${file}: ${(e as Error).message}`, { file }, { cause: e });
  }
  if (buffer.byteLength !== size) {
    throw new GlanceError('io', `${file}: mapped ${buffer.byteLength} bytes but the file has ${size}`, { file });
  }
  return parseSafetensors(buffer, file);
}

/** Reads only the header of a file (two small reads, no mapping): for `info` and tools without the addon. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const size = statSize(file);
  const fd = fs.openSync(file, 'r');
  try {
    const prefix = new Uint8Array(8);
    if (size >= 8) fs.readSync(fd, prefix, 0, 8, 0);
    const n = headerLength(prefix, size, file);
    const hb = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const r = fs.readSync(fd, hb, got, n - got, 8 + got);
      if (r === 0) break;
      got += r;
    }
    if (got !== n) throw bad(file, `could read only ${got} of ${n} header bytes`);
    return parseHeader(hb, size, file);
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// checkpoints (one file or shards)

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

/** The tensors of a checkpoint directory, over one or more files. */
export interface Checkpoint {
  readonly dir: string;
  /** files in the order they were opened (full paths) */
  readonly files: readonly string[];
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** bytes of a tensor; throws when the checkpoint was opened header-only */
  bytes(name: string): Uint8Array;
  /** true when tensor bytes are available (files were mapped) */
  readonly mapped: boolean;
}

/** Which .safetensors files make up the checkpoint in `dir`, and (for shards) which tensor each file should hold. */
export function listCheckpointFiles(dir: string): { files: string[]; weightMap: Map<string, string> | null } {
  const indexPath = path.join(dir, INDEX_FILE);
  if (fs.existsSync(indexPath)) {
    let json: unknown;
    try {
      json = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
    } catch (e) {
      throw new GlanceError('bad_safetensors', `${indexPath} is not valid JSON: ${(e as Error).message}`, { file: indexPath });
    }
    const wm = typeof json === 'object' && json !== null ? (json as Record<string, unknown>).weight_map : undefined;
    if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) {
      throw new GlanceError('bad_safetensors', `${indexPath} must have a "weight_map" object mapping tensor names to shard files`, { file: indexPath });
    }
    const weightMap = new Map<string, string>();
    const files: string[] = [];
    for (const [tensor, shard] of Object.entries(wm as Record<string, unknown>)) {
      if (typeof shard !== 'string' || shard === '' || path.isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
        throw new GlanceError(
          'bad_safetensors',
          `${indexPath}: weight_map["${tensor}"] must be a shard file name inside the model directory; found ${JSON.stringify(shard)}`,
          { file: indexPath, tensor },
        );
      }
      const full = path.join(dir, shard);
      weightMap.set(tensor, full);
      if (!files.includes(full)) files.push(full);
    }
    for (const f of files) {
      if (!fs.existsSync(f)) {
        const count = [...weightMap.values()].filter((x) => x === f).length;
        throw new GlanceError(
          'missing_file',
          `shard ${path.basename(f)} is listed in ${INDEX_FILE} (for ${count} tensor(s)) but ${f} does not exist`,
          { file: f, index: indexPath },
        );
      }
    }
    return { files, weightMap };
  }
  const single = path.join(dir, SINGLE_FILE);
  if (fs.existsSync(single)) return { files: [single], weightMap: null };
  let entries: string[] = [];
  try {
    entries = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new GlanceError('missing_file', `model directory ${dir} does not exist`, { dir });
    }
    throw new GlanceError('io', `cannot list ${dir}: ${(e as Error).message}`, { dir }, { cause: e });
  }
  if (entries.length === 0) {
    throw new GlanceError(
      'missing_file',
      `${dir} has no weights: expected ${SINGLE_FILE}, or ${INDEX_FILE} with its shards, or some *.safetensors file`,
      { dir },
    );
  }
  return { files: entries.map((f) => path.join(dir, f)), weightMap: null };
}

/**
 * Opens the checkpoint in `dir`. With `mapFile` every file is mapped and tensor bytes are available; with null
 * only headers are read (enough to validate names, shapes and sizes).
 */
export function openCheckpoint(dir: string, mapFile: MapFile | null): Checkpoint {
  const { files, weightMap } = listCheckpointFiles(dir);
  const tensors = new Map<string, TensorInfo>();
  const opened = new Map<string, SafetensorsFile>();
  for (const f of files) {
    let header: SafetensorsHeader;
    if (mapFile) {
      const st = openSafetensors(f, mapFile);
      opened.set(f, st);
      header = st;
    } else {
      header = readSafetensorsHeader(f);
    }
    for (const [name, t] of header.tensors) {
      const prev = tensors.get(name);
      if (prev) {
        throw new GlanceError(
          'bad_safetensors',
          `tensor ${name} is stored twice: in ${path.basename(prev.file)} and in ${path.basename(f)}`,
          { tensor: name, files: [prev.file, f] },
        );
      }
      tensors.set(name, t);
    }
  }
  if (weightMap) {
    for (const [name, shard] of weightMap) {
      const t = tensors.get(name);
      if (!t || t.file !== shard) {
        throw new GlanceError(
          'bad_safetensors',
          `${INDEX_FILE} puts tensor ${name} in ${path.basename(shard)}, but ` +
            (t ? `it is in ${path.basename(t.file)}` : `${path.basename(shard)} has no such tensor`),
          { tensor: name, file: shard },
        );
      }
    }
  }
  return {
    dir,
    files,
    tensors,
    mapped: mapFile !== null,
    bytes(name: string): Uint8Array {
      const t = tensors.get(name);
      if (!t) throw new GlanceError('missing_tensor', `no tensor ${name} in ${files.map((f) => path.basename(f)).join(', ')}`, { tensor: name });
      const st = opened.get(t.file);
      if (!st) throw new Error(`checkpoint ${dir} was opened header-only; tensor bytes of ${name} are not available`);
      return st.bytes(name);
    },
  };
}
