// `npm start`: a working editor with Glance in it where no desktop VS Code is installed. Installs code-server
// 4.100.3 (cached in ~/.cache/glance-e2e), packages and installs the extension into a persistent profile
// (~/.cache/glance-e2e/dev-profile), starts code-server on 127.0.0.1 and prints the URL to open.
// Usage: npm start [-- FOLDER] (default: this repository); PORT=8080 by default.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { cacheDir, setup } from '../../test/e2e/setup.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const folder = path.resolve(process.argv[2] ?? repo);
const port = Number(process.env.PORT || 8080);

if (!fs.existsSync(folder)) {
  process.stderr.write(`npm start: folder ${folder} does not exist\n`);
  process.exit(2);
}
const tools = setup({ browser: false });
const profile = path.join(cacheDir(), 'dev-profile');
const userData = path.join(profile, 'user-data');
const extensions = path.join(profile, 'extensions');
fs.mkdirSync(path.join(userData, 'User'), { recursive: true });
const settings = path.join(userData, 'User', 'settings.json');
if (!fs.existsSync(settings)) {
  fs.writeFileSync(settings, JSON.stringify({ 'telemetry.telemetryLevel': 'off', 'workbench.startupEditor': 'none', 'update.mode': 'none' }, null, 2));
}

const vsix = path.join(profile, 'glance.vsix');
process.stderr.write('packaging the extension…\n');
if (spawnSync(process.execPath, [path.join(here, 'package.mjs'), '--out', vsix], { stdio: ['ignore', 'ignore', 'inherit'] }).status !== 0) process.exit(1);
const env = { ...process.env, XDG_CONFIG_HOME: path.join(profile, 'xdg-config'), XDG_DATA_HOME: path.join(profile, 'xdg-data') };
const install = spawnSync(process.execPath, [tools.codeServerBin, '--user-data-dir', userData, '--extensions-dir', extensions, '--install-extension', vsix, '--force'], {
  env,
  encoding: 'utf8',
});
if (install.status !== 0) {
  process.stderr.write(`installing the extension failed:\n${install.stdout}${install.stderr}`);
  process.exit(1);
}
const configFile = path.join(profile, 'code-server.yaml');
fs.writeFileSync(configFile, 'auth: none\n');
const server = spawn(
  process.execPath,
  [
    tools.codeServerBin, '--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry', '--disable-update-check',
    '--disable-getting-started-override', '--user-data-dir', userData, '--extensions-dir', extensions, '--config', configFile, folder,
  ],
  { env, stdio: ['ignore', 'pipe', 'inherit'] },
);
server.stdout.setEncoding('utf8');
server.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  if (/HTTP server listening/.test(chunk)) {
    process.stdout.write(`\nGlance is ready in code-server: open http://127.0.0.1:${port}/?folder=${encodeURIComponent(folder)}\n(listening on 127.0.0.1 only, no password; Ctrl+C stops it)\n\n`);
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.kill('SIGTERM'));
server.on('exit', (code) => process.exit(code ?? 0));
