// Who may talk to the sidecar: only a local process that can read the token file (mode 0600). Every WebSocket
// upgrade must carry `Authorization: Bearer <token>`; an upgrade with an `Origin` header comes from a browser page
// (a website trying to reach a local port) and is refused whatever it carries.

import { randomBytes, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { IncomingMessage } from 'node:http';

export const TOKEN_BYTES = 32; // 256 bits

/** Reads the token from `file`, or creates the file (mode 0600) with a new random token. */
export function loadOrCreateToken(file: string): { token: string; created: boolean; warning?: string } {
  if (fs.existsSync(file)) {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new Error(`token file ${file} is not a regular file`);
    const token = fs.readFileSync(file, 'utf8').trim();
    if (token.length < 32) throw new Error(`token file ${file} holds ${token.length} characters; a token needs at least 32 (64 hex digits are written by default)`);
    const loose = (st.mode & 0o077) !== 0;
    return { token, created: false, warning: loose ? `token file ${file} is readable by other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it` : undefined };
  }
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const token = randomBytes(TOKEN_BYTES).toString('hex');
  // 'wx': never overwrite a file that appeared meanwhile; mode applies at creation.
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
  return { token, created: true };
}

export type UpgradeVerdict = { ok: true } | { ok: false; status: 401 | 403 | 404; reason: string };

export function checkUpgrade(req: IncomingMessage, token: string, wsPath: string): UpgradeVerdict {
  const url = req.url ?? '';
  const pathname = url.split('?')[0];
  if (pathname !== wsPath) return { ok: false, status: 404, reason: `no WebSocket endpoint at ${pathname}; use ${wsPath}` };
  if (req.headers.origin !== undefined) return { ok: false, status: 403, reason: 'browser origins are refused' };
  const auth = req.headers.authorization ?? '';
  const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
  if (!m) return { ok: false, status: 401, reason: 'missing "Authorization: Bearer <token>"' };
  const a = Buffer.from(m[1]);
  const b = Buffer.from(token);
  if (a.length !== b.length || !timingSafeEqual(a, b)) return { ok: false, status: 401, reason: 'wrong token' };
  return { ok: true };
}
