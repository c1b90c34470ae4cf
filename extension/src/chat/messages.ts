// Messages between the chat webview and the extension (both sides import these types).
import type { ChatMessage } from '../../../sidecar/src/protocol';

export type FromWebview =
  | { type: 'ready' }
  | { type: 'ask'; text: string; useSelection: boolean }
  | { type: 'stop' }
  | { type: 'copy'; code: string; actionId: number }
  | { type: 'insert'; code: string; actionId: number }
  | { type: 'apply'; code: string; actionId: number };

export type ToWebview =
  | { type: 'history'; messages: ChatMessage[] }
  | { type: 'context'; text: string }
  /** context: what goes along with the question (selection, @files), as the user should see it */
  | { type: 'start'; requestId: string; question: string; context: string[] }
  | { type: 'delta'; requestId: string; text: string }
  | { type: 'done'; requestId: string; text: string | null; finishReason: string; contextTokens: number }
  | { type: 'error'; requestId: string; message: string }
  | { type: 'notice'; message: string }
  /** the outcome of a code block button, shown on the button for a moment */
  | { type: 'actionDone'; actionId: number; ok: boolean; label: string };
