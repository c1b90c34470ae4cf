// Shared assertion for the engine's user-facing errors.
import assert from 'node:assert/strict';

import { GlanceError } from '../../sidecar/src/engine/errors';

/** Runs fn, asserts it throws a GlanceError with `code` whose message matches every pattern; returns it. */
export function expectError(fn: () => unknown, code: string, ...patterns: RegExp[]): GlanceError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof GlanceError, `expected a GlanceError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  for (const p of patterns) assert.match(caught.message, p);
  return caught;
}
