// The WebSocket URL of a remote sidecar from the glance.remote.url setting, and what to tell the user when it fails.
import { WEBSOCKET_PATH } from '../../../sidecar/src/protocol';
import { SidecarConnectError } from '../client/wsTransport';
import { SET_REMOTE_TOKEN_PALETTE_NAME } from './remoteTokenCommand';

/** Accepts ws://, wss://, http:// or https://, with or without the path, or a bare host:port. */
export function remoteSocketUrl(setting: string): string {
  let url: URL;
  try {
    url = new URL(setting.includes('://') ? setting : `ws://${setting}`);
  } catch {
    throw new Error(`glance.remote.url is not a URL: ${JSON.stringify(setting)} (expected e.g. ws://gpu-box:7420)`);
  }
  if (url.protocol === 'http:') url.protocol = 'ws:';
  if (url.protocol === 'https:') url.protocol = 'wss:';
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new Error(`glance.remote.url must be ws://, wss://, http:// or https://, not ${url.protocol}`);
  }
  if (url.pathname === '/' || url.pathname === '') url.pathname = WEBSOCKET_PATH;
  return url.toString();
}

/** A remote sidecar that could not be reached or used, said so that a user knows what to fix. */
export interface RemoteFailure {
  /** a few words for the status bar */
  short: string;
  message: string;
  advice: string;
  /** worth retrying with backoff (the machine may be starting); a refused token is not */
  retry: boolean;
  /** the user can fix it with the Set Remote Sidecar Token command (SET_REMOTE_TOKEN_COMMAND) */
  tokenProblem: boolean;
}

const NETWORK_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused (nothing listens on that port)',
  ENOTFOUND: 'the host name was not found',
  EAI_AGAIN: 'the host name could not be resolved (DNS)',
  EHOSTUNREACH: 'the host is unreachable',
  ENETUNREACH: 'the network is unreachable',
  ETIMEDOUT: 'the connection timed out',
  ECONNRESET: 'the connection was reset',
};

const START_REMOTE = 'Check glance.remote.url, and that `glance serve --host 0.0.0.0 --token-file FILE` runs there with its port reachable.';

/** Turns an error of openSidecarSocket (or a missing token) into a specific message and advice. */
export function describeRemoteFailure(url: string, error: unknown): RemoteFailure {
  const setToken = `Run "${SET_REMOTE_TOKEN_PALETTE_NAME}" with the content of the remote sidecar's --token-file.`;
  if (error === 'no-token') {
    return {
      short: 'remote token missing',
      message: `glance.remote.url is set (${url}) but no remote sidecar token is stored`,
      advice: setToken,
      retry: false,
      tokenProblem: true,
    };
  }
  if (error instanceof SidecarConnectError) {
    const f = error.failure;
    switch (f.kind) {
      case 'token-refused':
        return { short: 'remote token refused', message: `The remote sidecar at ${url} refused the token (HTTP ${f.status})`, advice: setToken, retry: false, tokenProblem: true };
      case 'http':
        return {
          short: `remote HTTP ${f.status}`,
          message: `The server at ${url} answered HTTP ${f.status} instead of accepting a Glance connection`,
          advice: `${START_REMOTE} Is it a Glance sidecar (path ${WEBSOCKET_PATH})?`,
          retry: f.status >= 500,
          tokenProblem: false,
        };
      case 'timeout':
        return { short: 'remote not answering', message: `The remote sidecar at ${url} did not answer within ${f.timeoutMs / 1000} s`, advice: START_REMOTE, retry: true, tokenProblem: false };
      case 'network':
        return {
          short: 'remote unreachable',
          message: `Cannot reach the remote sidecar at ${url}: ${NETWORK_REASONS[f.code] ?? f.detail}`,
          advice: START_REMOTE,
          retry: true,
          tokenProblem: false,
        };
    }
  }
  const detail = error instanceof Error ? error.message : String(error);
  return { short: 'remote failed', message: `The remote sidecar at ${url} failed: ${detail}`, advice: START_REMOTE, retry: true, tokenProblem: false };
}
