// Messages between the chat webview and the extension (both sides import these types).
import type { ChatMessage } from '../../../sidecar/src/protocol';

export type FromWebview =
  | { type: 'ready' }
  | { type: 'ask'; text: string; useSelection: boolean }
  | { type: 'stop' }
  | { type: 'copy'; code: string }
  | { type: 'insert'; code: string }
  | { type: 'apply'; code: string };

export type ToWebview =
  | { type: 'history'; messages: ChatMessage[] }
  | { type: 'context'; text: string }
  | { type: 'start'; requestId: string; question: string }
  | { type: 'delta'; requestId: string; text: string }
  | { type: 'done'; requestId: string; text: string | null; finishReason: string; contextTokens: number }
  | { type: 'error'; requestId: string; message: string }
  | { type: 'notice'; message: string };
