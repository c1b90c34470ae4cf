// Checks shared by the native kernel tests (test/unit/kernels*.test.ts, and through test/gpu/gpu-helpers.ts the GPU tests).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

import { SEED, seedNote } from './seeded-random';

/** Element-for-element equality (signed zeros told apart; NaN equals NaN), naming the first differing element. */
export function assertExact(ours: ArrayLike<number>, ref: ArrayLike<number>, label: string): void {
  assert.equal(ours.length, ref.length, `${label}: length`);
  for (let i = 0; i < ref.length; i++) {
    if (!Object.is(ours[i], ref[i]) && !(Number.isNaN(ours[i]) && Number.isNaN(ref[i]))) {
      assert.fail(`${label}: element ${i} is ${ours[i]}, expected ${ref[i]} ${seedNote}`);
    }
  }
}

/** Runs the test file `file` again in a child process with GLANCE_SIMD=`simd` and the same seed; fails unless the
 *  child ran at least one test and none failed. Returns the child's TAP output for further checks. */
export function runTestFileWithSimd(file: string, simd: string, timeoutMs: number): string {
  const env: NodeJS.ProcessEnv = { ...process.env, GLANCE_SIMD: simd, GLANCE_TEST_CHILD: '1', GLANCE_TEST_SEED: String(SEED) };
  delete env.NODE_TEST_CONTEXT; // run as a plain script (TAP on stdout, exit code 1 on failure)
  const r = spawnSync(process.execPath, [file], { env, encoding: 'utf8', timeout: timeoutMs });
  const out = r.stdout ?? '';
  assert.equal(r.status, 0, `${simd} run failed ${seedNote}:\n${out.slice(-4000)}\n${(r.stderr ?? '').slice(-2000)}`);
  assert.match(out, /# pass [1-9]\d*\n# fail 0/, `the ${simd} run must have run the tests`);
  return out;
}

/** Runs fn with the addon's CPU thread pool set to n threads, restoring the previous count afterwards. */
export function withThreads<R>(native: { backends(): { cpu: { threads: number } }; setThreads(n: number): void }, n: number, fn: () => R): R {
  const before = native.backends().cpu.threads;
  native.setThreads(n);
  try {
    return fn();
  } finally {
    native.setThreads(before);
  }
}
