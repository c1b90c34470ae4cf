// For the end-to-end test only. GLANCE_E2E_SCRIPTED_CHAT names a file; while that file exists, the next glance/chat
// answer is its text (streamed in small pieces, as the model streams) instead of the model's, and the file is removed,
// so exactly one answer is scripted. The e2e test needs a chat code block every time to exercise Copy / Insert at
// cursor / Apply; the tiny embedded model writes one only at times. Unset (always, outside the e2e), nothing changes.
// The chat service replaces `{{context}}` in the text with the titles of the selection and @files it received.
import * as fs from 'node:fs';

import type { CancellationToken } from 'vscode-languageserver/node';

import type { ChatResult } from '../protocol/index';

export const SCRIPTED_CHAT_ENV = 'GLANCE_E2E_SCRIPTED_CHAT';

/** The scripted answer, consumed (the file is removed), or null when none is waiting. */
export function takeScriptedChatAnswer(env: NodeJS.ProcessEnv = process.env): string | null {
  const file = env[SCRIPTED_CHAT_ENV];
  if (!file) return null;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null; // no answer scripted for this turn: the model answers
  }
  fs.rmSync(file, { force: true });
  return text;
}

/** Streams the scripted text in pieces of `pieceChars`, a few milliseconds apart; stops when cancelled. */
export async function streamScriptedChatAnswer(
  text: string,
  token: CancellationToken,
  onDelta: (text: string) => void,
  pieceChars = 24,
): Promise<ChatResult> {
  let sent = 0;
  while (sent < text.length) {
    if (token.isCancellationRequested) {
      return { text: text.slice(0, sent), finishReason: 'cancelled', usage: { promptTokens: 0, completionTokens: 0, contextTokens: 0 } };
    }
    const piece = text.slice(sent, sent + pieceChars);
    sent += piece.length;
    onDelta(piece);
    await new Promise((r) => setTimeout(r, 5));
  }
  return { text, finishReason: 'stop', usage: { promptTokens: 0, completionTokens: 0, contextTokens: 0 } };
}
