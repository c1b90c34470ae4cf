// Installs the end-to-end toolchain outside node_modules (default ~/.cache/glance-e2e, or $GLANCE_E2E_CACHE):
// code-server 4.100.3 (the last release for Node 20), playwright-core 1.65.1 (no browser download), and
// Debian's Chromium, ripgrep and libkrb5-dev through apt when missing. Recipe and workarounds:
// ../shared/reference/toolchain.md §3 (unsafe-perm for code-server's postinstall as root, libkrb5-dev for
// kerberos, @vscode/ripgrep seeded from Debian's rg because its postinstall downloads from GitHub, yes=true for
// node-pty's npx). Idempotent: a second run only checks versions.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const CODE_SERVER_VERSION = '4.100.3';
export const PLAYWRIGHT_CORE_VERSION = '1.65.1';
export const RIPGREP_CACHE = `vscode-ripgrep-cache-1.15.11`;
export const RIPGREP_ASSET = 'ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz';
export const CHROMIUM = '/usr/lib/chromium/chromium';

export function cacheDir() {
  return process.env.GLANCE_E2E_CACHE || path.join(os.homedir(), '.cache', 'glance-e2e');
}

function step(message) {
  process.stderr.write(`[e2e setup] ${message}\n`);
}

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...options });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status ?? r.signal})`);
}

function aptInstall(packages) {
  const missing = packages.filter((p) => spawnSync('dpkg', ['-s', p], { stdio: 'ignore' }).status !== 0);
  if (missing.length === 0) return;
  const root = process.getuid?.() === 0;
  const prefix = root ? [] : ['sudo', '-n'];
  step(`apt-get install ${missing.join(' ')} (Debian packages the e2e needs)`);
  const exec = (args) => (prefix.length ? run(prefix[0], [...prefix.slice(1), ...args]) : run(args[0], args.slice(1)));
  exec(['apt-get', 'update']);
  exec(['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', 'install', '-y', '--no-install-recommends', ...missing]);
}

function installedVersion(dir, pkg) {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'node_modules', pkg, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

/** `browser: false` skips Chromium and playwright-core (for `npm start`, which only needs code-server). */
export function setup({ browser = true } = {}) {
  const started = Date.now();
  const dir = cacheDir();
  fs.mkdirSync(dir, { recursive: true });
  aptInstall([...(browser ? ['chromium'] : []), 'ripgrep', 'libkrb5-dev']);
  if (browser && !fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing after installing the chromium package`);

  const tools = path.join(dir, 'tools');
  fs.mkdirSync(tools, { recursive: true });
  if (!fs.existsSync(path.join(tools, 'package.json'))) {
    fs.writeFileSync(path.join(tools, 'package.json'), JSON.stringify({ name: 'glance-e2e-tools', private: true }, null, 2));
  }
  const wanted = [];
  if (browser && installedVersion(tools, 'playwright-core') !== PLAYWRIGHT_CORE_VERSION) wanted.push(`playwright-core@${PLAYWRIGHT_CORE_VERSION}`);
  const codeServerBin = path.join(tools, 'node_modules', 'code-server', 'out', 'node', 'entry.js');
  if (installedVersion(tools, 'code-server') !== CODE_SERVER_VERSION || !fs.existsSync(codeServerBin)) {
    wanted.push(`code-server@${CODE_SERVER_VERSION}`);
    // @vscode/ripgrep's postinstall would download rg from GitHub; it takes a cached asset from the temp dir.
    const rgCache = path.join(os.tmpdir(), RIPGREP_CACHE);
    fs.mkdirSync(rgCache, { recursive: true });
    const asset = path.join(rgCache, RIPGREP_ASSET);
    if (!fs.existsSync(asset)) {
      const rg = execFileSync('which', ['rg'], { encoding: 'utf8' }).trim();
      run('tar', ['czf', asset, '-C', path.dirname(rg), path.basename(rg)]);
    }
  }
  if (wanted.length > 0) {
    step(`npm install ${wanted.join(' ')} into ${tools} (code-server builds native modules: about 1-3 minutes)`);
    run('npm', ['install', '--no-audit', '--no-fund', '--save-exact', '--foreground-scripts', ...wanted], {
      cwd: tools,
      env: { ...process.env, npm_config_unsafe_perm: 'true', npm_config_yes: 'true', PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: '1' },
    });
  }
  // code-server writes a default config on any start: keep it inside the cache, not in ~/.config.
  const xdg = path.join(dir, 'xdg-config');
  const output = execFileSync(process.execPath, [codeServerBin, '--version'], { encoding: 'utf8', env: { ...process.env, XDG_CONFIG_HOME: xdg } });
  const version = output.split('\n').find((l) => /^\d+\.\d+\.\d+ /.test(l)) ?? output.trim();
  if (!version.startsWith(`${CODE_SERVER_VERSION} `)) throw new Error(`code-server reports ${version}, expected ${CODE_SERVER_VERSION}`);
  const browserTools = browser ? `, playwright-core ${installedVersion(tools, 'playwright-core')}, ${CHROMIUM}` : '';
  step(`ready in ${Math.round((Date.now() - started) / 1000)} s: code-server ${version}${browserTools}`);
  return { tools, codeServerBin, chromium: CHROMIUM, playwrightCore: path.join(tools, 'node_modules', 'playwright-core') };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    setup();
  } catch (e) {
    process.stderr.write(`[e2e setup] failed: ${e.message}\n`);
    process.exit(1);
  }
}
