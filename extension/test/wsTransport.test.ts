// The WebSocket message reader/writer against a real ws server: JSON-RPC round trip, auth refusal, bad frames.
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';

import { createMessageConnection } from 'vscode-jsonrpc/node';
import { WebSocketServer } from 'ws';

import { WebSocketMessageReader, WebSocketMessageWriter, openSidecarSocket } from '../src/client/wsTransport';

async function withServer(fn: (url: string, wss: WebSocketServer) => Promise<void>): Promise<void> {
  const wss = new WebSocketServer({
    port: 0,
    host: '127.0.0.1',
    verifyClient: (info: { req: { headers: Record<string, string | string[] | undefined> } }) => info.req.headers.authorization === 'Bearer good',
  });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const port = (wss.address() as AddressInfo).port;
  try {
    await fn(`ws://127.0.0.1:${port}/lsp`, wss);
  } finally {
    for (const c of wss.clients) c.terminate();
    await new Promise<void>((r) => wss.close(() => r()));
  }
}

test('JSON-RPC requests and notifications round-trip over the socket', async () => {
  await withServer(async (url, wss) => {
    wss.on('connection', (socket) => {
      const server = createMessageConnection(new WebSocketMessageReader(socket), new WebSocketMessageWriter(socket));
      server.onRequest('glance/echo', (p: { text: string }) => {
        void server.sendNotification('glance/note', { seen: p.text });
        return { echoed: p.text.toUpperCase() };
      });
      server.listen();
    });
    const socket = await openSidecarSocket(url, 'good');
    const client = createMessageConnection(new WebSocketMessageReader(socket), new WebSocketMessageWriter(socket));
    const notes: unknown[] = [];
    client.onNotification('glance/note', (p: unknown) => {
      notes.push(p);
    });
    client.listen();
    const result = await client.sendRequest('glance/echo', { text: 'hi' });
    assert.deepEqual(result, { echoed: 'HI' });
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(notes, [{ seen: 'hi' }]);
    client.dispose();
    socket.close();
  });
});

test('a wrong token is refused with a readable error', async () => {
  await withServer(async (url) => {
    await assert.rejects(openSidecarSocket(url, 'bad'), /refused the connection: the token was refused/);
  });
});

test('nothing listening gives a connection error naming the URL', async () => {
  await assert.rejects(openSidecarSocket('ws://127.0.0.1:1/lsp', 'x', 2000), /cannot connect to the sidecar at ws:\/\/127\.0\.0\.1:1\/lsp/);
});

test('a non-JSON frame surfaces as a reader error', async () => {
  await withServer(async (url, wss) => {
    wss.on('connection', (socket) => socket.send('not json'));
    const socket = await openSidecarSocket(url, 'good');
    const reader = new WebSocketMessageReader(socket);
    const error = await new Promise<Error>((resolve) => reader.onError((e) => resolve(e)));
    assert.match(error.message, /not JSON/);
    socket.close();
  });
});
