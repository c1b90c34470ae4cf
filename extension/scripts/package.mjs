// Packages the extension into one .vsix: production build (extension, one-file sidecar, engine worker, webview),
// the native addon beside the sidecar, and the embedded model copied into models/glance-tiny. Offline.
// Usage: node scripts/package.mjs [--out FILE]; prints the .vsix path on the last line of stdout.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const ext = path.resolve(here, '..');
const repo = path.resolve(ext, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(ext, 'package.json'), 'utf8'));
const outArg = process.argv.indexOf('--out');
const out = outArg > 0 ? path.resolve(process.argv[outArg + 1]) : path.join(ext, `${pkg.name}-${pkg.version}.vsix`);

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: ext, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status ?? r.signal})`);
}

try {
  run(process.execPath, [path.join(here, 'build.mjs'), '--production']);
  const addon = path.join(ext, 'dist', 'glance_native.node');
  if (!fs.existsSync(addon)) throw new Error(`${addon} is missing: build the native addon first (npm install at the repository root)`);

  const modelSrc = path.join(repo, 'models', 'glance-tiny');
  const modelDst = path.join(ext, 'models', 'glance-tiny');
  if (!fs.existsSync(path.join(modelSrc, 'config.json'))) throw new Error(`the embedded model ${modelSrc} is missing`);
  fs.rmSync(path.join(ext, 'models'), { recursive: true, force: true });
  fs.mkdirSync(modelDst, { recursive: true });
  for (const f of fs.readdirSync(modelSrc)) {
    const from = path.join(modelSrc, f);
    if (fs.statSync(from).isFile()) fs.copyFileSync(from, path.join(modelDst, f));
  }

  const license = path.join(ext, 'LICENSE');
  if (!fs.existsSync(license)) fs.writeFileSync(license, `MIT License\n\nCopyright (c) Glance contributors\n`);
  const vsce = path.join(ext, 'node_modules', '@vscode', 'vsce', 'vsce');
  run(process.execPath, [vsce, 'package', '--no-dependencies', '--allow-missing-repository', '--skip-license', '--out', out]);
  const size = fs.statSync(out).size;
  process.stderr.write(`packaged ${path.relative(repo, out)} (${(size / 1024 / 1024).toFixed(1)} MiB)\n`);
  process.stdout.write(`${out}\n`);
} catch (e) {
  process.stderr.write(`package: ${e.message}\n`);
  process.exit(1);
}
