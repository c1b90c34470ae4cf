// The WebSocket URL of a remote sidecar from the glance.remote.url setting.
import { WEBSOCKET_PATH } from '../../../sidecar/src/protocol';

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
