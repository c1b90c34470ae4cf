// The whole forward pass on the GPU (sidecar/src/engine/gpu + kernels/cuda/model_runner.cu):
//   - the golden HF fixtures through the CUDA path: logits within bf16 tolerance, the same greedy tokens;
//   - the embedded model (models/glance-tiny) GPU vs CPU: prompt logits, and teacher-forced decode steps past
//     index_topk (sparse selection live) and past a prefill-chunk boundary;
//   - decode by CUDA graph equals decode op by op, bit for bit;
//   - budgets: a context that does not fit is a clear context_overflow error, not a crash.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import test from 'node:test';

import { loadModelOnDevice } from '../../sidecar/src/engine/device';
import { GlanceError } from '../../sidecar/src/engine/errors';
import type { GpuModel } from '../../sidecar/src/engine/gpu/gpu-model';
import { loadModel, type Model } from '../../sidecar/src/engine/model';
import { argmax, decodeF32, fixturesDir, relativeError } from '../helpers/golden';
import { gpuSkipReason, randInt } from './gpu-helpers';

const skip = gpuSkipReason();
/** With the fp32 latent cache and split-bf16 GEMMs the GPU does the CPU's fp32 math up to summation order. */
const FP32_TOL = 1e-4;
/** With the bf16 latent cache, tokens whose indexer scores nearly tie at the top-k threshold can select other
 *  positions than fp32 math does (random-weight fixtures have many near-ties): logits then move by more than bf16
 *  rounding alone. Measured on the H100, 2026-11-22: 0.8e-3 … 1.4e-2 across the fixtures. */
const BF16_CACHE_TOL = 3e-2;

async function gpuModel(
  dir: string, indexerPrecision: 'fp32' | 'fp8', gpuMemory?: string, kvCache?: 'fp32' | 'bf16', attentionKernels?: 'tuned' | 'generic',
): Promise<GpuModel> {
  const r = await loadModelOnDevice(dir, {
    device: 'cuda', attention: 'sparse', indexerPrecision, ...(gpuMemory ? { gpuMemory } : {}), ...(kvCache ? { kvCache } : {}),
    ...(attentionKernels ? { attentionKernels } : {}),
  });
  assert.equal(r.kind, 'cuda', `expected the CUDA model, got ${r.device}`);
  return r.model as GpuModel;
}

function greedy(model: Model, prompt: number[], n: number): number[] {
  const seq = model.createSequence(prompt.length + n + 1);
  let logits = seq.forward(Int32Array.from(prompt), false);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const next = argmax(logits);
    out.push(next);
    if (i + 1 < n) logits = seq.forward(Int32Array.of(next), false);
  }
  return out;
}

interface Expected {
  ids: number[];
  logits_f32_b64: string;
  logits_f32math_b64?: string;
  greedy: { prompt_ids: number[]; new_ids: number[]; compare_first_n?: number };
  dtype: string;
}

const goldenRoot = path.join(fixturesDir(), 'golden');
const goldenNames = fs.existsSync(goldenRoot)
  ? fs.readdirSync(goldenRoot).filter((n) => fs.existsSync(path.join(goldenRoot, n, 'expected.json'))).sort()
  : [];

for (const name of goldenNames) {
  const dir = path.join(goldenRoot, name);
  const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Expected;
  for (const kvCache of ['bf16', 'fp32'] as const) {
    test(`golden ${name} on the GPU (${kvCache} latent cache): logits of every position match HF (${kvCache === 'fp32' ? FP32_TOL : BF16_CACHE_TOL}), same greedy tokens`, { skip }, async () => {
      const model = await gpuModel(dir, 'fp32', undefined, kvCache);
      try {
        const ref = decodeF32(expected.logits_f32math_b64 ?? expected.logits_f32_b64);
        const ours = model.createSequence().forward(Int32Array.from(expected.ids), true);
        const err = relativeError(ours, ref);
        console.log(`# golden ${name} ${kvCache} cache: relative error vs HF fp32 math ${err.toExponential(3)}`);
        const tol = kvCache === 'fp32' ? FP32_TOL : BF16_CACHE_TOL;
        assert.ok(err <= tol, `relative error vs HF ${err.toExponential(3)} > ${tol}`);
        const n = expected.greedy.compare_first_n ?? expected.greedy.new_ids.length;
        assert.deepEqual(greedy(model, expected.greedy.prompt_ids, n), expected.greedy.new_ids.slice(0, n));
      } finally {
        model.dispose();
      }
    });
  }
}

const tinyDir = path.resolve(__dirname, '..', '..', '..', 'models', 'glance-tiny');

// fp32 cache + generic kernels: the CPU's math up to summation order (measured 2026-11-22 on the H100: 9e-6 … 1.5e-5
// prompt, ≤ 1e-4 per decode step, 48/48 greedy). But the FP8 indexer's scores are fp32 sums in another order on each
// side, so a prompt position whose top-k set sits on a near-tie can select another row (and the positions after it
// see a slightly different cache): glance-tiny v0.5 showed one such random prompt (7.5e-3 over the whole prompt, 1e-5
// on the others). The prompt bound is therefore on the median position, with at most a tenth of the positions above
// it; a wrong kernel moves every position. bf16 cache (the default): a step whose top-k set flips at a near-tie can
// move by more (measured up to 0.2), so the bound is on the median step and on the greedy choices.
for (const [kvCache, kernels, tol] of [['fp32', 'generic', 1e-3], ['bf16', 'tuned', 5e-2], ['bf16', 'generic', 5e-2]] as const) test(`glance-tiny: GPU (${kvCache} cache, ${kernels} attention kernels) vs CPU, prompt logits and teacher-forced decode past index_topk`, { skip }, async () => {
  // the same latent-cache precision on both sides (the CPU's default follows the checkpoint dtype: bf16 for glance-tiny)
  const cpu = await loadModel(tinyDir, { attention: 'sparse', indexerPrecision: 'fp8', kvCache });
  const gpu = await gpuModel(tinyDir, 'fp8', undefined, kvCache, kernels);
  try {
    const V = cpu.config.vocabSize;
    const topk = cpu.config.indexer!.topk;
    // A prompt that crosses a prefill chunk (256) and index_topk, then decode steps on top.
    const prompt = Int32Array.from({ length: topk + 40 }, () => 1 + randInt(V - 1));
    const cs = cpu.createSequence(1024);
    const gs = gpu.createSequence(1024);
    const a = cs.forward(prompt, true);
    const b = gs.forward(prompt, true);
    const errPrompt = relativeError(b, a);
    const perPosition = Array.from({ length: prompt.length }, (_, t) => relativeError(b.subarray(t * V, (t + 1) * V), a.subarray(t * V, (t + 1) * V)));
    const medPosition = [...perPosition].sort((x, y) => x - y)[perPosition.length >> 1];
    const above = perPosition.filter((e) => e > tol).length;
    console.log(`# glance-tiny (${kvCache} cache, ${kernels}) prompt logits GPU vs CPU: relative error ${errPrompt.toExponential(3)}, ` +
      `median position ${medPosition.toExponential(3)}, ${above}/${prompt.length} positions above ${tol}`);
    assert.ok(medPosition <= tol, `prompt logits: median position's relative error ${medPosition.toExponential(3)} > ${tol}`);
    if (kvCache === 'bf16') assert.ok(errPrompt <= tol, `prompt logits relative error ${errPrompt.toExponential(3)} > ${tol}`);
    // fp32: the CPU's math, so only positions downstream of a near-tie flip may leave the bound, and few of them. bf16:
    // every row is rounded on both sides and flips are common (11–34 of 296 positions above 5e-2 over the runs), so
    // the whole-prompt bound above is the check.
    if (kvCache === 'fp32') assert.ok(above <= prompt.length / 10, `prompt logits: ${above}/${prompt.length} positions above ${tol} (a near-tie flip moves a few)`);
    let agree = 0;
    let worst = 0;
    const errs: number[] = [];
    const steps = 48;
    let next = argmax(a.subarray((prompt.length - 1) * V));
    for (let i = 0; i < steps; i++) {
      const la = cs.forward(Int32Array.of(next), false);
      const lb = gs.forward(Int32Array.of(next), false);
      const e = relativeError(lb, la);
      errs.push(e);
      if (argmax(la) === argmax(lb)) agree++;
      worst = Math.max(worst, e);
      next = argmax(la); // teacher-forced by the CPU
    }
    console.log(`# glance-tiny (${kvCache} cache, ${kernels}) decode: worst step relative error ${worst.toExponential(3)}, greedy agreement ${agree}/${steps}`);
    const med = [...errs].sort((x, y) => x - y)[errs.length >> 1];
    assert.ok(med <= tol / 2, `median decode-step relative error ${med.toExponential(3)} > ${tol / 2}`);
    if (kvCache === 'fp32') {  // the CPU's math: steps above the bound only downstream of a near-tie flip, few of them
      const stepsAbove = errs.filter((e) => e > tol).length;
      assert.ok(stepsAbove <= steps / 10, `${stepsAbove}/${steps} decode steps above ${tol}`);
    }
    assert.ok(agree >= (kvCache === 'fp32' ? steps - 2 : steps - 4), `greedy choices agree on ${agree}/${steps} steps`);
  } finally {
    gpu.dispose();
  }
});

test('decode by CUDA graph equals decode op by op (bit for bit), across the dense→sparse switch and a graph bucket', { skip }, async () => {
  const gpu = await gpuModel(tinyDir, 'fp8');
  try {
    const V = gpu.config.vocabSize;
    const topk = gpu.config.indexer!.topk;
    const prompt = Int32Array.from({ length: topk - 20 }, () => 1 + randInt(V - 1));
    const graphSeq = gpu.createSequence(4096);
    const stepSeq = gpu.createSequence(4096);
    stepSeq.gpu.setUseGraph(false);
    let lg = graphSeq.forward(prompt, false);
    let ls = stepSeq.forward(prompt, false);
    assert.deepEqual(lg, ls, 'prefill logits');
    for (let i = 0; i < 60; i++) {
      const next = argmax(lg);
      lg = graphSeq.forward(Int32Array.of(next), false);
      ls = stepSeq.forward(Int32Array.of(next), false);
      assert.ok(Buffer.from(lg.buffer).equals(Buffer.from(ls.buffer)), `step ${i} (context ${graphSeq.length}): graph and op-by-op logits differ`);
    }
    assert.ok(graphSeq.gpu.graphsCaptured >= 2, `expected a dense-phase and a sparse-phase graph, got ${graphSeq.gpu.graphsCaptured}`);
    assert.equal(stepSeq.gpu.graphsCaptured, 0);
    // Device-side sampling gives the argmax of the same logits.
    const r = graphSeq.gpu.stepSample(argmax(lg), 0, 0, true);
    assert.equal(r.token, argmax(r.logits!));
  } finally {
    gpu.dispose();
  }
});

test('a context that does not fit the GPU budget is a clear context_overflow error', { skip }, async () => {
  const gpu = await gpuModel(tinyDir, 'fp8', '256MiB');
  try {
    assert.throws(() => gpu.createSequence(10_000_000), (e: unknown) => e instanceof GlanceError && e.code === 'context_overflow' && /GPU memory/.test(e.message));
    const seq = gpu.createSequence(300);
    assert.throws(() => seq.forward(new Int32Array(301).fill(5), false), (e: unknown) => e instanceof GlanceError && e.code === 'context_overflow');
    // still usable after the refusal
    assert.equal(seq.forward(new Int32Array(10).fill(5), false).length, gpu.config.vocabSize);
    assert.equal(seq.length, 10);
  } finally {
    gpu.dispose();
  }
});
