// Device selection (sidecar/src/engine/device.ts): --device auto|cuda|cpu and --gpu-memory parsing. Runs everywhere;
// the no-GPU behaviours are checked where no CUDA device is usable (CI), the GPU ones in test/gpu.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import test from 'node:test';

import { loadModelOnDevice, parseGpuMemory } from '../../sidecar/src/engine/device';
import { GlanceError } from '../../sidecar/src/engine/errors';
import { loadNative } from '../../sidecar/src/native/index';
import { fixturesDir } from '../helpers/golden';

const native = loadNative();
const info = native.cudaInfo();
const dir = path.join(fixturesDir(), 'golden', 'v32_fp32');
const noGpu = info.available ? 'a CUDA device is present (covered by test/gpu)' : false;

test('parseGpuMemory: units, fractions of the device, and clear errors', () => {
  const dev = 80 * 1024 ** 3;
  assert.equal(parseGpuMemory('24GiB', dev), 24 * 1024 ** 3);
  assert.equal(parseGpuMemory('24G', dev), 24 * 1024 ** 3);
  assert.equal(parseGpuMemory('512MiB', dev), 512 * 1024 ** 2);
  assert.equal(parseGpuMemory('0.5', dev), 40 * 1024 ** 3);
  assert.equal(parseGpuMemory(2 ** 30, dev), 2 ** 30);
  for (const bad of ['lots', '-1GiB', '12 parsecs', '1KiB']) {
    assert.throws(() => parseGpuMemory(bad, dev), (e: unknown) => e instanceof GlanceError && e.code === 'bad_input' && /--gpu-memory/.test(e.message));
  }
});

test('--device cpu runs on the CPU', async () => {
  const r = await loadModelOnDevice(dir, { device: 'cpu', attention: 'sparse', indexerPrecision: 'fp32' });
  assert.equal(r.kind, 'cpu');
  assert.match(r.device, /^CPU \d+ threads/);
  assert.equal(r.fallback, undefined);
  assert.equal(r.model.createSequence().forward(Int32Array.of(1, 2, 3), false).length, r.model.config.vocabSize);
});

test('without a GPU: auto falls back to the CPU and says why; cuda is a clear error unless the fallback is asked for', { skip: noGpu }, async () => {
  const auto = await loadModelOnDevice(dir, { device: 'auto', attention: 'sparse' });
  assert.equal(auto.kind, 'cpu');
  assert.match(auto.fallback ?? '', /no CUDA device/);
  await assert.rejects(
    loadModelOnDevice(dir, { device: 'cuda', attention: 'sparse' }),
    (e: unknown) => e instanceof GlanceError && e.code === 'device_unavailable' && /--device cpu/.test(e.message),
  );
  const fb = await loadModelOnDevice(dir, { device: 'cuda', attention: 'sparse', cpuFallback: true });
  assert.equal(fb.kind, 'cpu');
  assert.match(fb.fallback ?? '', /running on the CPU instead/);
});

test('an unknown device name is a bad_input error', async () => {
  await assert.rejects(
    loadModelOnDevice(dir, { device: 'tpu' as 'cpu', attention: 'sparse' }),
    (e: unknown) => e instanceof GlanceError && e.code === 'bad_input',
  );
});
