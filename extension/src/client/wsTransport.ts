// JSON-RPC over a WebSocket: one message per text frame. Adapts a `ws` socket to vscode-jsonrpc's
// MessageReader/MessageWriter so vscode-languageclient can speak LSP to the sidecar.
import { AbstractMessageReader, AbstractMessageWriter, type DataCallback, type Disposable, type Message } from 'vscode-jsonrpc/node';
import WebSocket from 'ws';

/**
 * Frames that arrived before a reader was attached. ws can emit a frame in the same tick as 'open' (when it came
 * with the handshake), before an awaiting caller could attach a listener; openSidecarSocket keeps them here.
 */
const earlyFrames = new WeakMap<WebSocket, { frames: [WebSocket.RawData, boolean][]; listener: (d: WebSocket.RawData, b: boolean) => void }>();

export class WebSocketMessageReader extends AbstractMessageReader {
  private callback: DataCallback | null = null;
  private readonly pending: Message[] = [];

  constructor(socket: WebSocket) {
    super();
    const early = earlyFrames.get(socket);
    if (early) {
      socket.off('message', early.listener);
      earlyFrames.delete(socket);
      queueMicrotask(() => {
        for (const [data, isBinary] of early.frames) socket.emit('message', data, isBinary);
      });
    }
    socket.on('message', (data, isBinary) => {
      if (isBinary) {
        this.fireError(new Error('sidecar sent a binary frame; JSON-RPC frames are text'));
        return;
      }
      let message: Message;
      try {
        message = JSON.parse(data.toString()) as Message;
      } catch (e) {
        this.fireError(new Error(`sidecar sent a frame that is not JSON: ${(e as Error).message}`));
        return;
      }
      if (this.callback) this.callback(message);
      else this.pending.push(message);
    });
    socket.on('error', (e) => this.fireError(e));
    socket.on('close', () => this.fireClose());
  }

  listen(callback: DataCallback): Disposable {
    this.callback = callback;
    for (const m of this.pending.splice(0)) callback(m);
    return { dispose: () => (this.callback = null) };
  }
}

export class WebSocketMessageWriter extends AbstractMessageWriter {
  private errorCount = 0;

  constructor(private readonly socket: WebSocket) {
    super();
    socket.on('close', () => this.fireClose());
  }

  write(message: Message): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.socket.readyState !== WebSocket.OPEN) {
        const error = new Error('the connection to the sidecar is closed');
        this.fireError([error, message, ++this.errorCount]);
        reject(error);
        return;
      }
      this.socket.send(JSON.stringify(message), (e) => {
        if (e) {
          this.fireError([e, message, ++this.errorCount]);
          reject(e);
        } else resolve();
      });
    });
  }

  end(): void {
    this.socket.close();
  }
}

/** Why a connection to a sidecar could not be opened, for messages that say what to do. */
export type SidecarConnectFailure =
  | { kind: 'token-refused'; status: number }
  | { kind: 'http'; status: number }
  | { kind: 'network'; code: string; detail: string }
  | { kind: 'timeout'; timeoutMs: number };

export class SidecarConnectError extends Error {
  constructor(readonly url: string, readonly failure: SidecarConnectFailure, message: string) {
    super(message);
    this.name = 'SidecarConnectError';
  }
}

/** Opens ws://host:port/path with the bearer token; rejects with a SidecarConnectError (refused, 401, timeout). */
export function openSidecarSocket(url: string, token: string, timeoutMs = 10_000): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` }, handshakeTimeout: timeoutMs });
    const fail = (failure: SidecarConnectFailure, message: string): void => {
      socket.removeAllListeners();
      socket.on('error', () => undefined);
      socket.terminate();
      reject(new SidecarConnectError(url, failure, message));
    };
    socket.once('open', () => {
      socket.removeAllListeners('unexpected-response');
      const frames: [WebSocket.RawData, boolean][] = [];
      const listener = (data: WebSocket.RawData, isBinary: boolean): void => {
        frames.push([data, isBinary]);
      };
      socket.on('message', listener);
      earlyFrames.set(socket, { frames, listener });
      resolve(socket);
    });
    socket.once('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0;
      if (status === 401 || status === 403) fail({ kind: 'token-refused', status }, `sidecar at ${url} refused the connection: the token was refused (HTTP ${status})`);
      else fail({ kind: 'http', status }, `sidecar at ${url} refused the connection: HTTP ${status}`);
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      if (/handshake has timed out/i.test(e.message)) {
        fail({ kind: 'timeout', timeoutMs }, `the sidecar at ${url} did not answer within ${timeoutMs / 1000} s`);
      } else {
        fail({ kind: 'network', code: e.code ?? '', detail: e.message }, `cannot connect to the sidecar at ${url}: ${e.message}`);
      }
    });
  });
}
