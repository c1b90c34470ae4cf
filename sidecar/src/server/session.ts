// One client connection: LSP over the WebSocket. It validates every message, maps the protocol's methods onto the
// services, tags each request with a request id (in its log lines and in any error it returns), and cancels
// everything the client asked for when the client goes away.

import { TextDocument } from 'vscode-languageserver-textdocument';
import { createConnection as createLspConnection, type WatchDog } from 'vscode-languageserver';
import {
  CancellationTokenSource,
  createProtocolConnection,
  ResponseError,
  TextDocumentSyncKind,
  type CancellationToken,
  type InitializeResult,
} from 'vscode-languageserver/node';
import { z } from 'zod';

import type { ChatService } from '../assistant/chat';
import type { CompletionService } from '../assistant/completion';
import type { EditService } from '../assistant/edit';
import type { RepositoryContext } from '../context/repository';
import {
  ChatDeltaNotification,
  ChatMethod,
  EditDeltaNotification,
  EditMethod,
  ErrorCodes,
  InlineCompletionMethod,
  StatusChangedNotification,
  StatusMethod,
  WorkspaceFilesMethod,
  type GlanceCapabilities,
  type StatusResult,
  type WorkspaceFilesResult,
} from '../protocol/index';
import { OutsideWorkspaceError, type Workspace } from '../workspace/workspace';
import type { Log } from './log';
import { newRequestId } from './log';
import { RpcError } from './rpc-error';
import { chatParams, editParams, inlineCompletionParams, validate, workspaceFilesParams } from './schemas';
import { WebSocketMessageReader, WebSocketMessageWriter } from './transport';
import type { WebSocket } from 'ws';

export interface SessionDeps {
  ctx: RepositoryContext;
  completion: CompletionService;
  chat: ChatService;
  edit: EditService;
  capabilities: () => GlanceCapabilities;
  status: (ws: Workspace | null) => StatusResult;
  log: Log;
  /** the client sent `exit` */
  onExit: (session: Session) => void;
}

const folderSchema = z.object({ uri: z.string().min(1).max(4096), name: z.string().max(1000).optional() });
const didOpenSchema = z.object({ textDocument: z.object({ uri: z.string().min(1).max(4096), languageId: z.string().max(200), version: z.number().int(), text: z.string().max(8 * 1024 * 1024) }) });
const didChangeSchema = z.object({
  textDocument: z.object({ uri: z.string().min(1).max(4096), version: z.number().int() }),
  contentChanges: z.array(
    z.union([
      z.object({ range: z.object({ start: z.object({ line: z.number().int().min(0), character: z.number().int().min(0) }), end: z.object({ line: z.number().int().min(0), character: z.number().int().min(0) }) }), rangeLength: z.number().int().optional(), text: z.string().max(8 * 1024 * 1024) }),
      z.object({ text: z.string().max(8 * 1024 * 1024) }),
    ]),
  ).max(10_000),
});
const didCloseSchema = z.object({ textDocument: z.object({ uri: z.string().min(1).max(4096) }) });
const foldersChangeSchema = z.object({ event: z.object({ added: z.array(folderSchema).max(1000), removed: z.array(folderSchema).max(1000) }) });

export class Session {
  readonly id: string;
  private ws: Workspace | null = null;
  private readonly docs = new Map<string, TextDocument>();
  private readonly inflight = new Set<CancellationTokenSource>();
  private readonly scans = new Map<string, Set<string>>();
  private closed = false;
  readonly connection;

  constructor(socket: WebSocket, private readonly deps: SessionDeps, sessionNumber: number) {
    this.id = `c${sessionNumber}`;
    const log = deps.log;
    const reader = new WebSocketMessageReader(socket, (p) => log.debug('malformed frame', { session: this.id, kind: p.kind, detail: p.detail }));
    const writer = new WebSocketMessageWriter(socket);
    // The generic LSP connection with our own watchdog: vscode-languageserver/node's would exit the whole process
    // on one client's `exit` or when the client's pid dies, and this sidecar serves several clients.
    const watchDog: WatchDog = {
      shutdownReceived: false,
      initialize: () => {},
      exit: () => {
        deps.onExit(this);
        socket.close(1000, 'exit');
      },
    };
    this.connection = createLspConnection((logger) => createProtocolConnection(reader, writer, logger), watchDog);
    const c = this.connection;

    c.onInitialize((params): InitializeResult => {
      const raw = (params ?? {}) as { workspaceFolders?: unknown; rootUri?: unknown };
      let folders: { uri: string; name?: string }[] = [];
      const parsed = z.array(folderSchema).max(1000).safeParse(raw.workspaceFolders);
      if (parsed.success) folders = parsed.data;
      else if (typeof raw.rootUri === 'string') folders = [{ uri: raw.rootUri }];
      try {
        if (this.ws) deps.ctx.release(this.ws);
        this.ws = deps.ctx.acquire(folders);
      } catch (e) {
        throw new ResponseError(ErrorCodes.InvalidParams, `invalid workspace folders: ${(e as Error).message}`);
      }
      deps.ctx.touch(this.ws);
      log.info('client initialized', { session: this.id, folders: folders.map((f) => f.uri) });
      return {
        serverInfo: { name: 'glance', version: deps.capabilities().version },
        capabilities: {
          textDocumentSync: { openClose: true, change: TextDocumentSyncKind.Incremental },
          inlineCompletionProvider: true,
          workspace: { workspaceFolders: { supported: true, changeNotifications: true } },
          experimental: { glance: deps.capabilities() },
        },
      };
    });

    c.onShutdown(() => {
      log.info('client shutdown', { session: this.id });
    });

    c.onDidOpenTextDocument((p) => this.notification('didOpen', didOpenSchema, p, (v) => {
      const d = TextDocument.create(v.textDocument.uri, v.textDocument.languageId, v.textDocument.version, v.textDocument.text);
      this.docs.set(d.uri, d);
      const ws = this.workspace();
      ws.openDocument(d.uri, d.getText());
      deps.ctx.touch(ws);
    }));
    c.onDidChangeTextDocument((p) => this.notification('didChange', didChangeSchema, p, (v) => {
      const d = this.docs.get(v.textDocument.uri);
      if (!d) throw new Error(`didChange for ${v.textDocument.uri}, which is not open`);
      const next = TextDocument.update(d, v.contentChanges, v.textDocument.version);
      this.docs.set(next.uri, next);
      const ws = this.workspace();
      ws.changeDocument(next.uri, next.getText());
      deps.ctx.touch(ws);
    }));
    c.onDidCloseTextDocument((p) => this.notification('didClose', didCloseSchema, p, (v) => {
      this.docs.delete(v.textDocument.uri);
      const ws = this.workspace();
      ws.closeDocument(v.textDocument.uri);
      deps.ctx.touch(ws);
    }));
    c.onNotification('workspace/didChangeWorkspaceFolders', (p: unknown) => this.notification('didChangeWorkspaceFolders', foldersChangeSchema, p, (v) => {
      const ws = this.workspace();
      const removed = new Set(v.event.removed.map((f) => f.uri));
      const folders = [...ws.getFolders().filter((f) => !removed.has(f.uri)).map((f) => ({ uri: f.uri, name: f.name })), ...v.event.added];
      ws.setFolders(folders);
      deps.ctx.touch(ws);
    }));

    this.request(WorkspaceFilesMethod, workspaceFilesParams, async (v): Promise<WorkspaceFilesResult> => {
      const ws = this.workspace();
      const missing: string[] = [];
      const skipped: { uri: string; reason: string }[] = [];
      let accepted = 0;
      const scan = v.scanId !== undefined ? this.scans.get(v.scanId) ?? new Set<string>() : null;
      if (scan && v.scanId !== undefined) this.scans.set(v.scanId, scan);
      for (const f of v.files) {
        if (!ws.contains(f.uri)) throw new RpcError(ErrorCodes.OutsideWorkspace, `${f.uri} is outside the workspace folders`);
      }
      for (const f of v.files) {
        scan?.add(f.uri);
        let r;
        try {
          r = ws.putFile(f.uri, f.hash, f.text);
        } catch (e) {
          if (e instanceof OutsideWorkspaceError) throw new RpcError(ErrorCodes.OutsideWorkspace, e.message);
          throw new RpcError(ErrorCodes.InvalidParams, (e as Error).message);
        }
        if (!r.accepted) missing.push(f.uri);
        else accepted++;
        if (r.skipped) skipped.push({ uri: f.uri, reason: r.skipped });
      }
      for (const uri of v.removed ?? []) ws.removeFile(uri);
      if (v.scanComplete && scan && v.scanId !== undefined) {
        ws.retainOnly(scan);
        this.scans.delete(v.scanId);
      }
      deps.ctx.touch(ws);
      return { missing, accepted, skipped };
    });

    this.request(InlineCompletionMethod, inlineCompletionParams, (v, token, requestId) =>
      deps.completion.complete(this.workspace(), { ...v, context: v.context ?? { triggerKind: 2 } }, token, requestId));

    this.request(ChatMethod, chatParams, (v, token, requestId) => {
      const streamId = v.requestId ?? requestId;
      return deps.chat.chat(this.workspace(), v, token, (text) => this.notify(ChatDeltaNotification, { requestId: streamId, text }));
    });

    this.request(EditMethod, editParams, (v, token, requestId) => {
      const streamId = v.requestId ?? requestId;
      return deps.edit.edit(this.workspace(), v, token, (text) => this.notify(EditDeltaNotification, { requestId: streamId, text }));
    });

    this.request(StatusMethod, z.any(), async () => deps.status(this.ws));

    c.listen();
  }

  get workspaceOrNull(): Workspace | null {
    return this.ws;
  }

  pushStatus(status: StatusResult): void {
    if (this.ws) this.notify(StatusChangedNotification, status);
  }

  /** Sends a notification unless the client is gone (then there is no one to tell). */
  private notify(method: string, params: unknown): void {
    if (this.closed) return;
    try {
      void this.connection.sendNotification(method, params).catch(() => {});
    } catch {
      // the connection closed between the check and the send
    }
  }

  /** The client went away: cancel what it asked for, let go of its workspace. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const cts of this.inflight) cts.cancel();
    this.inflight.clear();
    if (this.ws) this.deps.ctx.release(this.ws);
    this.connection.dispose();
  }

  private workspace(): Workspace {
    if (!this.ws) throw new RpcError(-32002, 'the client has not sent initialize yet');
    return this.ws;
  }

  private notification<T>(what: string, schema: z.ZodType<T>, params: unknown, f: (v: T) => void): void {
    const r = validate(schema, params, what);
    if (!r.ok) {
      this.deps.log.warn('invalid notification ignored', { session: this.id, method: what, problem: r.message });
      return;
    }
    try {
      f(r.value);
    } catch (e) {
      this.deps.log.warn('notification failed', { session: this.id, method: what, error: (e as Error).message });
    }
  }

  private request<T, R>(method: string, schema: z.ZodType<T>, f: (v: T, token: CancellationToken, requestId: string) => Promise<R>): void {
    // vscode-jsonrpc calls a string-method handler with (token) when there are no params, (params, token) for
    // object params, and spreads array params: (p1, p2, …, token).
    this.connection.onRequest(method, async (...args: unknown[]) => {
      const token = args[args.length - 1] as CancellationToken;
      const params = args.length === 1 ? undefined : args.length === 2 ? args[0] : args.slice(0, -1);
      const requestId = newRequestId();
      const t0 = Date.now();
      const log = this.deps.log;
      const v = validate(schema, params, method);
      if (!v.ok) {
        log.debug('invalid params', { requestId, method, problem: v.message });
        return new ResponseError(ErrorCodes.InvalidParams, v.message, { requestId });
      }
      // A request cancelled before its handler ran (cancel right after send) arrives with a token that is already
      // cancelled and will never fire its event: answer at once.
      if (token.isCancellationRequested) return new ResponseError(ErrorCodes.RequestCancelled, 'request cancelled', { requestId });
      const cts = new CancellationTokenSource();
      const sub = token.onCancellationRequested(() => cts.cancel());
      this.inflight.add(cts);
      try {
        const result = await f(v.value, cts.token, requestId);
        log.debug('request done', { requestId, session: this.id, method, ms: Date.now() - t0 });
        return result;
      } catch (e) {
        if (e instanceof RpcError) {
          log.debug('request refused', { requestId, session: this.id, method, code: e.code, message: e.message });
          return new ResponseError(e.code, e.message, { requestId, ...e.extra });
        }
        log.error('request failed', { requestId, session: this.id, method, error: (e as Error).stack ?? String(e) });
        return new ResponseError(-32603, `internal error (request ${requestId}): ${(e as Error).message}`, { requestId });
      } finally {
        sub.dispose();
        this.inflight.delete(cts);
        cts.dispose();
      }
    });
  }
}
