import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import test from 'node:test';

import {
  openCheckpoint,
  openSafetensors,
  parseSafetensors,
  readSafetensorsHeader,
  type MapFile,
} from '../../sidecar/src/engine/safetensors';
import { bytesToFloat32 } from '../../sidecar/src/engine/weights';
import {
  bf16BitsToF32,
  e4m3BitsToF32,
  encodeSafetensors,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToE4M3Bits,
  f32ToF16Bits,
  writeSafetensors,
  writeShardedSafetensors,
  type TensorSpec,
} from '../helpers/safetensors-writer';
import { tempDir } from '../helpers/tiny-model';
import { expectError } from '../helpers/errors';

/** Stands in for native.mapFile: a private copy of the file (the real one maps it read-only). */
const mapFile: MapFile = (p) => {
  const b = fs.readFileSync(p);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
};

function specs(): TensorSpec[] {
  return [
    { name: 'a.weight', dtype: 'F32', shape: [2, 3], values: [1, 2, 3, 4, 5, 6] },
    { name: 'b.weight', dtype: 'BF16', shape: [4], values: [0.5, -1, 2, 1e-3] },
    { name: 'c.ids', dtype: 'I64', shape: [2], values: [7, 9] },
  ];
}


function withDir(fn: (dir: string) => void): void {
  const dir = tempDir('glance-st-');
  try {
    fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A file image with a hand-written header. */
function rawFile(header: string, data: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): Uint8Array {
  const hb = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + hb.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(hb.byteLength), true);
  out.set(hb, 8);
  out.set(data, 8 + hb.byteLength);
  return out;
}

test('writes and reads back a valid file: tensors, metadata, offsets, bytes', () => {
  withDir((dir) => {
    const file = path.join(dir, 'model.safetensors');
    writeSafetensors(file, specs(), { metadata: { format: 'pt' } });
    const st = openSafetensors(file, mapFile);
    assert.equal(st.dataOffset % 8, 0, 'header padded to 8 bytes');
    assert.deepEqual(st.metadata, { format: 'pt' });
    assert.deepEqual([...st.tensors.keys()], ['a.weight', 'b.weight', 'c.ids']);
    const a = st.tensors.get('a.weight')!;
    assert.deepEqual(a.shape, [2, 3]);
    assert.equal(a.numel, 6);
    assert.equal(a.usable, true);
    assert.equal(st.tensors.get('c.ids')!.usable, false, 'I64 is accepted but unusable');
    assert.deepEqual(Array.from(bytesToFloat32(st.bytes('a.weight'), 'F32', 6)), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(Array.from(bytesToFloat32(st.bytes('b.weight'), 'BF16', 4)), [0.5, -1, 2, bf16BitsToF32(f32ToBf16Bits(1e-3))]);
    // header-only reading agrees
    const h = readSafetensorsHeader(file);
    assert.equal(h.dataOffset, st.dataOffset);
    assert.deepEqual([...h.tensors.values()], [...st.tensors.values()]);
  });
});

test('file shorter than 8 bytes', () => {
  withDir((dir) => {
    const file = path.join(dir, 'short.safetensors');
    fs.writeFileSync(file, new Uint8Array([1, 2, 3, 4, 5]));
    expectError(() => openSafetensors(file, mapFile), 'bad_safetensors', /short\.safetensors/, /file is 5 bytes, shorter than the 8-byte header length/);
    expectError(() => readSafetensorsHeader(file), 'bad_safetensors', /shorter than the 8-byte header length/);
    fs.writeFileSync(file, new Uint8Array(0));
    expectError(() => openSafetensors(file, mapFile), 'bad_safetensors', /file is 0 bytes/);
  });
});

test('header length beyond the file', () => {
  withDir((dir) => {
    const file = path.join(dir, 'cut.safetensors');
    const full = encodeSafetensors(specs());
    fs.writeFileSync(file, full.subarray(0, 40));
    expectError(() => openSafetensors(file, mapFile), 'bad_safetensors', /cut\.safetensors/, /header length \d+ runs past the end of the file \(40 bytes, so at most 32 header bytes\)/);
    fs.writeFileSync(file, rawFile('{}', new Uint8Array(0), 2n ** 60n));
    expectError(() => readSafetensorsHeader(file), 'bad_safetensors', /runs past the end/);
  });
});

test('header that is not JSON, not UTF-8, or not an object', () => {
  withDir((dir) => {
    const file = path.join(dir, 'x.safetensors');
    fs.writeFileSync(file, rawFile('{"a.weight": {"dtype": "F32", '));
    expectError(() => openSafetensors(file, mapFile), 'bad_safetensors', /x\.safetensors: header is not valid JSON/, /starts with "\{\\"a\.weight/);
    fs.writeFileSync(file, rawFile('[1, 2, 3]'));
    expectError(() => openSafetensors(file, mapFile), 'bad_safetensors', /header must be a JSON object/, /found an array/);
    fs.writeFileSync(file, rawFile('"hello"'));
    expectError(() => openSafetensors(file, mapFile), 'bad_safetensors', /found string/);
    const bad = rawFile('{}');
    bad[8] = 0xff;
    fs.writeFileSync(file, bad);
    expectError(() => openSafetensors(file, mapFile), 'bad_safetensors', /not valid UTF-8/);
    fs.writeFileSync(file, rawFile('{"t": 5}'));
    expectError(() => openSafetensors(file, mapFile), 'bad_safetensors', /tensor t: entry must be an object/);
    fs.writeFileSync(file, rawFile('{"__metadata__": {"n": 1}}'));
    expectError(() => openSafetensors(file, mapFile), 'bad_safetensors', /__metadata__\.n must be a string/);
  });
});

test('unknown dtype lists the supported ones', () => {
  const img = encodeSafetensors(specs(), {
    patchHeader: (h) => {
      (h['b.weight'] as { dtype: string }).dtype = 'Q4_K';
    },
  });
  const e = expectError(() => parseSafetensors(img.slice().buffer, 'q.safetensors'), 'unknown_dtype', /q\.safetensors: tensor b\.weight has dtype "Q4_K"/, /supported: F32, BF16, F16, F8_E4M3/, /I64/);
  assert.equal(e.details?.tensor, 'b.weight');
});

test('header lies about sizes', () => {
  const img = encodeSafetensors(specs(), {
    patchHeader: (h) => {
      (h['a.weight'] as { shape: number[] }).shape = [3, 3];
    },
  });
  expectError(
    () => parseSafetensors(img.slice().buffer, 'lie.safetensors'),
    'bad_safetensors',
    /lie\.safetensors: tensor a\.weight: header lies about sizes: shape \[3, 3\] of F32 needs 36 bytes but data_offsets \[0, 24\] span 24/,
  );
});

test('bad data_offsets: not integers, end before begin, past the data section', () => {
  const patch = (offs: unknown) =>
    encodeSafetensors(specs(), {
      patchHeader: (h) => {
        (h['b.weight'] as { data_offsets: unknown }).data_offsets = offs;
      },
    });
  expectError(() => parseSafetensors(patch([24.5, 32]).slice().buffer, 'o.safetensors'), 'bad_safetensors', /tensor b\.weight: data_offsets must be \[begin, end\]/);
  expectError(() => parseSafetensors(patch([24]).slice().buffer, 'o.safetensors'), 'bad_safetensors', /data_offsets must be \[begin, end\]/);
  expectError(() => parseSafetensors(patch([32, 24]).slice().buffer, 'o.safetensors'), 'bad_safetensors', /data_offsets \[32, 24\] end before they begin/);
  // the file lost its last bytes
  const img = encodeSafetensors(specs());
  expectError(() => parseSafetensors(img.slice(0, img.byteLength - 4).buffer, 'trunc.safetensors'), 'bad_safetensors', /tensor c\.ids: data_offsets \[32, 48\] reach past the data section, which has 44 bytes; the file is truncated/);
  // shapes must be lists of non-negative integers
  const img2 = encodeSafetensors(specs(), {
    patchHeader: (h) => {
      (h['a.weight'] as { shape: unknown }).shape = [2, -3];
    },
  });
  expectError(() => parseSafetensors(img2.slice().buffer, 's.safetensors'), 'bad_safetensors', /tensor a\.weight: shape must be a list of non-negative integers/);
});

test('overlapping ranges', () => {
  const img = encodeSafetensors(
    [
      { name: 'x', dtype: 'F32', shape: [4], values: [1, 2, 3, 4] },
      { name: 'y', dtype: 'F32', shape: [2], values: [5, 6] },
    ],
    {
      patchHeader: (h) => {
        (h.y as { data_offsets: number[] }).data_offsets = [8, 16];
      },
    },
  );
  expectError(() => parseSafetensors(img.slice().buffer, 'ov.safetensors'), 'bad_safetensors', /ov\.safetensors: tensors x \[0, 16\] and y \[8, 16\] overlap in the data section/);
  // empty tensors never overlap
  const ok = encodeSafetensors([
    { name: 'e', dtype: 'F32', shape: [0], values: [] },
    { name: 'f', dtype: 'F32', shape: [1], values: [1] },
  ]);
  assert.equal(parseSafetensors(ok.slice().buffer, 'ok').tensors.size, 2);
});

test('sharded checkpoint: index, tensors from every shard', () => {
  withDir((dir) => {
    const names = writeShardedSafetensors(dir, [specs().slice(0, 2), specs().slice(2)]);
    assert.deepEqual(names, ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    const ck = openCheckpoint(dir, mapFile);
    assert.equal(ck.files.length, 2);
    assert.deepEqual([...ck.tensors.keys()].sort(), ['a.weight', 'b.weight', 'c.ids']);
    assert.equal(path.basename(ck.tensors.get('c.ids')!.file), names[1]);
    assert.equal(ck.bytes('c.ids').byteLength, 16);
    const headerOnly = openCheckpoint(dir, null);
    assert.equal(headerOnly.mapped, false);
    assert.throws(() => headerOnly.bytes('a.weight'), /header-only/);
  });
});

test('sharded checkpoint: missing shard names the file', () => {
  withDir((dir) => {
    const names = writeShardedSafetensors(dir, [specs().slice(0, 2), specs().slice(2)]);
    fs.rmSync(path.join(dir, names[1]!));
    const e = expectError(() => openCheckpoint(dir, mapFile), 'missing_file', /shard model-00002-of-00002\.safetensors is listed in model\.safetensors\.index\.json \(for 1 tensor\(s\)\)/, /does not exist/);
    assert.equal(path.basename(String(e.details?.file)), 'model-00002-of-00002.safetensors');
  });
});

test('sharded checkpoint: index and shards disagree, duplicates, bad index', () => {
  withDir((dir) => {
    writeShardedSafetensors(dir, [specs().slice(0, 2), specs().slice(2)]);
    const idxFile = path.join(dir, 'model.safetensors.index.json');
    const idx = JSON.parse(fs.readFileSync(idxFile, 'utf8')) as { weight_map: Record<string, string> };
    idx.weight_map['a.weight'] = 'model-00002-of-00002.safetensors';
    fs.writeFileSync(idxFile, JSON.stringify(idx));
    expectError(() => openCheckpoint(dir, null), 'bad_safetensors', /puts tensor a\.weight in model-00002-of-00002\.safetensors, but it is in model-00001-of-00002\.safetensors/);
    idx.weight_map['a.weight'] = '../escape.safetensors';
    fs.writeFileSync(idxFile, JSON.stringify(idx));
    expectError(() => openCheckpoint(dir, null), 'bad_safetensors', /weight_map\["a\.weight"\] must be a shard file name inside the model directory/);
    fs.writeFileSync(idxFile, '{"weight_map": 3}');
    expectError(() => openCheckpoint(dir, null), 'bad_safetensors', /must have a "weight_map" object/);
    fs.writeFileSync(idxFile, 'nope');
    expectError(() => openCheckpoint(dir, null), 'bad_safetensors', /index\.json is not valid JSON/);
  });
  withDir((dir) => {
    writeShardedSafetensors(dir, [specs().slice(0, 2), specs().slice(1)]);
    expectError(() => openCheckpoint(dir, null), 'bad_safetensors', /tensor b\.weight is stored twice: in model-00001-of-00002\.safetensors and in model-00002-of-00002\.safetensors/);
  });
});

test('a directory without weights, and single files found without an index', () => {
  withDir((dir) => {
    expectError(() => openCheckpoint(dir, null), 'missing_file', /has no weights: expected model\.safetensors, or model\.safetensors\.index\.json with its shards/);
    writeSafetensors(path.join(dir, 'weights-b.safetensors'), specs().slice(1));
    writeSafetensors(path.join(dir, 'weights-a.safetensors'), specs().slice(0, 1));
    const ck = openCheckpoint(dir, null);
    assert.deepEqual(ck.files.map((f) => path.basename(f)), ['weights-a.safetensors', 'weights-b.safetensors']);
  });
  expectError(() => openCheckpoint('/nonexistent/glance', null), 'missing_file', /model directory \/nonexistent\/glance does not exist/);
});

test('dtype encoders of the writer round-trip', () => {
  for (const v of [0, 1, -2.5, 65504, 3 * 2 ** -24, 2 ** -14, 1023 * 2 ** -24]) assert.equal(f16BitsToF32(f32ToF16Bits(v)), v, `f16 ${v}`);
  assert.equal(f16BitsToF32(f32ToF16Bits(1 + 2 ** -11)), 1, 'ties to even');
  assert.equal(f16BitsToF32(f32ToF16Bits(1e6)), Infinity);
  assert.equal(bf16BitsToF32(f32ToBf16Bits(1 + 2 ** -8)), 1, 'bf16 ties to even');
  assert.equal(bf16BitsToF32(f32ToBf16Bits(1 + 3 * 2 ** -8)), 1 + 2 ** -6);
  // e4m3fn: every code round-trips; saturation at 448; subnormals
  for (let b = 0; b < 256; b++) {
    if ((b & 0x7f) === 0x7f) continue;
    const v = e4m3BitsToF32(b);
    assert.equal(f32ToE4M3Bits(v), b === 0x80 ? 0x80 : b, `code ${b} (${v})`);
  }
  assert.equal(e4m3BitsToF32(f32ToE4M3Bits(1000)), 448);
  assert.equal(e4m3BitsToF32(f32ToE4M3Bits(2 ** -9)), 2 ** -9);
  assert.equal(e4m3BitsToF32(f32ToE4M3Bits(2 ** -11)), 0);
  // the engine's F16 decoding matches the writer's
  const img = encodeSafetensors([{ name: 'h', dtype: 'F16', shape: [3], values: [0.1, -3, 1e-6] }]);
  const st = parseSafetensors(img.slice().buffer, 'h');
  const got = bytesToFloat32(st.bytes('h'), 'F16', 3);
  assert.deepEqual(Array.from(got), [0.1, -3, 1e-6].map((v) => Math.fround(f16BitsToF32(f32ToF16Bits(v)))));
});
