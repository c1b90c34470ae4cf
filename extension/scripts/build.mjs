// Builds the extension with esbuild: the extension host bundle, the one-file sidecar (plus its engine worker),
// the chat webview, and copies the native addon beside the sidecar. `--production` minifies.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const ext = path.resolve(here, '..');
const repo = path.resolve(ext, '..');
const dist = path.join(ext, 'dist');
const production = process.argv.includes('--production');

fs.rmSync(dist, { recursive: true, force: true });
fs.mkdirSync(path.join(dist, 'webview'), { recursive: true });

const common = { bundle: true, sourcemap: !production, minify: production, logLevel: 'warning', legalComments: 'none' };
const started = Date.now();

await esbuild.build({
  ...common,
  entryPoints: { extension: path.join(ext, 'src', 'extension.ts') },
  outdir: dist,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['vscode'],
});

const sidecarEntries = { sidecar: path.join(ext, 'src', 'sidecarEntry.ts') };
const worker = path.join(repo, 'sidecar', 'src', 'scheduler', 'engine-worker.ts');
if (fs.existsSync(worker)) sidecarEntries['engine-worker'] = worker;
await esbuild.build({
  ...common,
  entryPoints: sidecarEntries,
  outdir: dist,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // the addon is loaded at run time from beside the bundle (sidecar/src/native/index.ts)
  external: ['*.node'],
  // dynamic require of the addon path is intended
  logOverride: { 'unsupported-require-call': 'silent' },
});

await esbuild.build({
  ...common,
  entryPoints: { chat: path.join(ext, 'webview', 'chat.ts') },
  outdir: path.join(dist, 'webview'),
  platform: 'browser',
  format: 'iife',
  target: 'es2022',
});
fs.copyFileSync(path.join(ext, 'media', 'chat.css'), path.join(dist, 'webview', 'chat.css'));

const addon = path.join(repo, 'build', 'Release', 'glance_native.node');
if (fs.existsSync(addon)) fs.copyFileSync(addon, path.join(dist, 'glance_native.node'));
else console.warn(`warning: ${addon} is missing (run npm install at the repository root); the sidecar will not start`);

const sizes = fs
  .readdirSync(dist, { recursive: true })
  .map(String)
  .filter((f) => /\.(js|node|css)$/.test(f))
  .map((f) => `${f} ${Math.round(fs.statSync(path.join(dist, f)).size / 1024)} KiB`);
console.log(`extension built in ${Date.now() - started} ms${production ? ' (production)' : ''}: ${sizes.join(', ')}`);
