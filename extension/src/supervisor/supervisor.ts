// Keeps one live connection to a sidecar: a remote one from settings, or a local one adopted from the lock file,
// or one spawned as a child process. On a crash or a lost connection it starts over with bounded backoff; when
// the budget is spent it stops with the classified error and the last stderr lines.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import * as vscode from 'vscode';
import { CloseAction, ErrorAction, LanguageClient, type LanguageClientOptions } from 'vscode-languageclient/node';
import type WebSocket from 'ws';

import { type GlanceCapabilities, PROTOCOL_VERSION, type ReadyLine, WEBSOCKET_PATH } from '../../../sidecar/src/protocol';
import { WebSocketMessageReader, WebSocketMessageWriter, openSidecarSocket } from '../client/wsTransport';
import { type GlanceConfig, readConfig, resolveModelDir } from '../config';
import { classifySidecarError } from './errorClassifier';
import { type SidecarExpectation, incompatibility, inspectLockFile, lockFilePath } from './lockFile';
import { parseReadyLine } from './readyLine';
import type { RemoteTokenStore } from './remoteToken';
import { SET_REMOTE_TOKEN_COMMAND } from './remoteTokenCommand';
import { type RemoteFailure, describeRemoteFailure, remoteSocketUrl } from './remoteUrl';
import { LineRing, RestartPolicy } from './restartPolicy';

export type SupervisorState =
  | { kind: 'starting'; detail: string }
  | { kind: 'restarting'; reason: string; delayMs: number; attempt: number }
  | { kind: 'connected'; origin: 'spawned' | 'adopted' | 'remote'; pid: number | null; capabilities: GlanceCapabilities | null }
  | {
      kind: 'error';
      message: string;
      advice: string;
      stderrTail: string[];
      /** a few words for the status bar (e.g. "remote token refused"); absent: "error" */
      short?: string;
      /** the remote token is the problem: the notification offers "Set Remote Token" */
      tokenProblem?: boolean;
    }
  | { kind: 'stopped' };

/** How long a spawned sidecar may take to print its ready line (model load included). */
const READY_TIMEOUT_MS = 180_000;

interface Session {
  generation: number;
  client: LanguageClient;
  socket: WebSocket;
  child: ChildProcess | null;
  origin: 'spawned' | 'adopted' | 'remote';
}

export class SidecarSupervisor implements vscode.Disposable {
  private readonly stateEmitter = new vscode.EventEmitter<SupervisorState>();
  readonly onDidChangeState = this.stateEmitter.event;
  private readonly clientEmitter = new vscode.EventEmitter<LanguageClient | null>();
  /** fires with the new client after every (re)connect, and null when the connection is lost */
  readonly onDidChangeClient = this.clientEmitter.event;

  private current: SupervisorState = { kind: 'stopped' };
  private session: Session | null = null;
  private generation = 0;
  private readonly policy = new RestartPolicy();
  /** stderr of the current (or last) spawned sidecar */
  private stderr = new LineRing(200);
  private restartTimer: NodeJS.Timeout | null = null;
  private disposed = false;
  /** a child we spawned that has not exited yet (may outlive a failed session start) */
  private child: ChildProcess | null = null;

  /** what a sidecar must report to be used: the protocol and the version this extension bundles */
  private readonly expected: SidecarExpectation;

  constructor(
    private readonly extensionPath: string,
    private readonly storageDir: string,
    private readonly log: vscode.LogOutputChannel,
    private readonly remoteToken: RemoteTokenStore,
    extensionVersion: string,
  ) {
    this.expected = { protocolVersion: PROTOCOL_VERSION, version: extensionVersion };
  }

  get state(): SupervisorState {
    return this.current;
  }

  get client(): LanguageClient | null {
    return this.session?.client ?? null;
  }

  /** pid of the sidecar process we talk to, when local */
  get sidecarPid(): number | null {
    return this.current.kind === 'connected' ? this.current.pid : null;
  }

  stderrTail(n = 20): string[] {
    return this.stderr.tail(n);
  }

  start(): void {
    void this.run('start');
  }

  /** A user-requested restart: forgets earlier crashes and kills a sidecar we own. */
  async restart(): Promise<void> {
    this.policy.reset();
    this.generation++; // the old session's close and exit handlers must not count as a crash
    await this.teardown(true);
    void this.run('manual restart');
  }

  private setState(state: SupervisorState): void {
    this.current = state;
    this.stateEmitter.fire(state);
  }

  private async run(why: string): Promise<void> {
    if (this.disposed) return;
    if (this.restartTimer) {
      clearTimeout(this.restartTimer);
      this.restartTimer = null;
    }
    const generation = ++this.generation;
    const config = readConfig();
    try {
      await this.connect(config, generation, why);
    } catch (e) {
      if (generation !== this.generation || this.disposed) return;
      if (e instanceof SidecarExit) this.onFailure(e.message, e.code, e.signal);
      else if (e instanceof RemoteConnectFailure) {
        if (e.failure.retry) this.onFailure(e.failure.message, null, null, e.failure);
        else this.stopWithError(e.failure.message, e.failure.advice, [], e.failure);
      } else this.onFailure((e as Error).message, null, null);
    }
  }

  private async connect(config: GlanceConfig, generation: number, why: string): Promise<void> {
    if (config.remoteUrl !== '') {
      this.setState({ kind: 'starting', detail: `connecting to ${config.remoteUrl}` });
      let url: string;
      try {
        url = remoteSocketUrl(config.remoteUrl);
      } catch (e) {
        const message = (e as Error).message;
        throw new RemoteConnectFailure({ short: 'bad remote URL', message, advice: 'Fix glance.remote.url in settings.', retry: false, tokenProblem: false });
      }
      const token = await this.remoteToken.get();
      if (token === '') throw new RemoteConnectFailure(describeRemoteFailure(url, 'no-token'));
      this.log.info(`connecting to remote sidecar ${url} (${why})`);
      let socket: WebSocket;
      try {
        socket = await openSidecarSocket(url, token);
      } catch (e) {
        const failure = describeRemoteFailure(url, e);
        this.log.warn(`${failure.message} (${(e as Error).message})`);
        throw new RemoteConnectFailure(failure);
      }
      await this.attach(generation, socket, null, 'remote', null);
      return;
    }

    const modelDir = resolveModelDir(config, this.extensionPath);
    const verdict = inspectLockFile(lockFilePath(), modelDir, this.expected);
    if (verdict.kind === 'adopt') {
      const { lock } = verdict;
      const url = `ws://${lock.host === '0.0.0.0' ? '127.0.0.1' : lock.host}:${lock.port}${WEBSOCKET_PATH}`;
      this.setState({ kind: 'starting', detail: `adopting sidecar pid ${lock.pid}` });
      try {
        const socket = await openSidecarSocket(url, verdict.token, 5000);
        this.log.info(`adopted running sidecar pid ${lock.pid} at ${url} (${why})`);
        await this.attach(generation, socket, null, 'adopted', lock.pid);
        return;
      } catch (e) {
        if (generation !== this.generation) return;
        this.log.warn(`could not adopt sidecar pid ${lock.pid}: ${(e as Error).message}; starting our own`);
      }
    } else {
      this.log.info(`not adopting a sidecar: ${verdict.reason}`);
    }

    this.setState({ kind: 'starting', detail: 'starting the sidecar' });
    const { ready, token, child } = await this.spawnSidecar(config, modelDir, generation);
    if (generation !== this.generation) return;
    const socket = await openSidecarSocket(`ws://127.0.0.1:${ready.port}${WEBSOCKET_PATH}`, token);
    await this.attach(generation, socket, child, 'spawned', ready.pid);
  }

  private sidecarScript(): string {
    return path.join(this.extensionPath, 'dist', 'sidecar.js');
  }

  private async spawnSidecar(
    config: GlanceConfig,
    modelDir: string,
    generation: number,
  ): Promise<{ ready: ReadyLine; token: string; child: ChildProcess }> {
    const script = this.sidecarScript();
    if (!fs.existsSync(script)) throw new Error(`the sidecar bundle is missing: ${script} (rebuild the extension)`);
    if (!fs.existsSync(path.join(modelDir, 'config.json'))) {
      throw new Error(`model directory ${modelDir} has no config.json (check glance.model.path)`);
    }
    fs.mkdirSync(this.storageDir, { recursive: true });
    const tokenFile = path.join(this.storageDir, 'sidecar.token');
    fs.writeFileSync(tokenFile, randomBytes(32).toString('hex'), { mode: 0o600 });
    fs.chmodSync(tokenFile, 0o600);

    const args = [script, 'serve', '--model', modelDir, '--port', '0', '--device', config.device, '--token-file', tokenFile];
    if (config.contextBudgetTokens !== null) args.push('--context', String(config.contextBudgetTokens));
    if (config.gpuMemoryGiB !== null) args.push('--gpu-memory', String(config.gpuMemoryGiB));
    const env: NodeJS.ProcessEnv = { ...process.env, ELECTRON_RUN_AS_NODE: '1' };
    const addon = path.join(this.extensionPath, 'dist', 'glance_native.node');
    if (fs.existsSync(addon)) env.GLANCE_NATIVE_ADDON = addon;

    this.log.info(`spawning: ${process.execPath} ${args.join(' ')}`);
    this.stderr = new LineRing(200);
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'], windowsHide: true });
    this.child = child;
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      for (const line of this.stderr.push(chunk)) if (line.trim() !== '') this.log.info(`[sidecar] ${line}`);
    });

    const ready = await new Promise<ReadyLine>((resolve, reject) => {
      const stdout = new LineRing(50);
      const timer = setTimeout(() => {
        reject(new Error(`the sidecar printed no ready line within ${READY_TIMEOUT_MS / 1000} s`));
        child.kill('SIGKILL');
      }, READY_TIMEOUT_MS);
      child.stdout?.setEncoding('utf8');
      child.stdout?.on('data', (chunk: string) => {
        for (const line of stdout.push(chunk)) {
          const parsed = parseReadyLine(line);
          if (parsed) {
            clearTimeout(timer);
            resolve(parsed);
          } else if (line.trim() !== '') this.log.info(`[sidecar stdout] ${line}`);
        }
      });
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`could not start the sidecar: ${e.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        const advice = classifySidecarError(this.stderr.tail(30), code, signal);
        reject(new SidecarExit(code, signal, advice.advice));
      });
    });

    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = null;
      this.log.warn(`sidecar pid ${String(child.pid)} exited (${signal ?? `code ${String(code)}`})`);
      if (generation === this.generation && !this.disposed) this.onFailure('the sidecar process exited', code, signal);
    });
    const token = fs.readFileSync(tokenFile, 'utf8').trim();
    this.log.info(`sidecar ready: pid ${ready.pid}, port ${ready.port}, model ${ready.model}, device ${ready.device}`);
    return { ready, token, child };
  }

  private async attach(
    generation: number,
    socket: WebSocket,
    child: ChildProcess | null,
    origin: 'spawned' | 'adopted' | 'remote',
    pid: number | null,
  ): Promise<void> {
    const reader = new WebSocketMessageReader(socket);
    const writer = new WebSocketMessageWriter(socket);
    const options: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      outputChannel: this.log,
      workspaceFolder: undefined,
      initializationOptions: { client: 'glance-vscode', version: vscode.version },
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue, handled: true }),
        // The supervisor restarts; the client must not reconnect over a dead socket on its own.
        closed: () => ({ action: CloseAction.DoNotRestart, handled: true }),
      },
      middleware: {
        // Our own provider (debounce, cache, filters) asks for completions; the client's built-in one stays quiet.
        provideInlineCompletionItems: () => null,
      },
    };
    const client = new LanguageClient('glance', 'Glance', () => Promise.resolve({ reader, writer }), options);
    let refused = false;
    socket.on('close', () => {
      if (refused || generation !== this.generation || this.disposed) return;
      // A spawned sidecar's exit handler reports the crash with its exit code; wait briefly for it.
      setTimeout(() => {
        if (generation === this.generation && !this.disposed) this.onFailure('the connection to the sidecar closed', null, null);
      }, child ? 300 : 0);
    });
    await client.start();
    if (generation !== this.generation) {
      void client.dispose().catch(() => undefined);
      return;
    }
    const experimental = client.initializeResult?.capabilities.experimental as { glance?: GlanceCapabilities } | undefined;
    const capabilities = experimental?.glance ?? null;
    const incompatible = incompatibility(capabilities ?? {}, this.expected);
    if (incompatible !== null && origin !== 'spawned') {
      // Leave without shutdown/exit: the sidecar may serve other windows.
      refused = true;
      socket.terminate();
      void client.dispose(500).catch(() => undefined);
      if (origin === 'adopted') throw new Error(`it is incompatible: ${incompatible}`);
      if (capabilities?.protocolVersion !== PROTOCOL_VERSION) {
        throw new RemoteConnectFailure({
          short: 'remote incompatible',
          message: `The remote sidecar is incompatible: ${incompatible}`,
          advice: 'Install the same Glance version on the remote machine as this extension.',
          retry: false,
          tokenProblem: false,
        });
      }
    }
    if (incompatible !== null) this.log.warn(`the ${origin} sidecar differs from this extension: ${incompatible}`);
    this.session = { generation, client, socket, child, origin };
    this.setState({ kind: 'connected', origin, pid, capabilities });
    this.clientEmitter.fire(client);
  }

  private onFailure(reason: string, code: number | null, signal: NodeJS.Signals | string | null, remote?: RemoteFailure): void {
    if (this.disposed) return;
    const generation = ++this.generation; // invalidates the failed session's handlers
    void this.teardown(false).then(() => {
      if (generation !== this.generation || this.disposed) return;
      const delay = this.policy.onCrash(Date.now());
      const tail = this.stderr.tail(20);
      // The reason (e.g. a missing model found before spawning) says more than stderr, when it is recognised.
      const fromReason = classifySidecarError([reason], code, signal);
      const classified = fromReason.kind !== 'unknown' ? fromReason : classifySidecarError(tail, code, signal);
      if (delay === null) {
        if (remote) {
          this.stopWithError(`${remote.message} (${this.policy.recentCrashes} attempts)`, remote.advice, [], remote);
          return;
        }
        const message = `The sidecar failed ${this.policy.recentCrashes} times: ${reason}`;
        this.stopWithError(message, classified.advice, tail);
        return;
      }
      this.log.warn(`${reason}; restarting in ${delay} ms (attempt ${this.policy.recentCrashes})`);
      this.setState({ kind: 'restarting', reason, delayMs: delay, attempt: this.policy.recentCrashes });
      this.restartTimer = setTimeout(() => void this.run(`restart after: ${reason}`), delay);
    });
  }

  /** Gives up: the error state, the log, and a notification with what to do. */
  private stopWithError(message: string, advice: string, stderrTail: string[], remote?: RemoteFailure): void {
    this.log.error(`${message}. ${advice}${stderrTail.length ? `\n${stderrTail.join('\n')}` : ''}`);
    this.setState({
      kind: 'error',
      message,
      advice,
      stderrTail,
      ...(remote ? { short: remote.short, tokenProblem: remote.tokenProblem } : {}),
    });
    const actions = remote?.tokenProblem ? ['Set Remote Token', 'Show Logs'] : ['Show Logs', 'Restart'];
    void vscode.window.showErrorMessage(`Glance: ${message}. ${advice}`, ...actions).then((choice) => {
      if (choice === 'Show Logs') this.log.show();
      if (choice === 'Restart') void this.restart();
      if (choice === 'Set Remote Token') void vscode.commands.executeCommand(SET_REMOTE_TOKEN_COMMAND);
    });
  }

  private async teardown(killChild: boolean): Promise<void> {
    const session = this.session;
    this.session = null;
    this.clientEmitter.fire(null);
    if (session) {
      // A remote sidecar outlives us: close the socket first, so it gets no LSP exit (which ends a sidecar whose
      // last client leaves) and stays up for the next connect, this window's or another's.
      if (session.origin === 'remote') session.socket.terminate();
      try {
        await Promise.race([session.client.dispose(2000), new Promise((r) => setTimeout(r, 2500))]);
      } catch {
        // the connection is already gone
      }
      session.socket.terminate();
    }
    if (killChild && this.child) {
      const child = this.child;
      this.child = null;
      child.kill('SIGTERM');
    }
  }

  dispose(): void {
    this.disposed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    void this.teardown(true);
    this.setState({ kind: 'stopped' });
    this.stateEmitter.dispose();
    this.clientEmitter.dispose();
  }
}

/** A remote sidecar could not be used; carries what to tell the user and whether to retry. */
class RemoteConnectFailure extends Error {
  constructor(readonly failure: RemoteFailure) {
    super(failure.message);
  }
}

class SidecarExit extends Error {
  constructor(readonly code: number | null, readonly signal: string | null, advice: string) {
    super(`the sidecar exited before it was ready (${signal ?? `code ${String(code)}`}). ${advice}`);
  }
}
