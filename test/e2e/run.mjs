// End-to-end test: the packaged extension in a real VS Code (code-server 4.100.3) driven in headless Chromium,
// against the real sidecar and the embedded model. Steps, as a user would check them:
//   1 status bar reaches ready            2 ghost text appears and Tab accepts it into the file
//   3 chat streams an answer              4 Edit Selection… shows a diff and Accept changes the file on disk
//   5 killing the sidecar shows the restart and completions work again
//   6 a model path without a model ends, after bounded retries, in an error with advice and Show Logs
//   7 a second window (another folder) adopts the running sidecar instead of spawning one, and gets ready
//   7b a lock file naming a live sidecar of another version: a new window says so in its log and spawns its own
//   8 a multi-root workspace (.code-workspace with both folders): files of both reach the sidecar, ghost text in
//     a TypeScript file of the second folder
//   9 chat code blocks (a scripted answer, see below): @file mentions of both folders reach the sidecar; Copy puts the
//     code on the clipboard; Insert at Cursor puts it at the cursor of the editor; Apply of a block editing files of
//     both folders opens two diffs: the diff title's Accept changes one file on disk, Reject leaves the other as it was
//  10 a remote sidecar (`glance serve` started by the test): a token put in settings moves to secret storage (and out
//     of the .code-workspace file), the window gets ready through the remote, and a completion comes from it
//  11 remote failures: a wrong token (Glance: Set Remote Sidecar Token, a masked input) and an unreachable URL each end
//     in their own error in the status bar and a notification; the notification's Set Remote Token reconnects
//  12 Explain, Add Types, Add Docs, Write Tests, Fix Problems from the command palette: each ends in a diff, the
//     explanation in the chat view, or a clear message, and no progress notification stays behind
// Step 3 streams the real model's answer. Step 9 needs a code block every time, which the tiny model writes only at
// times: the test writes the answer to the file GLANCE_E2E_SCRIPTED_CHAT names and the real sidecar streams that file
// instead of the model's answer, once (sidecar/src/assistant/scripted-chat.ts); everything else is the real path.
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
const ALL_STEPS = 13;

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

/** The Glance output channel's log files, one per window (logs/<session>/window<n>/exthost/…/Glance.log). */
function extensionLogFiles(userData) {
  const found = [];
  const walk = (dir) => {
    for (const entry of fs.existsSync(dir) ? fs.readdirSync(dir, { withFileTypes: true }) : []) {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (/glance/i.test(entry.name) && entry.name.endsWith('.log')) found.push(p);
    }
  };
  walk(path.join(userData, 'logs'));
  return found;
}

function extensionLogLines(userData) {
  return extensionLogFiles(userData).flatMap((f) => fs.readFileSync(f, 'utf8').split('\n'));
}

const GHOST_ATTEMPTS_SECOND_FOLDER = [
  { head: 'export function perimeter(width: number, height: number): number {', body: 'return ' },
  { head: 'export function area(width: number, height: number): number {', body: 'return ' },
  { head: 'export function scale(p: Point, factor: number): Point {', body: 'return ' },
  { head: 'export function origin(): Point {', body: 'return ' },
];

/** The code block Copy and Insert at Cursor use (step 9). */
const INSERTED_CODE = "export const GLANCE_E2E_INSERTED = 'inserted at the cursor';\n";

/**
 * The scripted chat answer of step 9: a plain code block, and one block of search/replace edits to a file of each
 * folder (each adds a marker line after the file's first line). {{context}} is filled in by the sidecar.
 */
function scriptedApplyAnswer(mathFirstLine, geometryFirstLine) {
  return [
    'The question came with: {{context}}.',
    '',
    '```ts',
    INSERTED_CODE.trimEnd(),
    '```',
    '',
    'And the change to both files:',
    '',
    '```ts',
    'src/math.ts',
    '<<<<<<< SEARCH',
    mathFirstLine,
    '=======',
    mathFirstLine,
    '// glance-e2e: this edit is rejected per file',
    '>>>>>>> REPLACE',
    'lib/geometry.ts',
    '<<<<<<< SEARCH',
    geometryFirstLine,
    '=======',
    geometryFirstLine,
    '// glance-e2e: this edit is accepted per file',
    '>>>>>>> REPLACE',
    '```',
    '',
  ].join('\n');
}

const GHOST_ATTEMPTS_REMOTE = [
  { head: 'export function diagonal(width: number, height: number): number {', body: 'return ' },
  { head: 'export function halve(x: number): number {', body: 'return ' },
  { head: 'export function translate(p: Point, dx: number, dy: number): Point {', body: 'return ' },
  { head: 'export function isOrigin(p: Point): boolean {', body: 'return ' },
];

/** The extension's output channel (request ids, timings, sidecar stderr) is kept with the screenshots. */
function copyExtensionLogs(userData) {
  const files = extensionLogFiles(userData);
  for (const p of files) {
    // one log per window: name the copies after the window folder when there are several
    const windowDir = p.split(path.sep).find((part) => /^window\d+$/.test(part));
    const name = files.length > 1 && windowDir ? `extension-${windowDir}-${path.basename(p)}` : `extension-${path.basename(p)}`;
    fs.copyFileSync(p, path.join(results, name));
  }
}

function countFiles(dir) {
  let n = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) n += entry.isDirectory() ? countFiles(path.join(dir, entry.name)) : 1;
  return n;
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
  const workspace2 = path.join(work, 'workspace-2');
  const glanceCache = path.join(work, 'glance-cache');
  const probe = path.join(work, 'probe.json');
  const scriptedChat = path.join(work, 'scripted-chat.md');
  for (const d of [home, userData, extensions, glanceCache]) fs.mkdirSync(d, { recursive: true });
  copyDir(path.join(here, 'fixture-workspace'), workspace);
  copyDir(path.join(here, 'fixture-workspace-2'), workspace2);
  const multiRootFile = path.join(work, 'both.code-workspace');
  fs.writeFileSync(multiRootFile, JSON.stringify({ folders: [{ path: workspace }, { path: workspace2 }], settings: {} }, null, 2));
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
    GLANCE_E2E_SCRIPTED_CHAT: scriptedChat,
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
  let remoteSidecar = null;
  /** the remote sidecar of step 10: url, token, pid, log file */
  let remote = null;
  /** Merges glance.* settings into the multi-root window's .code-workspace file (undefined removes a key). */
  const setWorkspaceSettings = (settings) => {
    const ws = JSON.parse(fs.readFileSync(multiRootFile, 'utf8'));
    ws.settings = { ...ws.settings, ...settings };
    fs.writeFileSync(multiRootFile, JSON.stringify(ws, null, 2));
  };
  const cleanup = async () => {
    try {
      if (remoteSidecar) process.kill(remoteSidecar.pid, 'SIGTERM');
    } catch {
      // already gone
    }
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
    // Copy in the chat view writes the clipboard; the test reads it back
    await browser.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: `http://127.0.0.1:${port}` });
    page = browser.pages()[0] ?? (await browser.newPage());
    page.setDefaultTimeout(30_000);
    await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(workspace)}`);
    await page.locator('.monaco-workbench').waitFor({ timeout: 60_000 });
    log('workbench loaded');

    /** How many sidecars the extension has spawned so far, counted in its log. */
    const spawnLineCount = () => extensionLogLines(userData).filter((l) => l.includes('] spawning: ')).length;
    /** Opens another window on `folder` (the page helpers act on it meanwhile), runs fn, then closes it. */
    const inAnotherWindow = async (folder, fn) => {
      const firstPage = page;
      const other = await browser.newPage();
      other.setDefaultTimeout(30_000);
      page = other;
      try {
        await other.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(folder)}`);
        await other.locator('.monaco-workbench').waitFor({ timeout: 60_000 });
        return await fn();
      } finally {
        page = firstPage;
        await other.close().catch(() => undefined);
      }
    };

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

      // Stop: a later question is cancelled mid-answer ($/cancelRequest reaches the sidecar, which ends it). The real
      // model sometimes ends a short answer on its own before Stop can be clicked (the button hides with the stream):
      // then the next question is asked, up to three times, and only a cancelled answer passes.
      const questions = ['Explain src/index.ts in detail.', 'Write a long explanation of every function in @src/math.ts.', 'Describe this project in detail.'];
      let stopMs = -1;
      const ended = [];
      for (let q = 0; q < questions.length && stopMs < 0; q++) {
        await question.fill(questions[q]);
        await question.press('Enter');
        const next = frame.locator('.turn.assistant .body').nth(1 + q);
        await waitFor('the next answer to start streaming', async () => ((await next.textContent()) ?? '').length > 0, 120_000, 50);
        const stopped = Date.now();
        try {
          await frame.locator('#stop').click({ timeout: 3_000 });
        } catch (e) {
          const finish = await next.getAttribute('data-finish');
          if (finish === null || finish === 'cancelled') throw e;
          ended.push(finish); // it finished by itself first: ask again
          continue;
        }
        // the answer may still end by itself in the moment between the click and the cancellation reaching the
        // sidecar: then it finishes with its own reason, and the next question is asked
        await waitFor('the answer to end after Stop', async () => (await next.getAttribute('data-finish')) !== null, 15_000, 50);
        const finish = await next.getAttribute('data-finish');
        if (finish !== 'cancelled') {
          ended.push(`${finish} as Stop was clicked`);
          continue;
        }
        stopMs = Date.now() - stopped;
      }
      if (stopMs < 0) throw new Error(`every answer ended by itself before Stop could be clicked (${ended.join(', ')})`);
      await snap('chat-stopped');
      return `${deltas} streamed pieces${sawPartial ? ' (partial answer on screen)' : ''}, ${text.length} chars: ${JSON.stringify(text.slice(0, 60))}; Stop ended the next answer in ${stopMs} ms${ended.length ? ` (${ended.length} earlier answer(s) ended by themselves first)` : ''}`;
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
      // as a user does: the notification's Accept All (the palette command would do the same)
      const toast = page.locator('.notification-toast', { hasText: 'Glance proposes changes' }).last();
      await toast.locator('.monaco-button', { hasText: 'Accept All' }).first().click();
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

    await step('adopt-second-window', async (snap) => {
      // A second window on another folder, while the first one's sidecar runs: it must adopt that sidecar
      // (the pid in GLANCE_CACHE_DIR/sidecar.json) rather than spawn its own.
      await waitFor('status ready in the first window', async () => (await statusLabel()) === 'ready', 180_000);
      const lock = await waitFor('sidecar.json', () => JSON.parse(fs.readFileSync(path.join(glanceCache, 'sidecar.json'), 'utf8')), 30_000);
      const firstPid = JSON.parse(fs.readFileSync(probe, 'utf8')).pid;
      if (lock.pid !== firstPid) throw new Error(`sidecar.json names pid ${lock.pid}, the first window runs pid ${firstPid}`);
      const spawnsBefore = spawnLineCount();
      return inAnotherWindow(workspace2, async () => {
        await waitFor('the Glance status bar item in the second window', statusLabel, 60_000);
        await waitFor('status ready in the second window', async () => (await statusLabel()) === 'ready', 180_000);
        const adopted = await waitFor(
          'the adoption line in the extension log',
          () => extensionLogLines(userData).find((l) => l.includes(`adopted running sidecar pid ${lock.pid} `)),
          30_000,
        );
        const spawnsAfter = spawnLineCount();
        if (spawnsAfter !== spawnsBefore) throw new Error(`the second window spawned a sidecar (${spawnsAfter - spawnsBefore} new spawn lines)`);
        process.kill(lock.pid, 0); // still the same live process
        await snap('adopt-second-window');
        return `second window adopted pid ${lock.pid}: ${adopted.replace(/^.*\[info\] /, '').slice(0, 120)}`;
      });
    });

    await step('adopt-incompatible', async (snap) => {
      // The lock file names a live sidecar of another version (as after an update, with an old window still open):
      // a new window must say so in its log and start its own sidecar instead of adopting it.
      const lockFile = path.join(glanceCache, 'sidecar.json');
      const lock = await waitFor('sidecar.json', () => JSON.parse(fs.readFileSync(lockFile, 'utf8')), 30_000);
      process.kill(lock.pid, 0);
      fs.writeFileSync(lockFile, JSON.stringify({ ...lock, version: '0.0.0-e2e-old' }), { mode: 0o600 });
      const spawnsBefore = spawnLineCount();
      return inAnotherWindow(workspace2, async () => {
        const refusal = await waitFor('the refusal in the extension log', () =>
          extensionLogLines(userData).find((l) => l.includes(`not adopting a sidecar: running sidecar pid ${lock.pid} is incompatible: it is version 0.0.0-e2e-old, this extension bundles `)), 60_000);
        await waitFor('a sidecar of its own', () => spawnLineCount() > spawnsBefore, 30_000);
        await waitFor('status ready in the new window', async () => (await statusLabel()) === 'ready', 180_000);
        const own = JSON.parse(fs.readFileSync(lockFile, 'utf8'));
        if (own.pid === lock.pid) throw new Error('the lock file still names the old sidecar');
        process.kill(lock.pid, 0); // the other windows' sidecar is left running
        await snap('adopt-incompatible');
        return `${refusal.replace(/^.*\[info\] /, '').slice(0, 140)}; own sidecar pid ${own.pid}`;
      });
    });

    await step('multi-root', async (snap) => {
      // The first window closes and a new one opens a .code-workspace with both fixture folders (a page.goto from
      // the folder URL to the workspace URL leaves the workbench with no folders in code-server 4.100.3).
      const previous = page;
      page = await browser.newPage();
      page.setDefaultTimeout(30_000);
      await previous.close();
      // At times (after other windows came and went) the workbench shows the workspace with no folders: its
      // .code-workspace was read before the remote connection was up. A reload reads it again.
      for (let attempt = 1; ; attempt++) {
        if (attempt === 1) await page.goto(`http://127.0.0.1:${port}/?workspace=${encodeURIComponent(multiRootFile)}`);
        else await page.reload();
        await page.locator('.monaco-workbench').waitFor({ timeout: 60_000 });
        const shown = await page.locator('.explorer-folders-view .monaco-list-row', { hasText: 'workspace-2' }).first().waitFor({ timeout: 20_000 }).then(() => true, () => false);
        if (shown) break;
        if (attempt === 3) throw new Error('the multi-root workspace opened with no folders, 3 times');
        log(`  the workspace opened with no folders (attempt ${attempt}); reloading`);
      }
      await waitFor('the Glance status bar item', statusLabel, 60_000);
      await waitFor('status ready in the multi-root window', async () => (await statusLabel()) === 'ready', 180_000);
      const firstFolderFiles = countFiles(workspace);
      const syncLine = await waitFor('a workspace sync of both folders in the extension log', () =>
        extensionLogLines(userData).find((l) => / workspace sync \([a-z ]+\): \d+ files in 2 folder\(s\)/.test(l)), 60_000);
      const synced = Number(/: (\d+) files in 2 folder/.exec(syncLine)[1]);
      if (synced <= firstFolderFiles) throw new Error(`the sync of 2 folders covered ${synced} files, no more than the first folder's ${firstFolderFiles}`);
      // the chat view's line says how much of the repository the sidecar knows
      await page.locator('.activitybar [aria-label^="Glance"]').first().click();
      const frame = page.frameLocator('iframe.webview.ready').frameLocator('#active-frame');
      const seen = await waitFor('the chat view to report at least the synced files', async () => {
        const t = ((await frame.locator('#context').textContent({ timeout: 5000 })) ?? '').trim();
        const m = /The model sees (\d+) of (\d+) files/.exec(t);
        return m && Number(m[2]) >= synced ? t : null;
      }, 60_000);
      await snap('multi-root-context');
      await openFile('lib/geometry.ts');
      await focusEditor();
      const { ghost } = await typeUntilGhost(GHOST_ATTEMPTS_SECOND_FOLDER, 20_000);
      await snap('multi-root-ghost');
      return `${synced} files of 2 folders synced; "${seen}"; ghost in lib/geometry.ts ${JSON.stringify(ghost.slice(0, 60))}`;
    });

    await step('chat-apply', async (snap) => {
      const geometryFile = path.join(workspace2, 'lib', 'geometry.ts');
      if ((await page.locator('.tab.dirty').count()) > 0) {
        await focusEditor(); // keep what the completions typed (Close All Editors must not stop at a save prompt)
        await page.keyboard.press('Control+S');
        await sleep(500);
      }
      await runCommand('Notifications: Clear All Notifications');
      await runCommand('View: Close All Editors');
      await openFile('lib/geometry.ts');
      await focusEditor();
      await page.keyboard.press('Control+Home'); // Insert at Cursor goes in here: the start of the file
      const frame = page.frameLocator('iframe.webview.ready').frameLocator('#active-frame');
      const question = frame.locator('#question');
      // the activity bar icon toggles: a click on an open chat view closes the side bar
      if (!(await question.isVisible().catch(() => false))) await page.locator('.activitybar [aria-label^="Glance"]').first().click();
      await question.waitFor({ timeout: 30_000 });
      await runCommand('Glance: Clear Chat History');
      await waitFor('the conversation to clear', async () => (await frame.locator('.turn').count()) === 0, 15_000);
      const uncheck = frame.locator('#useSelection');
      if (await uncheck.isChecked()) await uncheck.uncheck();

      const mathBefore = fs.readFileSync(mathFile, 'utf8');
      const geometryBefore = fs.readFileSync(geometryFile, 'utf8');
      fs.writeFileSync(scriptedChat, scriptedApplyAnswer(mathBefore.split('\n')[0], geometryBefore.split('\n')[0]));
      // a folder-qualified mention of the second folder's file and a plain one of the first folder's
      await question.fill('Mark @workspace-2/lib/geometry.ts and @src/math.ts as reviewed.');
      await question.press('Enter');
      const answer = frame.locator('.turn.assistant .body').last();
      await waitFor('the answer to finish', async () => (await answer.getAttribute('data-finish')) !== null, 60_000, 100);
      if (fs.existsSync(scriptedChat)) throw new Error('the sidecar did not take the scripted answer (is GLANCE_E2E_SCRIPTED_CHAT passed on?)');
      const deltas = Number((await answer.getAttribute('data-deltas')) ?? '0');
      if (deltas < 2) throw new Error(`the scripted answer came in ${deltas} piece(s), not streamed`);
      // both mentions resolved, in their folders, and reached the sidecar
      const sent = ((await frame.locator('.turn.user .turn-context').last().textContent()) ?? '').trim();
      if (sent !== 'with workspace-2/lib/geometry.ts, workspace/src/math.ts') throw new Error(`the question's context line reads ${JSON.stringify(sent)}`);
      const answerText = ((await answer.textContent()) ?? '').replace(/\s+/g, ' ');
      if (!answerText.includes('File workspace-2/lib/geometry.ts; File workspace/src/math.ts')) {
        throw new Error(`the sidecar did not get both @files: ${JSON.stringify(answerText.slice(0, 160))}`);
      }
      if ((await answer.locator('pre').count()) !== 2) throw new Error(`the answer has ${await answer.locator('pre').count()} code blocks, not 2`);
      await snap('chat-apply-answer');

      // Copy: the button confirms, and the code is on the clipboard
      const plainBlock = answer.locator('.code-actions').nth(0);
      await plainBlock.locator('button[data-action="copy"]').click();
      await waitFor('the Copy button to confirm', async () => (await plainBlock.locator('button[data-action="copy"]').textContent()) === 'Copied', 10_000, 50);
      const clipboard = await page.evaluate(() => navigator.clipboard.readText());
      if (clipboard !== INSERTED_CODE) throw new Error(`the clipboard holds ${JSON.stringify(clipboard.slice(0, 80))}, not the code block`);
      await snap('chat-apply-copied');

      // Insert at Cursor: the code goes in where the cursor is (the start of lib/geometry.ts)
      await plainBlock.locator('button[data-action="insert"]').click();
      await waitFor('the Insert button to confirm', async () => (await plainBlock.locator('button[data-action="insert"]').textContent()) === 'Inserted into lib/geometry.ts', 10_000, 50);
      await page.keyboard.press('Control+S'); // the extension gave the focus back to the editor
      await waitFor('the inserted code on disk', () => fs.readFileSync(geometryFile, 'utf8') === INSERTED_CODE + geometryBefore, 10_000);
      await snap('chat-apply-inserted');

      // Apply of a block editing a file of each folder: two diffs; the diff title's Accept takes one, Reject the other
      const geometryBeforeApply = fs.readFileSync(geometryFile, 'utf8');
      await answer.locator('.code-actions').nth(1).locator('button[data-action="apply"]').click();
      await page.locator('.monaco-diff-editor').first().waitFor({ timeout: 30_000 });
      await page.locator('.notification-toast', { hasText: 'Glance proposes changes to 2 file(s)' }).first().waitFor({ timeout: 15_000 });
      const tabs = page.locator('.tabs-container .tab', { hasText: 'Glance: Apply' });
      await waitFor('two diff tabs', async () => (await tabs.count()) === 2, 15_000);
      await sleep(800);
      await snap('chat-apply-diffs');
      // the diff editor's title bar buttons ($(check) / $(close), contributed to editor/title)
      const titleAction = (label) => page.locator(`.editor-actions .action-label[aria-label^="${label}"]`).first();
      // the active diff is the last one opened: lib/geometry.ts
      await page.locator('.tab.active', { hasText: 'geometry.ts' }).first().waitFor({ timeout: 10_000 });
      await titleAction('Accept This File').click();
      await waitFor('lib/geometry.ts to change on disk', () => fs.readFileSync(geometryFile, 'utf8').includes('// glance-e2e: this edit is accepted per file'), 15_000);
      await waitFor('one diff tab left', async () => (await tabs.count()) === 1, 15_000);
      await page.locator('.tab.active', { hasText: 'math.ts' }).first().waitFor({ timeout: 10_000 });
      await sleep(500);
      await snap('chat-apply-accepted-one');
      await titleAction('Reject This File').click();
      await waitFor('no diff tab left', async () => (await tabs.count()) === 0, 15_000);
      const geometryAfter = fs.readFileSync(geometryFile, 'utf8');
      const expected = geometryBeforeApply.replace(geometryBefore.split('\n')[0], `${geometryBefore.split('\n')[0]}\n// glance-e2e: this edit is accepted per file`);
      if (geometryAfter !== expected) throw new Error('lib/geometry.ts on disk is not the file with the accepted edit');
      if (fs.readFileSync(mathFile, 'utf8') !== mathBefore) throw new Error('src/math.ts changed on disk although its edit was rejected');
      if ((await page.locator('.tab.dirty').count()) > 0) throw new Error('an editor was left with unsaved changes');
      await snap('chat-apply-rejected-other');
      return `${deltas} streamed pieces; context "${sent}"; clipboard and Insert at Cursor hold the ${INSERTED_CODE.length}-char block; ` +
        'per file: lib/geometry.ts accepted (on disk), src/math.ts rejected (unchanged)';
    });
    await step('remote-sidecar', async (snap) => {
      // A sidecar the extension did not start (as on a GPU machine): its own cache dir and token file.
      const remoteDir = path.join(work, 'remote');
      fs.mkdirSync(path.join(remoteDir, 'cache'), { recursive: true });
      const tokenFile = path.join(remoteDir, 'token');
      const remoteLog = path.join(results, 'remote-sidecar.log');
      remoteSidecar = spawn(
        process.execPath,
        [path.join(repo, 'bin', 'glance.js'), 'serve', '--port', '0', '--token-file', tokenFile, '--model', path.join(repo, 'models', 'glance-tiny'), '--log-level', 'debug'],
        { env: { ...env, GLANCE_CACHE_DIR: path.join(remoteDir, 'cache') }, stdio: ['ignore', 'pipe', fs.openSync(remoteLog, 'w')] },
      );
      let stdout = '';
      remoteSidecar.stdout.on('data', (d) => (stdout += d));
      const ready = await waitFor('the remote sidecar\'s ready line', () => {
        const line = stdout.split('\n').find((l) => l.startsWith('{') && l.includes('"ready"'));
        return line ? JSON.parse(line) : null;
      }, 120_000);
      remote = { url: `ws://127.0.0.1:${ready.port}`, token: fs.readFileSync(tokenFile, 'utf8').trim(), pid: ready.pid, log: remoteLog };
      const { url, token } = remote;
      // Workspace settings of the multi-root window live in the .code-workspace file. The token goes there too, as a
      // user might paste it: the extension must move it into secret storage and out of the file.
      await runCommand('Notifications: Clear All Notifications');
      setWorkspaceSettings({ 'glance.remote.url': url, 'glance.remote.token': token });
      await acceptRestartPrompt();
      await page.locator('.notification-toast', { hasText: "It is now in VS Code's secret storage and removed from settings" }).first().waitFor({ timeout: 30_000 });
      await waitFor('the token to leave the .code-workspace file', () => !fs.readFileSync(multiRootFile, 'utf8').includes(token), 15_000);
      await waitFor('the extension to connect to the remote sidecar', () => extensionLogLines(userData).find((l) => l.includes(`connecting to remote sidecar ${url}`)), 60_000);
      await waitFor('status ready through the remote sidecar', async () => (await statusLabel()) === 'ready', 180_000);
      await waitFor('the remote sidecar to see the client', () => fs.readFileSync(remoteLog, 'utf8').includes('client initialized'), 30_000);
      await sleep(500);
      await snap('remote-ready');
      const remoteCompletionLines = () => fs.readFileSync(remoteLog, 'utf8').split('\n').filter((l) => l.includes('textDocument/inlineCompletion')).length;
      const completionsBefore = remoteCompletionLines();
      await openFile('lib/geometry.ts');
      await focusEditor();
      const { ghost } = await typeUntilGhost(GHOST_ATTEMPTS_REMOTE, 20_000);
      await snap('remote-ghost');
      const completionsAfter = remoteCompletionLines();
      if (completionsAfter <= completionsBefore) throw new Error('ghost text appeared, but the remote sidecar logged no inline completion request');
      return `remote pid ${ready.pid} at ${url}; token moved from settings to secret storage; ${completionsAfter - completionsBefore} completion log lines there; ghost ${JSON.stringify(ghost.slice(0, 60))}`;
    });

    await step('remote-errors', async (snap) => {
      if (!remote) throw new Error('needs the remote sidecar of the remote-sidecar step');
      const { url, token } = remote;
      const errorToast = (text) => page.locator('.notification-toast', { hasText: text }).last();
      /** the toast's text once it shows, whitespace collapsed */
      const toastText = async (toast) => {
        await toast.waitFor({ timeout: 15_000 });
        return ((await toast.textContent()) ?? '').replace(/\s+/g, ' ').trim();
      };
      // a wrong token, set as a user does, through the command (a masked input box)
      await runCommand('Notifications: Clear All Notifications');
      await runCommand('Glance: Set Remote Sidecar Token');
      const input = page.locator('.quick-input-widget input');
      await input.waitFor({ state: 'visible' });
      if ((await input.getAttribute('type')) !== 'password') throw new Error('the token input box is not masked');
      await input.fill('not-the-token');
      await page.keyboard.press('Enter');
      await waitFor('the status bar to show the refused token', async () => (await statusLabel()) === 'error' && (await statusText()).includes('remote token refused'), 60_000);
      const refused = errorToast('refused the token');
      const refusedText = await toastText(refused);
      if (!refusedText.includes(`The remote sidecar at ${url}/lsp refused the token`)) throw new Error(`the notification reads ${JSON.stringify(refusedText)}`);
      await sleep(800);
      await snap('remote-wrong-token');
      // the notification's own button fixes it
      await refused.locator('.monaco-button', { hasText: 'Set Remote Token' }).first().click();
      await input.waitFor({ state: 'visible' });
      await input.fill(token);
      await page.keyboard.press('Enter');
      await waitFor('status ready with the right token', async () => (await statusLabel()) === 'ready', 120_000);
      if (remoteSidecar.exitCode !== null) throw new Error('the remote sidecar exited when the window reconnected');

      // an unreachable URL: a port nothing listens on; bounded retries, then the error
      await runCommand('Notifications: Clear All Notifications');
      const closedPort = await freePort();
      const unreachableUrl = `ws://127.0.0.1:${closedPort}`;
      setWorkspaceSettings({ 'glance.remote.url': unreachableUrl });
      await acceptRestartPrompt();
      await waitFor('the status bar to show the unreachable remote', async () => (await statusLabel()) === 'error' && (await statusText()).includes('remote unreachable'), 90_000);
      const unreachable = errorToast('Cannot reach the remote sidecar');
      const unreachableText = await toastText(unreachable);
      if (!unreachableText.includes(`Cannot reach the remote sidecar at ${unreachableUrl}/lsp: connection refused`)) {
        throw new Error(`the notification reads ${JSON.stringify(unreachableText)}`);
      }
      await sleep(800);
      await snap('remote-unreachable');

      // back to the remote sidecar for the next step
      await runCommand('Notifications: Clear All Notifications');
      setWorkspaceSettings({ 'glance.remote.url': url });
      await acceptRestartPrompt();
      await waitFor('status ready through the remote sidecar again', async () => (await statusLabel()) === 'ready', 120_000);
      return `wrong token: ${JSON.stringify(refusedText.slice(0, 110))}; unreachable: ${JSON.stringify(unreachableText.slice(0, 110))}`;
    });

    await step('refactor-commands', async (snap) => {
      const outcomes = [];
      const frame = page.frameLocator('iframe.webview.ready').frameLocator('#active-frame');
      // keep what the completions typed (Close All Editors must not stop at a save prompt)
      await openFile('lib/geometry.ts');
      await focusEditor();
      await page.keyboard.press('Control+S');
      await sleep(500);
      for (const title of ['Explain', 'Add Types', 'Add Docs', 'Write Tests', 'Fix Problems']) {
        await runCommand('Notifications: Clear All Notifications');
        await runCommand('View: Close All Editors');
        await openFile('lib/geometry.ts');
        await focusEditor();
        // select distance(): from its first line through its closing brace
        const text = fs.readFileSync(path.join(workspace2, 'lib', 'geometry.ts'), 'utf8').split('\n');
        const first = text.findIndex((l) => l.startsWith('export function distance')) + 1;
        if (first <= 0) throw new Error('lib/geometry.ts lost its distance() function');
        await page.keyboard.press('Control+G');
        await page.keyboard.type(String(first));
        await page.keyboard.press('Enter');
        // Fix Problems without a selection takes the whole file's diagnostics (the completions typed above leave some)
        if (title !== 'Fix Problems') for (let i = 0; i < 3; i++) await page.keyboard.press('Shift+ArrowDown');
        const explainTurnsBefore = title === 'Explain' ? await frame.locator('.turn.user', { hasText: 'Explain' }).count().catch(() => 0) : 0;
        await runCommand(`Glance: ${title}`);
        const outcome = await waitFor(`a visible outcome of ${title}`, async () => {
          if (title === 'Explain') {
            const turns = frame.locator('.turn.user', { hasText: 'Explain' });
            if ((await turns.count()) > explainTurnsBefore) {
              const answer = ((await frame.locator('.turn.assistant .body').last().textContent()) ?? '').trim();
              return answer !== '' ? `explanation in the chat view (${answer.length} chars)` : null;
            }
          } else if ((await page.locator('.monaco-diff-editor').count()) > 0) {
            return 'diff with Accept/Reject';
          }
          const toasts = await page.locator('.notification-toast').allTextContents();
          const message = toasts.map((t) => t.replace(/\s+/g, ' ')).find((t) => /proposed no changes|failed|no problems reported/.test(t));
          return message ? `message: ${message.slice(0, 120)}` : null;
        }, 180_000);
        await sleep(800);
        await snap(`refactor-${title.toLowerCase().replace(/\s+/g, '-')}`);
        // no progress notification stays behind
        await waitFor(`the ${title} progress notification to go away`, async () => {
          const toasts = await page.locator('.notification-toast').allTextContents();
          return !toasts.some((t) => /thinking…|writing…/.test(t));
        }, 15_000);
        if (outcome.startsWith('diff')) {
          // Reject with the notification's button (a mouse click: an Enter from the command palette can reach the
          // editor that gets the focus back, which still holds the selection)
          const toast = page.locator('.notification-toast', { hasText: 'Glance proposes changes' }).last();
          await toast.locator('.monaco-button', { hasText: 'Reject All' }).first().click();
          await waitFor('the diff to close after Reject All', async () => (await page.locator('.monaco-diff-editor').count()) === 0, 15_000);
          const onDisk = fs.readFileSync(path.join(workspace2, 'lib', 'geometry.ts'), 'utf8');
          if (onDisk !== text.join('\n')) throw new Error(`Reject All after ${title} changed lib/geometry.ts on disk`);
          if ((await page.locator('.tab.dirty').count()) > 0) throw new Error(`Reject All after ${title} left an editor with unsaved changes`);
        }
        outcomes.push(`${title}: ${outcome}`);
      }
      return outcomes.join('; ');
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
