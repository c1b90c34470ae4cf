// A real sidecar process (`glance serve`) for integration tests and benchmarks, and a minimal JSON-RPC client over
// a real WebSocket. The client is raw on purpose: tests must be able to send what a well-behaved LSP client never
// would (malformed frames, wrong types, unknown methods).

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';

import WebSocket from 'ws';

import type { ReadyLine } from '../../sidecar/src/protocol/index';

export const PROJECT_ROOT = path.resolve(__dirname, '..', '..', '..');

export interface SidecarProcess {
  proc: ChildProcessWithoutNullStreams;
  ready: ReadyLine;
  token: string;
  cacheDir: string;
  url: string;
  stderr: () => string;
  stop: () => Promise<number | null>;
}

export async function startSidecarProcess(args: string[] = [], env: Record<string, string> = {}): Promise<SidecarProcess> {
  const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'glance-sidecar-'));
  const proc = spawn(process.execPath, [path.join(PROJECT_ROOT, 'bin', 'glance.js'), 'serve', '--port', '0', ...args], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, GLANCE_CACHE_DIR: cacheDir, ...env },
  });
  let err = '';
  proc.stderr.on('data', (d: Buffer) => {
    err += d.toString();
    if (err.length > 1_000_000) err = err.slice(-500_000);
  });
  const lines = createInterface({ input: proc.stdout });
  const ready = await new Promise<ReadyLine>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sidecar not ready after 60 s; stderr:\n${err}`)), 60_000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(line) as ReadyLine);
      } catch (e) {
        reject(new Error(`first stdout line is not JSON: ${line}`));
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`sidecar exited with ${code} before ready; stderr:\n${err}`));
    });
  });
  const token = fs.readFileSync(path.join(cacheDir, 'sidecar-token'), 'utf8').trim();
  return {
    proc,
    ready,
    token,
    cacheDir,
    url: `ws://127.0.0.1:${ready.port}/lsp`,
    stderr: () => err,
    stop: async () => {
      if (proc.exitCode !== null) return proc.exitCode;
      const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
      proc.kill('SIGTERM');
      const code = await exited;
      fs.rmSync(cacheDir, { recursive: true, force: true });
      return code;
    },
  };
}

export interface RpcResponse {
  id: number | string | null;
  result?: unknown;
  error?: { code: number; message: string; data?: { requestId?: string } };
}

export class RawClient {
  readonly ws: WebSocket;
  private nextId = 1;
  private readonly pending = new Map<number | string, (r: RpcResponse) => void>();
  readonly notifications: { method: string; params: unknown }[] = [];
  /** error replies that carry no id we sent (parse errors, invalid requests) */
  readonly orphans: RpcResponse[] = [];
  private listeners: ((n: { method: string; params: unknown }) => void)[] = [];

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString()) as RpcResponse & { method?: string; params?: unknown };
      if (m.method !== undefined && m.id === undefined) {
        const n = { method: m.method, params: m.params };
        this.notifications.push(n);
        if (this.notifications.length > 10_000) this.notifications.splice(0, 5000);
        for (const l of this.listeners) l(n);
        return;
      }
      if (m.method !== undefined && m.id !== undefined) {
        // a server → client request (e.g. client/registerCapability): answer null
        ws.send(JSON.stringify({ jsonrpc: '2.0', id: m.id, result: null }));
        return;
      }
      const p = m.id !== null && m.id !== undefined ? this.pending.get(m.id) : undefined;
      if (p) {
        this.pending.delete(m.id!);
        p(m);
      } else {
        this.orphans.push(m);
      }
    });
  }

  static connect(url: string, headers: Record<string, string>): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers });
      ws.once('open', () => resolve(new RawClient(ws)));
      ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })));
      ws.once('error', reject);
    });
  }

  static async connectTo(sc: SidecarProcess): Promise<RawClient> {
    return RawClient.connect(sc.url, { Authorization: `Bearer ${sc.token}` });
  }

  onNotification(f: (n: { method: string; params: unknown }) => void): () => void {
    this.listeners.push(f);
    return () => {
      this.listeners = this.listeners.filter((x) => x !== f);
    };
  }

  /** Sends a request; returns its id and the response promise. */
  send(method: string, params?: unknown): { id: number; response: Promise<RpcResponse> } {
    const id = this.nextId++;
    const response = new Promise<RpcResponse>((resolve) => this.pending.set(id, resolve));
    this.ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) }));
    return { id, response };
  }

  async request<T = unknown>(method: string, params?: unknown): Promise<T> {
    const r = await this.send(method, params).response;
    if (r.error) throw Object.assign(new Error(`${method}: ${r.error.message}`), { rpc: r.error });
    return r.result as T;
  }

  notify(method: string, params?: unknown): void {
    this.ws.send(JSON.stringify({ jsonrpc: '2.0', method, ...(params === undefined ? {} : { params }) }));
  }

  cancel(id: number): void {
    this.notify('$/cancelRequest', { id });
  }

  sendRaw(frame: string): void {
    this.ws.send(frame);
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  close(): Promise<void> {
    return new Promise((r) => {
      if (this.ws.readyState === WebSocket.CLOSED) return r();
      this.ws.once('close', () => r());
      this.ws.close();
    });
  }
}

/** initialize + initialized for a workspace folder. */
export async function initialize(c: RawClient, folder: string): Promise<{ capabilities: Record<string, unknown>; serverInfo: { name: string } }> {
  const uri = `file://${folder}`;
  const r = await c.request<{ capabilities: Record<string, unknown>; serverInfo: { name: string } }>('initialize', {
    processId: process.pid,
    rootUri: uri,
    capabilities: {},
    workspaceFolders: [{ uri, name: path.basename(folder) }],
  });
  c.notify('initialized', {});
  return r;
}
