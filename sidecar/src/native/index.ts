// Loads the native addon (kernels/, built by node-gyp during `npm install` into build/Release/glance_native.node).
//
// The addon is found from this file's location, not from the working directory: we walk up from __dirname
// (sidecar/src/native when run with ts-node-like tools, dist/sidecar/src/native when compiled) to the
// directory whose package.json is this project's ("name": "glance"), and load build/Release/glance_native.node
// from there, once. Two overrides come first: $GLANCE_NATIVE_ADDON, and glance_native.node beside this file
// (the packaged extension ships a one-file sidecar bundle with the addon next to it).

import * as fs from 'node:fs';
import * as path from 'node:path';

import type { BackendInfo, NativeAddon } from './contract';

export type {
  BackendInfo,
  CudaInfo,
  CudaOps,
  NativeAddon,
  NativeWeight,
  RouterMethod,
  RouterOptions,
  RouterScoring,
  WeightDType,
} from './contract';

/** Path of the compiled addon relative to the project root. */
/** The CPU kernels the addon runs here, e.g. "avx2+fma+f16c, avx512-bf16, amx" (logs, `glance info`, benches). */
export function cpuKernels(cpu: BackendInfo['cpu']): string {
  return [cpu.simd, ...(cpu.bf16Dot ? ['avx512-bf16'] : []), ...(cpu.amx ? ['amx'] : [])].join(', ');
}

export const NATIVE_ADDON_RELATIVE_PATH = path.join('build', 'Release', 'glance_native.node');

const PROJECT_NAME = 'glance';

let cached: NativeAddon | undefined;

/** The directory holding this project's package.json, found by walking up from `start`; null if none. */
export function findProjectRoot(start: string = __dirname): string | null {
  let dir = path.resolve(start);
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg)) {
      try {
        const json = JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: unknown };
        if (json.name === PROJECT_NAME) return dir;
      } catch {
        // unreadable or not JSON: not ours, keep walking
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
}

/** Environment variable naming the addon file explicitly (a packaged extension, a custom build). */
export const NATIVE_ADDON_ENV = 'GLANCE_NATIVE_ADDON';
/** The addon's file name when it ships next to a bundled sidecar (the extension's dist/). */
export const NATIVE_ADDON_FILE = 'glance_native.node';

/** Where loadNative() looks for the addon (whether or not it exists). */
export function nativeAddonPath(): string {
  const override = process.env[NATIVE_ADDON_ENV];
  if (override !== undefined && override !== '') return path.resolve(override);
  // A bundled sidecar (one .js file) has no package.json above it; its addon sits beside it.
  const beside = path.join(__dirname, NATIVE_ADDON_FILE);
  if (fs.existsSync(beside)) return beside;
  const root = findProjectRoot();
  return root === null
    ? path.join(`<no package.json named "${PROJECT_NAME}" above ${__dirname}>`, NATIVE_ADDON_RELATIVE_PATH)
    : path.join(root, NATIVE_ADDON_RELATIVE_PATH);
}

/** The native addon, loaded once. Throws a clear Error when it has not been built or cannot be loaded. */
export function loadNative(): NativeAddon {
  if (cached !== undefined) return cached;
  const file = nativeAddonPath();
  if (!fs.existsSync(file)) {
    const how = process.env[NATIVE_ADDON_ENV] ? `${NATIVE_ADDON_ENV} names a missing file` : 'run npm install';
    throw new Error(`native addon not built: ${how} (looked for ${file})`);
  }
  let addon: NativeAddon;
  try {
    addon = require(file) as NativeAddon;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`native addon at ${file} failed to load: ${reason} (rebuild it with npm install)`, { cause: err });
  }
  cached = addon;
  return addon;
}
