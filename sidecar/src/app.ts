// The sidecar's composition root: every component is built here, once, with its dependencies passed in (no
// singletons, no service locator). `startSidecar` loads the model on the engine thread, listens, and returns a
// handle whose `stop()` shuts everything down in order.

import * as http from 'node:http';
import * as path from 'node:path';

import { WebSocketServer, type WebSocket } from 'ws';

import { ChatService } from './assistant/chat';
import { CompletionService, type CompletionSettings } from './assistant/completion';
import { EditService, type EditMode } from './assistant/edit';
import { readConfig } from './engine/config';
import { GlanceError } from './engine/errors';
import { loadTokenizer } from './engine/tokenizer';
import { specialIds } from './context/layout';
import { RepositoryContext } from './context/repository';
import { PROTOCOL_VERSION, WEBSOCKET_PATH, type GlanceCapabilities, type SidecarState, type StatusResult } from './protocol/index';
import { EngineHost } from './scheduler/engine-host';
import type { EngineInfo } from './scheduler/messages';
import { checkUpgrade } from './server/auth';
import type { Log } from './server/log';
import { Session } from './server/session';
import type { Workspace } from './workspace/workspace';

export interface SidecarOptions {
  modelDir: string;
  host: string;
  port: number;
  token: string;
  device: 'auto' | 'cuda' | 'cpu';
  attention: 'sparse' | 'dense';
  /** cap on the context window (tokens); null = the model's */
  contextWindow: number | null;
  slots: number;
  maxQueue: number;
  editMode: EditMode;
  gpuMemory: string | null;
  completion: CompletionSettings;
  /** default true; false only for the benchmark's no-reuse baseline */
  prefixReuse?: boolean;
  version: string;
  log: Log;
  /** model loading progress */
  onLoading?: (done: number, total: number, what: string) => void;
  /** every client has gone after an `exit` */
  onLastExit?: () => void;
  /** the last client disconnected (for any reason) */
  onLastDisconnect?: () => void;
}

export interface Sidecar {
  port: number;
  info: EngineInfo;
  status(): StatusResult;
  /** connected clients */
  clients(): number;
  stop(): Promise<void>;
}

const STATUS_PUSH_MS = 250;
/** room kept after the repository prefix for a request's own prompt and its answer */
const REQUEST_RESERVE = 4096;

export async function startSidecar(opts: SidecarOptions): Promise<Sidecar> {
  const log = opts.log;
  const modelDir = path.resolve(opts.modelDir);
  // Fail fast, with the engine's own message, on a model directory that cannot work.
  const config = readConfig(modelDir);
  const tokenizer = loadTokenizer(modelDir);
  if (!tokenizer) throw new GlanceError('no_tokenizer', `${modelDir} has no tokenizer.json; the sidecar needs one to read and write text`);

  const engine = new EngineHost(
    { modelDir, device: opts.device, attention: opts.attention, contextWindow: opts.contextWindow, slots: opts.slots, gpuMemory: opts.gpuMemory, prefixReuse: opts.prefixReuse ?? true },
    opts.maxQueue,
  );
  if (opts.onLoading) engine.on('loading', opts.onLoading);
  const info = await engine.start();
  const contextWindow = info.contextWindow;
  const reserve = Math.min(REQUEST_RESERVE, Math.floor(contextWindow / 4));
  const special = specialIds(tokenizer, config.eosTokenIds);
  const ctx = new RepositoryContext(tokenizer, special, contextWindow - reserve, engine, log);
  const completion = new CompletionService(ctx, engine, opts.completion);
  const chat = new ChatService(ctx, engine, contextWindow);
  const edit = new EditService(ctx, engine, contextWindow, opts.editMode);
  let engineError: string | null = null;
  engine.on('failed', (message) => {
    engineError = message;
    log.error('engine', { message });
  });
  engine.on('exit', (code) => {
    engineError = engineError ?? `the engine thread exited (code ${code})`;
  });

  const capabilities = (): GlanceCapabilities => ({
    model: info.model,
    device: info.device,
    contextWindow,
    indexTopk: info.indexTopk,
    version: opts.version,
    protocolVersion: PROTOCOL_VERSION,
  });

  const status = (ws: Workspace | null): StatusResult => {
    const s = engine.stats;
    const layout = ws ? ctx.layout(ws) : ctx.currentLayout();
    const counts = ws?.counts() ?? { known: 0, skipped: 0 };
    const contextTokens = layout?.ids.length ?? 0;
    // The engine's figures are about its background target; they count for this layout once it is the target.
    const isTarget = (ws === null || ws === ctx.currentWorkspace()) && s.targetTokens === contextTokens;
    const cached = isTarget ? Math.min(s.cachedTokens, contextTokens) : 0;
    let state: SidecarState = 'ready';
    if (engineError) state = 'error';
    else if (cached < contextTokens) state = 'indexing';
    const mem = process.memoryUsage();
    const out: StatusResult = {
      state,
      model: info.model,
      device: info.device,
      contextTokens,
      cachedTokens: cached,
      files: { inContext: layout?.files.length ?? 0, known: counts.known, skipped: counts.skipped },
      queue: { waiting: s.waiting, running: s.running },
      tokensPerSecond: Math.round(s.tokensPerSecond * 10) / 10,
      memory: { rssBytes: mem.rss, heapBytes: mem.heapUsed, kvCacheBytes: s.kvCacheBytes },
    };
    if (state === 'indexing') out.indexing = { done: cached, total: contextTokens };
    if (state === 'error' && engineError) out.error = engineError;
    return out;
  };

  const sessions = new Set<Session>();
  let sessionCount = 0;
  let exitRequested = false;
  const onExit = (s: Session): void => {
    exitRequested = true;
    s.close();
    sessions.delete(s);
    if (sessions.size === 0) opts.onLastExit?.();
  };

  // Status pushes, at most every STATUS_PUSH_MS, whenever the engine reports.
  let pushTimer: NodeJS.Timeout | null = null;
  const schedulePush = (): void => {
    if (pushTimer) return;
    pushTimer = setTimeout(() => {
      pushTimer = null;
      for (const s of sessions) s.pushStatus(status(s.workspaceOrNull));
    }, STATUS_PUSH_MS);
  };
  engine.on('stats', schedulePush);
  engine.on('failed', schedulePush);

  const server = http.createServer((_req, res) => {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end(`glance sidecar: connect with a WebSocket at ${WEBSOCKET_PATH}\n`);
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload: 32 * 1024 * 1024 });
  server.on('upgrade', (req, socket, head) => {
    const verdict = checkUpgrade(req, opts.token, WEBSOCKET_PATH);
    if (!verdict.ok) {
      log.warn('connection refused', { status: verdict.status, reason: verdict.reason, from: req.socket.remoteAddress });
      const text = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found' }[verdict.status];
      socket.end(`HTTP/1.1 ${verdict.status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n${verdict.reason}\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      const session = new Session(ws, { ctx, completion, chat, edit, capabilities, status, log, onExit }, ++sessionCount);
      sessions.add(session);
      log.info('client connected', { session: session.id, clients: sessions.size });
      ws.on('close', () => {
        session.close();
        if (sessions.delete(session)) {
          log.info('client disconnected', { session: session.id, clients: sessions.size });
          if (sessions.size === 0) opts.onLastDisconnect?.();
        }
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;

  let stopped = false;
  return {
    port,
    info,
    status: () => status(null),
    clients: () => sessions.size,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (pushTimer) clearTimeout(pushTimer);
      for (const s of sessions) s.close();
      for (const c of wss.clients) c.close(1001, 'sidecar shutting down');
      wss.close();
      await new Promise<void>((r) => server.close(() => r()));
      ctx.dispose();
      await engine.stop();
      void exitRequested;
    },
  };
}
