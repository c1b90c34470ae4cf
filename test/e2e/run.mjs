// End-to-end test: the packaged extension in a real VS Code (code-server 4.100.3) driven in headless Chromium,
// against the real sidecar and the embedded model. Steps, as a user would check them:
//   1 status bar reaches ready            2 ghost text appears and Tab accepts it into the file
//   3 chat streams an answer              4 Edit Selection… shows a diff and Accept changes the file on disk
//   5 killing the sidecar shows the restart and completions work again
//   6 a model path without a model ends, after bounded retries, in an error with advice and Show Logs
// Screenshots go to test-results/e2e/<nn>-<step>.png, a summary to test-results/e2e/report.json.
// Isolation: HOME, XDG dirs, user-data-dir, extensions-dir, GLANCE_CACHE_DIR and the workspace copy live in one
// temporary folder, removed at the end (kept with GLANCE_E2E_KEEP=1).
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { setup } from './setup.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const results = path.join(repo, 'test-results', 'e2e');
const STEP_TIMEOUT_MS = Number(process.env.GLANCE_E2E_STEP_TIMEOUT_MS || 120_000);

function log(message) {
  process.stderr.write(`[e2e ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, fn, timeoutMs = STEP_TIMEOUT_MS, intervalMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    await sleep(intervalMs);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function copyDir(from, to) {
  fs.mkdirSync(to, { recursive: true });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const a = path.join(from, entry.name);
    const b = path.join(to, entry.name);
    if (entry.isDirectory()) copyDir(a, b);
    else fs.copyFileSync(a, b);
  }
}

// ---------------------------------------------------------------------------------------------------------------

const report = { started: new Date().toISOString(), steps: [], environment: {} };
let page = null;
let shotCount = 0;

async function shot(name) {
  shotCount++;
  const file = `${String(shotCount).padStart(2, '0')}-${name}.png`;
  if (page) {
    try {
      await page.screenshot({ path: path.join(results, file) });
    } catch (e) {
      log(`screenshot ${file} failed: ${e.message}`);
      return null;
    }
  }
  return file;
}

/** GLANCE_E2E_STEPS=status-ready,error-advice runs only those steps (for development; CI runs all). */
const onlySteps = process.env.GLANCE_E2E_STEPS ? new Set(process.env.GLANCE_E2E_STEPS.split(',')) : null;
const ALL_STEPS = 6;

async function step(name, fn) {
  if (onlySteps && !onlySteps.has(name)) return true;
  const started = Date.now();
  log(`step: ${name}`);
  const entry = { name, ok: false, ms: 0, screenshots: [], detail: '' };
  report.steps.push(entry);
  try {
    const out = await fn((shotName) => shot(shotName).then((f) => f && entry.screenshots.push(f)));
    entry.ok = true;
    entry.detail = typeof out === 'string' ? out : '';
    log(`  ok (${Date.now() - started} ms) ${entry.detail}`);
  } catch (e) {
    entry.detail = e.message;
    const f = await shot(`${name}-FAILED`);
    if (f) entry.screenshots.push(f);
    log(`  FAILED: ${e.message}`);
  }
  entry.ms = Date.now() - started;
  return entry.ok;
}

// ---- workbench helpers ----------------------------------------------------------------------------------------

async function statusLabel() {
  return page.evaluate(() => {
    const el = document.querySelector('[aria-label^="Glance status: "]');
    return el ? el.getAttribute('aria-label').slice('Glance status: '.length) : null;
  });
}

async function statusText() {
  return page.evaluate(() => {
    const el = document.querySelector('[aria-label^="Glance status: "]');
    return el ? el.textContent.trim() : '';
  });
}

async function runCommand(title) {
  await page.keyboard.press('F1');
  const input = page.locator('.quick-input-widget input');
  await input.waitFor({ state: 'visible', timeout: 10_000 });
  await input.fill(`>${title}`);
  await page.locator('.quick-input-list .monaco-list-row', { hasText: title }).first().waitFor({ timeout: 10_000 });
  await page.keyboard.press('Enter');
}

async function openFile(relPath) {
  await page.keyboard.press('Control+P');
  const input = page.locator('.quick-input-widget input');
  await input.waitFor({ state: 'visible', timeout: 10_000 });
  await input.fill(relPath);
  await page.locator('.quick-input-list .monaco-list-row', { hasText: path.basename(relPath) }).first().waitFor({ timeout: 15_000 });
  await page.keyboard.press('Enter');
  await page.locator(`.tab[aria-label^="${path.basename(relPath)}"]`).first().waitFor({ timeout: 15_000 });
  await sleep(500);
}

async function focusEditor() {
  await page.locator('.editor-instance .monaco-editor .view-lines').first().click();
}

async function ghostText() {
  return page.evaluate(() => {
    const parts = Array.from(document.querySelectorAll('.monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text-decoration-preview, .monaco-editor .ghost-text'));
    return parts.map((p) => p.textContent).join('');
  }).then((t) => t.replace(/\u00a0/g, ' ')); // the editor renders spaces as no-break spaces
}

/** After a glance.* setting changed (settings.json edited), the extension offers a restart: take it. */
async function acceptRestartPrompt() {
  const toast = page.locator('.notification-toast', { hasText: 'restart the sidecar to use the new settings' }).last();
  await toast.waitFor({ timeout: 30_000 });
  await toast.locator('.monaco-button', { hasText: 'Restart' }).first().click();
}

/**
 * Writes a new function at the end of the file with an empty body, puts the cursor in the body after `body`,
 * and waits for ghost text (with one manual trigger, Alt+\, halfway). Each attempt leaves well-formed code.
 * Returns the attempt and the ghost text.
 */
async function typeUntilGhost(attempts, timeoutMs) {
  for (const { head, body } of attempts) {
    await page.keyboard.press('Control+End');
    await page.keyboard.press('Enter');
    await page.keyboard.press('Enter');
    await page.keyboard.type(`${head}\n\n}`, { delay: 20 });
    await page.keyboard.press('ArrowUp');
    await page.keyboard.type(`  ${body}`, { delay: 40 });
    const deadline = Date.now() + timeoutMs;
    let triggered = false;
    while (Date.now() < deadline) {
      const g = (await ghostText()).trim();
      if (g !== '') return { head, body, ghost: g };
      if (!triggered && Date.now() > deadline - timeoutMs / 2) {
        await page.keyboard.press('Alt+Backslash');
        triggered = true;
      }
      await sleep(250);
    }
    log(`  no ghost text in "${head} … ${body}"; trying another function`);
  }
  throw new Error(`no ghost text appeared after ${attempts.length} attempts`);
}

const GHOST_ATTEMPTS = [
  { head: 'export function divide(a: number, b: number): number {', body: 'return ' },
  { head: 'export function square(x: number): number {', body: 'return ' },
  { head: 'export function average(values: number[]): number {', body: 'const ' },
  { head: 'export function isEven(n: number): boolean {', body: 'return ' },
];
const GHOST_ATTEMPTS_AFTER_RESTART = [
  { head: 'export function modulo(a: number, b: number): number {', body: 'return ' },
  { head: 'export function cube(x: number): number {', body: 'return ' },
  { head: 'export function isOdd(n: number): boolean {', body: 'return ' },
  { head: 'export function maximum(a: number, b: number): number {', body: 'if ' },
];

/** The extension's output channel (request ids, timings, sidecar stderr) is kept with the screenshots. */
function copyExtensionLogs(userData) {
  const walk = (dir) => {
    for (const entry of fs.existsSync(dir) ? fs.readdirSync(dir, { withFileTypes: true }) : []) {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (/glance/i.test(entry.name) && entry.name.endsWith('.log')) fs.copyFileSync(p, path.join(results, `extension-${entry.name}`));
    }
  };
  walk(path.join(userData, 'logs'));
}

// ---- main -------------------------------------------------------------------------------------------------------

async function main() {
  fs.rmSync(results, { recursive: true, force: true });
  fs.mkdirSync(results, { recursive: true });
  const tools = setup();

  log('packaging the extension');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'glance-e2e-'));
  const vsix = path.join(work, 'glance.vsix');
  const pack = spawnSync(process.execPath, [path.join(repo, 'extension', 'scripts', 'package.mjs'), '--out', vsix], { stdio: ['ignore', 'pipe', 'inherit'] });
  if (pack.status !== 0) {
    fs.rmSync(work, { recursive: true, force: true });
    throw new Error('packaging the .vsix failed');
  }
  report.environment.vsixBytes = fs.statSync(vsix).size;

  const home = path.join(work, 'home');
  const userData = path.join(work, 'user-data');
  const extensions = path.join(work, 'extensions');
  const workspace = path.join(work, 'workspace');
  const glanceCache = path.join(work, 'glance-cache');
  const probe = path.join(work, 'probe.json');
  for (const d of [home, userData, extensions, glanceCache]) fs.mkdirSync(d, { recursive: true });
  copyDir(path.join(here, 'fixture-workspace'), workspace);
  fs.mkdirSync(path.join(userData, 'User'), { recursive: true });
  fs.writeFileSync(
    path.join(userData, 'User', 'settings.json'),
    JSON.stringify(
      {
        'telemetry.telemetryLevel': 'off',
        'workbench.startupEditor': 'none',
        'workbench.tips.enabled': false,
        'update.mode': 'none',
        'extensions.autoUpdate': false,
        'extensions.autoCheckUpdates': false,
        'security.workspace.trust.enabled': false,
        'editor.inlineSuggest.enabled': true,
        // the suggest widget would compete with ghost text for Tab
        'editor.quickSuggestions': { other: false, comments: false, strings: false },
        'editor.suggestOnTriggerCharacters': false,
        'editor.acceptSuggestionOnEnter': 'off',
        'editor.autoClosingBrackets': 'never',
        'editor.autoIndent': 'keep',
        'files.autoSave': 'off',
        'glance.completion.debounceMs': 100,
      },
      null,
      2,
    ),
  );
  const env = {
    ...process.env,
    HOME: home,
    XDG_CONFIG_HOME: path.join(work, 'xdg-config'),
    XDG_DATA_HOME: path.join(work, 'xdg-data'),
    XDG_CACHE_HOME: path.join(work, 'xdg-cache'),
    GLANCE_CACHE_DIR: glanceCache,
    GLANCE_E2E_PROBE: probe,
  };

  log('installing the .vsix into code-server');
  const install = spawnSync(process.execPath, [tools.codeServerBin, '--user-data-dir', userData, '--extensions-dir', extensions, '--install-extension', vsix], {
    env,
    encoding: 'utf8',
  });
  if (install.status !== 0 || !/successfully installed/.test(install.stdout)) {
    throw new Error(`--install-extension failed: ${install.stdout}\n${install.stderr}`);
  }

  const port = await freePort();
  const configFile = path.join(work, 'code-server.yaml');
  fs.writeFileSync(configFile, 'auth: none\n');
  log(`starting code-server on 127.0.0.1:${port}`);
  const serverLog = fs.openSync(path.join(results, 'code-server.log'), 'w');
  const server = spawn(
    process.execPath,
    [
      tools.codeServerBin, '--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry', '--disable-update-check',
      '--disable-workspace-trust', '--disable-getting-started-override', '--user-data-dir', userData, '--extensions-dir', extensions,
      '--config', configFile, workspace,
    ],
    { env, stdio: ['ignore', serverLog, serverLog], detached: true },
  );
  let browser = null;
  const cleanup = async () => {
    try {
      if (browser) await browser.close();
    } catch {
      // already gone
    }
    try {
      const p = JSON.parse(fs.readFileSync(probe, 'utf8'));
      if (p.pid) process.kill(p.pid, 'SIGTERM');
    } catch {
      // no sidecar recorded
    }
    try {
      process.kill(-server.pid, 'SIGTERM'); // code-server and its extension hosts (its process group)
    } catch {
      // already gone
    }
    await sleep(500);
    try {
      const lock = JSON.parse(fs.readFileSync(path.join(glanceCache, 'sidecar.json'), 'utf8'));
      process.kill(lock.pid, 'SIGKILL');
    } catch {
      // none left
    }
    if (!process.env.GLANCE_E2E_KEEP) fs.rmSync(work, { recursive: true, force: true });
    else log(`kept ${work}`);
  };

  try {
    await waitFor('code-server /healthz', async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).ok, 60_000);
    const require = createRequire(path.join(tools.playwrightCore, 'package.json'));
    const { chromium } = require(tools.playwrightCore);
    browser = await chromium.launchPersistentContext(path.join(work, 'chromium-profile'), {
      executablePath: tools.chromium,
      headless: true,
      viewport: { width: 1440, height: 900 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      env,
    });
    page = browser.pages()[0] ?? (await browser.newPage());
    page.setDefaultTimeout(30_000);
    await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(workspace)}`);
    await page.locator('.monaco-workbench').waitFor({ timeout: 60_000 });
    log('workbench loaded');

    const original = fs.readFileSync(path.join(workspace, 'src', 'math.ts'), 'utf8');
    const mathFile = path.join(workspace, 'src', 'math.ts');

    await step('status-ready', async (snap) => {
      await waitFor('the Glance status bar item', statusLabel, 60_000);
      await snap('status-starting');
      await waitFor('status ready', async () => (await statusLabel()) === 'ready', 180_000);
      await snap('status-ready');
      return await statusText();
    });

    await step('ghost-text', async (snap) => {
      await openFile('src/math.ts');
      await focusEditor();
      const { body, ghost } = await typeUntilGhost(GHOST_ATTEMPTS, 20_000);
      await snap('ghost-text');
      await page.keyboard.press('Tab');
      await sleep(300);
      await page.keyboard.press('Control+S');
      const firstLine = ghost.split('\n')[0].trim();
      await waitFor('the accepted text on disk', async () => {
        const now = fs.readFileSync(mathFile, 'utf8');
        return now.includes(`${body.trim()} ${firstLine}`) || now.includes(`${body}${firstLine}`);
      }, 10_000);
      await snap('ghost-accepted');
      return `accepted ${JSON.stringify(ghost.slice(0, 60))}`;
    });

    await step('chat-stream', async (snap) => {
      await page.locator('.activitybar [aria-label^="Glance"]').first().click();
      const frame = page.frameLocator('iframe.webview.ready').frameLocator('#active-frame');
      const question = frame.locator('#question');
      await question.waitFor({ timeout: 30_000 });
      await question.fill('What does the add function in @src/math.ts do?');
      await question.press('Enter');
      const answer = frame.locator('.turn.assistant .body').last();
      // streamed: text shows while the streaming marker is on, and the answer arrived in several pieces
      let sawPartial = false;
      await waitFor('the answer to finish', async () => {
        const cls = (await answer.getAttribute('class')) ?? '';
        const len = ((await answer.textContent()) ?? '').length;
        if (cls.includes('streaming') && len > 0 && !sawPartial) {
          sawPartial = true;
          await snap('chat-streaming');
        }
        return !cls.includes('streaming') && (await answer.getAttribute('data-finish')) !== null;
      }, 180_000, 50);
      const deltas = Number((await answer.getAttribute('data-deltas')) ?? '0');
      if (deltas < 2) throw new Error(`the answer came in ${deltas} piece(s), not streamed`);
      const text = ((await answer.textContent()) ?? '').trim();
      if (text === '') throw new Error('the answer is empty');
      await snap('chat-answer');

      // Stop: a second question is cancelled mid-answer ($/cancelRequest reaches the sidecar, which ends it)
      await question.fill('Explain src/index.ts in detail.');
      await question.press('Enter');
      const second = frame.locator('.turn.assistant .body').nth(1);
      await waitFor('the second answer to start streaming', async () => ((await second.textContent()) ?? '').length > 0, 120_000, 50);
      const stopped = Date.now();
      await frame.locator('#stop').click();
      await waitFor('the answer to stop', async () => (await second.getAttribute('data-finish')) === 'cancelled', 15_000, 50);
      const stopMs = Date.now() - stopped;
      await snap('chat-stopped');
      return `${deltas} streamed pieces${sawPartial ? ' (partial answer on screen)' : ''}, ${text.length} chars: ${JSON.stringify(text.slice(0, 60))}; Stop ended the next answer in ${stopMs} ms`;
    });

    await step('edit-accept', async (snap) => {
      await openFile('src/math.ts');
      const before = fs.readFileSync(mathFile, 'utf8');
      await focusEditor();
      // select the body line of subtract(): go to its line and select it
      const line = before.split('\n').findIndex((l) => l.includes('return a - b;')) + 1;
      if (line <= 0) throw new Error('src/math.ts lost its subtract() body');
      await page.keyboard.press('Control+G');
      await page.keyboard.type(String(line));
      await page.keyboard.press('Enter'); // the cursor is at column 1
      await page.keyboard.press('Shift+End');
      await runCommand('Glance: Edit Selection…');
      const input = page.locator('.quick-input-widget input');
      await input.waitFor({ state: 'visible' });
      await input.fill('return the difference as an absolute value');
      await page.keyboard.press('Enter');
      await page.locator('.monaco-diff-editor').first().waitFor({ timeout: 120_000 });
      await sleep(800);
      await snap('edit-diff');
      await runCommand('Glance: Accept All Proposed Edits');
      await waitFor('the file to change on disk', () => fs.readFileSync(mathFile, 'utf8') !== before, 15_000);
      await sleep(500);
      await snap('edit-accepted');
      const after = fs.readFileSync(mathFile, 'utf8');
      const changed = after.split('\n').filter((l, i) => l !== before.split('\n')[i]).slice(0, 2);
      return `file changed: ${JSON.stringify(changed)}`;
    });

    await step('sidecar-restart', async (snap) => {
      const p = JSON.parse(fs.readFileSync(probe, 'utf8'));
      if (!p.pid) throw new Error(`the probe names no sidecar pid: ${JSON.stringify(p)}`);
      log(`  killing sidecar pid ${p.pid}`);
      process.kill(p.pid, 'SIGKILL');
      await waitFor('the status bar to show the restart', async () => ['restarting', 'starting', 'loading'].includes(await statusLabel()), 20_000, 50);
      await snap('sidecar-restarting');
      await waitFor('status ready again', async () => (await statusLabel()) === 'ready', 180_000);
      const q = JSON.parse(fs.readFileSync(probe, 'utf8'));
      if (q.pid === p.pid) throw new Error('the sidecar pid did not change');
      await snap('sidecar-recovered');
      await openFile('src/math.ts');
      await focusEditor();
      const { ghost } = await typeUntilGhost(GHOST_ATTEMPTS_AFTER_RESTART, 20_000);
      await snap('ghost-after-restart');
      return `new pid ${q.pid}; ghost ${JSON.stringify(ghost.slice(0, 60))}`;
    });

    await step('error-advice', async (snap) => {
      // A model path without a model: the supervisor retries with backoff, then stops with advice and Show Logs.
      // (workspace settings: the workbench watches the workspace folder reliably)
      const settingsFile = path.join(workspace, '.vscode', 'settings.json');
      fs.mkdirSync(path.dirname(settingsFile), { recursive: true });
      fs.writeFileSync(settingsFile, JSON.stringify({ 'glance.model.path': path.join(work, 'no-such-model') }, null, 2));
      await acceptRestartPrompt();
      await waitFor('the status bar to show the error', async () => (await statusLabel()) === 'error', 90_000);
      const toast = page.locator('.notification-toast', { hasText: 'glance.model.path' }).first();
      await toast.waitFor({ timeout: 10_000 });
      await toast.locator('.monaco-button', { hasText: 'Show Logs' }).first().waitFor({ timeout: 5000 });
      const message = ((await toast.textContent()) ?? '').replace(/\s+/g, ' ').trim();
      await sleep(800); // let the toast finish sliding in
      await snap('error-advice');
      fs.writeFileSync(settingsFile, '{}\n');
      await acceptRestartPrompt();
      await waitFor('status ready again', async () => (await statusLabel()) === 'ready', 180_000);
      await snap('error-recovered');
      return message.slice(0, 160);
    });
  } finally {
    report.finished = new Date().toISOString();
    fs.writeFileSync(path.join(results, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
    try {
      copyExtensionLogs(userData);
    } catch (e) {
      log(`could not copy the extension logs: ${e.message}`);
    }
    await cleanup();
  }
  const failed = report.steps.filter((s) => !s.ok);
  for (const s of report.steps) log(`${s.ok ? 'PASS' : 'FAIL'} ${s.name} (${s.ms} ms) ${s.screenshots.join(', ')}${s.ok ? '' : ` — ${s.detail}`}`);
  if (failed.length > 0 || (!onlySteps && report.steps.length < ALL_STEPS)) {
    log(`${failed.length} of ${report.steps.length} steps failed; screenshots and code-server.log in ${path.relative(repo, results)}`);
    process.exitCode = 1;
  } else log(`all ${report.steps.length} steps passed; screenshots in ${path.relative(repo, results)}`);
}

main()
  .catch((e) => {
    log(`e2e failed: ${e.stack ?? e.message}`);
    process.exitCode = 1;
  })
  .finally(() => {
    // a browser or server handle left open must not keep the test alive
    setTimeout(() => process.exit(process.exitCode ?? 0), 2000);
  });
