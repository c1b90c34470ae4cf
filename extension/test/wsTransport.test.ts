// The WebSocket message reader/writer against a real ws server: JSON-RPC round trip, auth refusal, bad frames.
import assert from 'node:assert/strict';
import { type AddressInfo, createServer } from 'node:net';
import { test } from 'node:test';

import { createMessageConnection } from 'vscode-jsonrpc/node';
import { WebSocketServer } from 'ws';

import { WebSocketMessageReader, WebSocketMessageWriter, openSidecarSocket } from '../src/client/wsTransport';
import { describeRemoteFailure } from '../src/supervisor/remoteUrl';

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

/** A port that nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

test('remote failures read as what to fix: a refused token, an unreachable URL, a missing token, a non-sidecar', async () => {
  await withServer(async (url) => {
    const refused = await openSidecarSocket(url, 'wrong').then(() => null, (e: unknown) => e);
    const f = describeRemoteFailure(url, refused);
    assert.equal(f.short, 'remote token refused');
    assert.equal(f.message, `The remote sidecar at ${url} refused the token (HTTP 401)`);
    assert.match(f.advice, /Glance: Set Remote Sidecar Token/);
    assert.equal(f.retry, false); // the same token would be refused again
    assert.equal(f.tokenProblem, true);
  });

  const port = await closedPort();
  const unreachableUrl = `ws://127.0.0.1:${port}/lsp`;
  const unreachable = await openSidecarSocket(unreachableUrl, 'x', 2000).then(() => null, (e: unknown) => e);
  const u = describeRemoteFailure(unreachableUrl, unreachable);
  assert.equal(u.short, 'remote unreachable');
  assert.equal(u.message, `Cannot reach the remote sidecar at ${unreachableUrl}: connection refused (nothing listens on that port)`);
  assert.match(u.advice, /glance\.remote\.url.*glance serve --host 0\.0\.0\.0/);
  assert.equal(u.retry, true); // the machine may still be starting
  assert.equal(u.tokenProblem, false);

  const missing = describeRemoteFailure('ws://gpu:7420/lsp', 'no-token');
  assert.equal(missing.short, 'remote token missing');
  assert.match(missing.message, /no remote sidecar token is stored/);
  assert.equal(missing.retry, false);

  // an HTTP server that is not a sidecar answers the upgrade with 404
  const http = await import('node:http');
  const server = http.createServer((_req, res) => res.writeHead(404).end('not here'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const webUrl = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/lsp`;
  try {
    const notSidecar = await openSidecarSocket(webUrl, 'x', 2000).then(() => null, (e: unknown) => e);
    const h = describeRemoteFailure(webUrl, notSidecar);
    assert.equal(h.short, 'remote HTTP 404');
    assert.match(h.message, /answered HTTP 404 instead of accepting a Glance connection/);
    assert.equal(h.retry, false);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
