// Pure helpers of the chat: history trimming and @file mentions.
import type { ChatMessage } from '../../../sidecar/src/protocol';

/** Keeps the last `max` messages, starting at a user turn so the model never sees an orphan answer first. */
export function trimHistory(messages: readonly ChatMessage[], max: number): ChatMessage[] {
  let kept = messages.slice(-max);
  while (kept.length > 0 && kept[0]?.role !== 'user') kept = kept.slice(1);
  return kept;
}

/** `@path/to/file.ts` mentions (a path with an extension; `\` separators too), without the @, as typed, deduplicated, in order. */
export function extractMentions(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|[\s(])@([\w./\\-]+\.[\w]+)/g)) {
    const p = (m[1] ?? '').replace(/[.,;:]+$/, '');
    if (p !== '' && !out.includes(p)) out.push(p);
  }
  return out;
}
