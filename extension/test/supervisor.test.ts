// Unit tests: lock-file adoption rules, ready line, restart backoff, stderr ring, error classification.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

import { PROTOCOL_VERSION } from '../../sidecar/src/protocol';
import { classifySidecarError } from '../src/supervisor/errorClassifier';
import { incompatibility, inspectLockFile, lockFilePath } from '../src/supervisor/lockFile';
import { parseReadyLine } from '../src/supervisor/readyLine';
import { remoteSocketUrl } from '../src/supervisor/remoteUrl';
import { LineRing, RestartPolicy } from '../src/supervisor/restartPolicy';

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'glance-ext-test-'));
}

test('lockFilePath honours GLANCE_CACHE_DIR like the sidecar', () => {
  assert.equal(lockFilePath({ GLANCE_CACHE_DIR: '/x/y' }, '/home/u'), '/x/y/sidecar.json');
  assert.equal(lockFilePath({}, '/home/u'), '/home/u/.cache/glance/sidecar.json');
});

test('inspectLockFile adopts only a live, compatible sidecar of the same model with a readable token', () => {
  const dir = tmp();
  const file = path.join(dir, 'sidecar.json');
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, 'secret\n');
  const want = { protocolVersion: PROTOCOL_VERSION, version: '0.1.0' };
  const lock = { port: 4242, host: '127.0.0.1', pid: 77, tokenFile, model: '/models/m', version: '0.1.0', protocolVersion: PROTOCOL_VERSION, device: 'cpu', startedAt: '' };
  const write = (o: object): void => fs.writeFileSync(file, JSON.stringify(o));
  const reason = (v: ReturnType<typeof inspectLockFile>): string => (v.kind === 'none' ? v.reason : `adopt pid ${v.lock.pid}`);
  assert.equal(inspectLockFile(file, '/models/m', want).kind, 'none'); // missing
  fs.writeFileSync(file, '{not json');
  assert.match(reason(inspectLockFile(file, '/models/m', want)), /not JSON/);
  write(lock);
  assert.match(reason(inspectLockFile(file, '/models/m', want, () => false)), /not running/);
  const ok = inspectLockFile(file, '/models/m', want, () => true);
  assert.equal(ok.kind, 'adopt');
  assert.equal(ok.kind === 'adopt' ? ok.token : '', 'secret');
  assert.match(reason(inspectLockFile(file, '/models/other', want, () => true)), /serves \/models\/m/);
  write({ ...lock, protocolVersion: PROTOCOL_VERSION + 1 });
  assert.equal(reason(inspectLockFile(file, '/models/m', want, () => true)),
    `running sidecar pid 77 is incompatible: it speaks protocol ${PROTOCOL_VERSION + 1}, this extension protocol ${PROTOCOL_VERSION}`);
  write({ ...lock, version: '0.0.9' });
  assert.equal(reason(inspectLockFile(file, '/models/m', want, () => true)),
    'running sidecar pid 77 is incompatible: it is version 0.0.9, this extension bundles 0.1.0');
  const { version: _dropped, ...noVersion } = lock;
  write(noVersion);
  assert.match(reason(inspectLockFile(file, '/models/m', want, () => true)), /is version undefined/);
  write({ ...lock, tokenFile: path.join(dir, 'missing') });
  assert.match(reason(inspectLockFile(file, '/models/m', want, () => true)), /not readable/);
});

test('incompatibility checks the initialize capabilities: protocol first, then version', () => {
  const want = { protocolVersion: 3, version: '1.2.0' };
  assert.equal(incompatibility({ protocolVersion: 3, version: '1.2.0' }, want), null);
  assert.equal(incompatibility({ protocolVersion: 2, version: '1.2.0' }, want), 'it speaks protocol 2, this extension protocol 3');
  assert.equal(incompatibility({ protocolVersion: 3, version: '1.1.9' }, want), 'it is version 1.1.9, this extension bundles 1.2.0');
  // a sidecar that sends no glance capabilities (another LSP server on that port) is refused too
  assert.equal(incompatibility({}, want), 'it speaks protocol undefined, this extension protocol 3');
});

test('parseReadyLine accepts the ready line and ignores other output', () => {
  assert.deepEqual(parseReadyLine('{"event":"ready","port":5,"pid":9,"model":"m","device":"cpu"}'), {
    event: 'ready', port: 5, pid: 9, model: 'm', device: 'cpu',
  });
  assert.equal(parseReadyLine('loading model 3/10'), null);
  assert.equal(parseReadyLine('{"event":"other"}'), null);
  assert.equal(parseReadyLine('{"event":"ready","port":"5","pid":9}'), null);
});

test('RestartPolicy backs off exponentially and gives up after the budget', () => {
  const p = new RestartPolicy({ baseDelayMs: 100, maxDelayMs: 1000, maxRestarts: 4, windowMs: 60_000 });
  assert.deepEqual([p.onCrash(0), p.onCrash(1), p.onCrash(2), p.onCrash(3), p.onCrash(4)], [100, 200, 400, 800, null]);
  // crashes outside the window are forgotten
  assert.equal(p.onCrash(200_000), 100);
  p.reset();
  assert.equal(p.recentCrashes, 0);
});

test('LineRing keeps the last lines across chunk boundaries', () => {
  const r = new LineRing(3);
  r.push('a\nb');
  r.push('c\nd\ne\nf');
  assert.deepEqual(r.tail(), ['d', 'e', 'f']);
  assert.deepEqual(r.tail(2), ['e', 'f']);
});

test('classifySidecarError gives advice for common failures', () => {
  assert.equal(classifySidecarError(['CUDA error: out of memory'], 1, null).kind, 'out-of-memory');
  assert.equal(classifySidecarError(['glance: no CUDA device found'], 1, null).kind, 'no-gpu');
  assert.equal(classifySidecarError(['Error: listen EADDRINUSE: address already in use 127.0.0.1:7420'], 1, null).kind, 'port-in-use');
  assert.equal(classifySidecarError(['glance: model.safetensors: header is invalid'], 1, null).kind, 'corrupt-model');
  assert.equal(classifySidecarError(['glance: model directory /x does not exist'], 1, null).kind, 'missing-model');
  assert.equal(classifySidecarError([], null, 'SIGKILL').kind, 'out-of-memory');
  const unknown = classifySidecarError(['boom'], 3, null);
  assert.equal(unknown.kind, 'unknown');
  assert.match(unknown.advice, /exit code 3/);
});

test('remoteSocketUrl normalises the remote setting and names bad values', () => {
  assert.equal(remoteSocketUrl('ws://gpu:7420'), 'ws://gpu:7420/lsp');
  assert.equal(remoteSocketUrl('gpu:7420'), 'ws://gpu:7420/lsp');
  assert.equal(remoteSocketUrl('https://gpu.example/lsp'), 'wss://gpu.example/lsp');
  assert.equal(remoteSocketUrl('http://10.0.0.2:7420/'), 'ws://10.0.0.2:7420/lsp');
  assert.throws(() => remoteSocketUrl('ftp://gpu:7420'), /must be ws/);
  assert.throws(() => remoteSocketUrl('ws://'), /not a URL/);
});
