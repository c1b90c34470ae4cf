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

/** Opens ws://host:port/path with the bearer token; rejects with a readable error (refused, 401, timeout). */
export function openSidecarSocket(url: string, token: string, timeoutMs = 10_000): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` }, handshakeTimeout: timeoutMs });
    const fail = (message: string): void => {
      socket.removeAllListeners();
      socket.on('error', () => undefined);
      socket.terminate();
      reject(new Error(message));
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
      const why = res.statusCode === 401 || res.statusCode === 403 ? 'the token was refused' : `HTTP ${String(res.statusCode)}`;
      fail(`sidecar at ${url} refused the connection: ${why}`);
    });
    socket.once('error', (e) => fail(`cannot connect to the sidecar at ${url}: ${e.message}`));
  });
}
