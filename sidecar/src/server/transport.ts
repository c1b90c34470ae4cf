// JSON-RPC over a WebSocket: one message per text frame. vscode-jsonrpc has readers and writers for streams and
// IPC but not for WebSockets, so this small adapter is ours. It also answers what a JSON-RPC connection cannot:
// frames that are not JSON (-32700 Parse error) or not a JSON-RPC message (-32600 Invalid Request), so every
// malformed frame gets an error reply instead of silence.

import { AbstractMessageReader, AbstractMessageWriter, type DataCallback, type Disposable, type Message } from 'vscode-languageserver/node';
import type { WebSocket } from 'ws';

export interface FrameProblem {
  kind: 'parse' | 'invalid';
  detail: string;
}

function reply(ws: WebSocket, id: unknown, code: number, message: string): void {
  const validId = typeof id === 'number' || typeof id === 'string' ? id : null;
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ jsonrpc: '2.0', id: validId, error: { code, message } }));
}

/** Why `value` is not a JSON-RPC 2.0 message the connection can handle, or null when it is one. */
export function messageProblem(value: unknown): string | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return Array.isArray(value) ? 'batch messages are not supported: send one message per frame' : 'a message must be a JSON object';
  }
  const m = value as Record<string, unknown>;
  if (m.jsonrpc !== '2.0') return 'the "jsonrpc" member must be "2.0"';
  if ('id' in m && m.id !== null && typeof m.id !== 'number' && typeof m.id !== 'string') return '"id" must be a number or a string';
  if ('method' in m) {
    if (typeof m.method !== 'string' || m.method.length === 0) return '"method" must be a non-empty string';
    if ('params' in m && (typeof m.params !== 'object' || m.params === null)) return '"params" must be an object or an array';
    return null;
  }
  if ('id' in m && ('result' in m || 'error' in m)) return null; // a response to a server → client request
  return 'a message needs a "method" (request or notification) or a "result"/"error" (response)';
}

export class WebSocketMessageReader extends AbstractMessageReader {
  private callback: DataCallback | null = null;
  private readonly queue: Message[] = [];

  constructor(ws: WebSocket, onProblem: (p: FrameProblem) => void) {
    super();
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        reply(ws, null, -32700, 'binary frames are not supported: send JSON text frames');
        onProblem({ kind: 'parse', detail: 'binary frame' });
        return;
      }
      let value: unknown;
      try {
        value = JSON.parse(data.toString());
      } catch (e) {
        reply(ws, null, -32700, `Parse error: ${(e as Error).message}`);
        onProblem({ kind: 'parse', detail: (e as Error).message });
        return;
      }
      const problem = messageProblem(value);
      if (problem) {
        reply(ws, (value as { id?: unknown } | null)?.id, -32600, `Invalid Request: ${problem}`);
        onProblem({ kind: 'invalid', detail: problem });
        return;
      }
      if (this.callback) this.callback(value as Message);
      else this.queue.push(value as Message);
    });
    ws.on('close', () => this.fireClose());
    ws.on('error', (e) => this.fireError(e));
  }

  listen(callback: DataCallback): Disposable {
    this.callback = callback;
    for (const m of this.queue.splice(0)) callback(m);
    return { dispose: () => { this.callback = null; } };
  }
}

export class WebSocketMessageWriter extends AbstractMessageWriter {
  private errors = 0;

  constructor(private readonly ws: WebSocket) {
    super();
  }

  async write(msg: Message): Promise<void> {
    if (this.ws.readyState !== this.ws.OPEN) return;
    try {
      await new Promise<void>((resolve, reject) => this.ws.send(JSON.stringify(msg), (e) => (e ? reject(e) : resolve())));
    } catch (e) {
      this.errors++;
      this.fireError([e as Error, msg, this.errors]);
    }
  }

  end(): void {}
}
