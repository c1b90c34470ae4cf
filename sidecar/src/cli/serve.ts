// `glance serve`: the long-running sidecar. Model load progress goes to stderr, then exactly one JSON line on
// stdout says where it listens ({"event":"ready",…}); the lock file lets other editor windows find it.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { startSidecar, type Sidecar } from '../app';
import { DEFAULT_COMPLETION_SETTINGS } from '../assistant/completion';
import { isGlanceError } from '../engine/errors';
import { findProjectRoot } from '../native/index';
import { PROTOCOL_VERSION, type ReadyLine } from '../protocol/index';
import { loadOrCreateToken } from '../server/auth';
import { glanceCacheDir, lockFilePath, readLiveLockFile, removeLockFile, writeLockFile } from '../server/lockfile';
import { Log, type LogLevel } from '../server/log';
import type { CliIo } from './main';
import { resolveModelDir } from './main';

export const SERVE_HELP = `usage: glance serve [--model DIR] [--host 127.0.0.1] [--port 0] [--token-file FILE] [--device auto|cuda|cpu]

Runs the sidecar: LSP over WebSocket (ws://HOST:PORT/lsp, "Authorization: Bearer <token>").

  --model DIR          model directory (default: models/glance-tiny)
  --host HOST          interface to listen on (default 127.0.0.1; anything else is reachable from the network)
  --port N             TCP port (default 0: any free port; the ready line says which)
  --token-file FILE    file holding the bearer token; created with a new random 256-bit token (mode 0600) if missing
                       (default: ~/.cache/glance/sidecar-token)
  --device D           auto (CUDA when present, else CPU), cuda, or cpu (default auto)
  --gpu-memory SIZE    GPU memory budget for weights and caches: 24GiB, 512MiB, or 0.8 of the device (CUDA only)
  --attention MODE     sparse (DSA top-k, default) or dense
  --context N          cap the context window at N tokens (default: the model's)
  --slots N            sequences computed side by side (default 2)
  --max-queue N        requests in flight before new ones get "busy" (default 64)
  --edit-mode M        fim (default: edits by fill-in-the-middle) or chat (search/replace blocks)
  --log-level L        debug, info (default), warn or error
  --completion-max-tokens N   most tokens of one inline completion (default 96)
  --completion-timeout-ms N   time box of one inline completion (default 2000)
  --keep-alive         keep running after the last client sends exit
  --no-prefix-reuse    recompute every prompt from scratch (benchmark baseline; never faster)
  --help, -h           show this help
`;

class ServeUsageError extends Error {}

function intArg(name: string, v: string | undefined, min: number, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new ServeUsageError(`--${name} must be an integer ≥ ${min}; found ${JSON.stringify(v)}`);
  return n;
}

function choice<T extends string>(name: string, v: string | undefined, options: readonly T[], dflt: T): T {
  if (v === undefined) return dflt;
  if (!(options as readonly string[]).includes(v)) throw new ServeUsageError(`--${name} must be one of ${options.join(', ')}; found ${JSON.stringify(v)}`);
  return v as T;
}

export async function runServe(argv: string[], io: CliIo): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, 'token-file': { type: 'string' },
        device: { type: 'string' }, 'gpu-memory': { type: 'string' }, attention: { type: 'string' }, context: { type: 'string' },
        slots: { type: 'string' }, 'max-queue': { type: 'string' }, 'edit-mode': { type: 'string' }, 'log-level': { type: 'string' },
        'completion-max-tokens': { type: 'string' }, 'completion-timeout-ms': { type: 'string' },
        'keep-alive': { type: 'boolean' }, 'no-prefix-reuse': { type: 'boolean' }, help: { type: 'boolean', short: 'h' }, verbose: { type: 'boolean', short: 'v' },
      },
    }).values as Record<string, string | boolean | undefined>;
  } catch (e) {
    io.err(`glance: ${(e as Error).message.replace(/\. To specify a positional argument.*$/s, '')}\n\n${SERVE_HELP}`);
    return 2;
  }
  if (values.help) {
    await io.out(SERVE_HELP);
    return 0;
  }
  const s = (k: string): string | undefined => values[k] as string | undefined;
  let opts;
  try {
    // A size like 24GiB / 512MiB, bytes, or a fraction of the device (0.8); engine/device.ts checks it.
    const gpuMemory = s('gpu-memory') ?? null;
    const context = s('context');
    opts = {
      host: s('host') ?? '127.0.0.1',
      port: intArg('port', s('port'), 0, 0),
      device: choice('device', s('device'), ['auto', 'cuda', 'cpu'] as const, 'auto'),
      attention: choice('attention', s('attention'), ['sparse', 'dense'] as const, 'sparse'),
      contextWindow: context === undefined ? null : intArg('context', context, 64, 0),
      slots: intArg('slots', s('slots'), 1, 2),
      maxQueue: intArg('max-queue', s('max-queue'), 1, 64),
      editMode: choice('edit-mode', s('edit-mode'), ['fim', 'chat'] as const, 'fim'),
      logLevel: choice('log-level', s('log-level'), ['debug', 'info', 'warn', 'error'] as const, 'info') as LogLevel,
      gpuMemory,
      completion: {
        maxTokens: intArg('completion-max-tokens', s('completion-max-tokens'), 1, DEFAULT_COMPLETION_SETTINGS.maxTokens),
        maxLines: DEFAULT_COMPLETION_SETTINGS.maxLines,
        timeBoxMs: intArg('completion-timeout-ms', s('completion-timeout-ms'), 50, DEFAULT_COMPLETION_SETTINGS.timeBoxMs),
      },
    };
    if (opts.port > 65535) throw new ServeUsageError(`--port must be ≤ 65535; found ${opts.port}`);
  } catch (e) {
    if (e instanceof ServeUsageError) {
      io.err(`glance: ${e.message}\n\n${SERVE_HELP}`);
      return 2;
    }
    throw e;
  }
  // When the process that started us goes away, our stdout/stderr pipes break (EPIPE). Logging can then go
  // nowhere; the sidecar stays up while clients are connected and exits when the last one leaves.
  let orphaned = false;
  let clientsConnected = (): number => 0;
  const onBrokenPipe = (): void => {
    if (orphaned) return;
    orphaned = true;
    if (clientsConnected() === 0) void shutdown('the parent process is gone and no client is connected');
  };
  // The parent's death also shows as a new parent pid (re-parented to init or a subreaper).
  const parentPid = process.ppid;
  const parentWatch = setInterval(() => {
    if (process.ppid !== parentPid) {
      clearInterval(parentWatch);
      onBrokenPipe();
    }
  }, 2000);
  parentWatch.unref();
  process.stderr.on('error', onBrokenPipe);
  process.stdout.on('error', onBrokenPipe);
  const log = new Log(opts.logLevel, (line) => {
    if (!orphaned) io.err(line);
  });
  // A bug in one request's handling must not take down every client's sidecar: log it and keep serving.
  process.on('uncaughtException', (e) => {
    if ((e as NodeJS.ErrnoException).code === 'EPIPE') return onBrokenPipe();
    log.error('uncaught exception', { error: e.stack ?? String(e) });
  });
  process.on('unhandledRejection', (e) => log.error('unhandled rejection', { error: (e as Error)?.stack ?? String(e) }));
  const loopback = ['127.0.0.1', 'localhost', '::1'].includes(opts.host);
  if (!loopback) log.warn(`listening on ${opts.host}: other machines on the network can reach this port (the token still guards it)`);

  let modelDir: string;
  let token: string;
  let tokenFile: string;
  try {
    modelDir = resolveModelDir((values.model as string | undefined) ?? null);
    tokenFile = path.resolve(s('token-file') ?? path.join(glanceCacheDir(), 'sidecar-token'));
    const t = loadOrCreateToken(tokenFile);
    token = t.token;
    if (t.warning) log.warn(t.warning);
  } catch (e) {
    io.err(`glance: ${(e as Error).message}\n`);
    return 1;
  }
  const other = readLiveLockFile();
  if (other && other.pid !== process.pid) log.warn(`another sidecar (pid ${other.pid}, port ${other.port}) is running; this one takes over ${lockFilePath()}`);

  const version = packageVersion();
  let started = false;
  let lastShown = -1;
  let sidecar: Sidecar;
  try {
    sidecar = await startSidecar({
      modelDir, host: opts.host, port: opts.port, token, device: opts.device, attention: opts.attention,
      contextWindow: opts.contextWindow, slots: opts.slots, maxQueue: opts.maxQueue, editMode: opts.editMode,
      gpuMemory: opts.gpuMemory, completion: opts.completion, prefixReuse: values['no-prefix-reuse'] !== true, version, log,
      onLoading: (done, total, what) => {
        const pct = total > 0 ? Math.floor((100 * done) / total) : 100;
        if (pct !== lastShown) {
          lastShown = pct;
          io.err(`loading model: ${what} ${done}/${total} (${pct}%)\n`);
        }
      },
      onLastExit: () => {
        if (!values['keep-alive']) void shutdown('the last client sent exit');
      },
      onLastDisconnect: () => {
        if (orphaned) void shutdown('the parent process is gone and the last client left');
      },
    });
  } catch (e) {
    const code = (e as { code?: string }).code;
    if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') io.err(`glance: port ${opts.port} on ${opts.host} is in use; pick another with --port (0 = any free port)\n`);
    else if (isGlanceError(e) || code) io.err(`glance: ${(e as Error).message}\n`);
    else io.err(`glance: the sidecar failed to start: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }

  clientsConnected = () => sidecar.clients();
  const lockFile = lockFilePath();
  const ready: ReadyLine = { event: 'ready', port: sidecar.port, pid: process.pid, model: sidecar.info.model, device: sidecar.info.device };
  writeLockFile(lockFile, {
    port: sidecar.port, host: opts.host, pid: process.pid, tokenFile, model: modelDir, version, protocolVersion: PROTOCOL_VERSION,
    device: sidecar.info.device, startedAt: new Date().toISOString(),
  });
  await io.out(`${JSON.stringify(ready)}\n`);
  log.info('ready', { port: sidecar.port, model: modelDir, device: sidecar.info.device, contextWindow: sidecar.info.contextWindow });

  started = true;
  let done: (code: number) => void = () => {};
  const finished = new Promise<number>((r) => { done = r; });
  let stopping = false;
  async function shutdown(why: string): Promise<void> {
    if (stopping || !started) return;
    stopping = true;
    log.info('shutting down', { why });
    const force = setTimeout(() => {
      removeLockFile(lockFile, process.pid);
      done(1);
    }, 5000);
    try {
      await sidecar.stop();
    } finally {
      clearTimeout(force);
      removeLockFile(lockFile, process.pid);
      done(0);
    }
  }
  if (orphaned) void shutdown('the parent process went away during start-up');
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));
  process.once('exit', () => removeLockFile(lockFile, process.pid));
  return finished;
}

/** The sidecar's version: this package's package.json (found the same way as the native addon). */
function packageVersion(): string {
  const root = findProjectRoot();
  if (root === null) return '0.0.0';
  try {
    return (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version?: string }).version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}
