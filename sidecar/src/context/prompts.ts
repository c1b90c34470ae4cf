// Request prompts on top of the repository prefix. Each one starts with the layout's ids unchanged, so the engine
// finds them in its caches, and adds only the request's own tokens:
//   completion: <|file_sep|>path\n<|fim_prefix|>PREFIX<|fim_suffix|>SUFFIX<|fim_middle|>     (PSM), or
//               <|file_sep|>path\n<|fim_prefix|><|fim_suffix|>SUFFIX<|fim_middle|>PREFIX     (SPM)
//               in the order the model was trained on (tokenizer_config.json "fim_order")
//   chat:       [active file block] <|im_start|>system … <|im_end|> … <|im_start|>assistant\n
// The completion's prefix window starts at a line that moves in steps of ANCHOR_STEP lines, so consecutive
// keystrokes share every token up to the cursor (keystroke-to-keystroke reuse) instead of a sliding window
// invalidating the whole request each time.

import { arrangeFim } from '../engine/fim';
import type { Tokenizer } from '../engine/tokenizer';
import type { ChatMessage } from '../protocol/index';
import { specialIds, TokenCache, type RepositoryLayout, type SpecialIds } from './layout';

export const ANCHOR_STEP = 32;

/**
 * The header that frames bare text as the start of file `fileName` in a one-file repository, for models trained on
 * the repository layout (they have <|repo_name|> and <|file_sep|>): such a model saw every training sequence start
 * with that header, never bare text at position 0, and degenerates without it (glance-tiny answers a bare
 * `export function f(…) {` with a run of newlines). The sidecar's prompts always carry it; this is for the CLI.
 * Null for models without those tokens.
 */
export function repositoryFrame(tok: Tokenizer, fileName: string): number[] | null {
  const special = specialIds(tok, []);
  if (special.repoName === null || special.fileSep === null) return null;
  const cache = new TokenCache(tok, special);
  return [...cache.repoHeader('prompt'), ...cache.header(fileName)];
}

export interface CompletionPromptOptions {
  maxPrefixTokens: number;
  maxSuffixTokens: number;
  maxSuffixLines: number;
}

// PSM: the suffix follows the cursor in the prompt, so every keystroke recomputes it: keep it short (the lines
// right after the cursor are what matters for where the completion should stop). SPM: the suffix comes before the
// prefix and typing only appends to the prompt, so a longer suffix costs nothing per keystroke.
export const DEFAULT_COMPLETION_PROMPT: CompletionPromptOptions = { maxPrefixTokens: 1536, maxSuffixTokens: 32, maxSuffixLines: 4 };
export const DEFAULT_COMPLETION_PROMPT_SPM: CompletionPromptOptions = { maxPrefixTokens: 1536, maxSuffixTokens: 128, maxSuffixLines: 12 };

/** One fill-in-the-middle block in the model's order; the model's answer (the middle) follows it. */
export function fimBlock(special: SpecialIds, header: readonly number[], prefixIds: readonly number[], suffixIds: readonly number[]): number[] {
  if (special.fimPrefix === null || special.fimSuffix === null || special.fimMiddle === null) {
    throw new PromptError('the model has no fill-in-the-middle tokens');
  }
  const marks = { prefix: special.fimPrefix, suffix: special.fimSuffix, middle: special.fimMiddle };
  return [...header, ...arrangeFim(special.fimOrder, marks, prefixIds, suffixIds)];
}

export interface CompletionPrompt {
  ids: Int32Array;
  sharedPrefix: number;
  prefix: string;
  suffix: string;
  /** the cursor line up to the cursor, without `heal` (the model's answer continues exactly this) */
  linePrefix: string;
  /**
   * Spaces/tabs typed after the last word of the line, left out of the prompt (token healing, the simple case): the
   * tokenizer glues a space to the word after it (" return" + " a"), so a prompt ending in a lone " " token is
   * text the model never saw, and it answers with nothing or a new line. The answer then starts with this text,
   * which the caller removes before inserting it at the cursor.
   */
  heal: string;
}

export class PromptError extends Error {}

export function completionPrompt(
  tok: Tokenizer, special: SpecialIds, cache: TokenCache, layout: RepositoryLayout, docPath: string, text: string,
  offset: number, opts: CompletionPromptOptions = special.fimOrder === 'spm' ? DEFAULT_COMPLETION_PROMPT_SPM : DEFAULT_COMPLETION_PROMPT,
): CompletionPrompt {
  if (special.fimPrefix === null || special.fimSuffix === null || special.fimMiddle === null) {
    throw new PromptError('the model has no fill-in-the-middle tokens, so it cannot do inline completion');
  }
  const typed = text.slice(0, offset);
  const lastLine = typed.slice(typed.lastIndexOf('\n') + 1);
  const heal = /\S[ \t]+$/.test(lastLine) ? /[ \t]+$/.exec(lastLine)![0] : '';
  const before = typed.slice(0, typed.length - heal.length);
  const lines = before.split('\n');
  const cursorLine = lines.length - 1;
  // Start the window on an anchor line; move it forward in whole steps until the prefix fits.
  let startLine = Math.max(0, Math.floor((cursorLine - 160) / ANCHOR_STEP) * ANCHOR_STEP);
  let prefix = lines.slice(startLine).join('\n');
  let prefixIds = tok.encode(prefix, { specials: 'plain' });
  while (prefixIds.length > opts.maxPrefixTokens && startLine + ANCHOR_STEP <= cursorLine) {
    startLine += ANCHOR_STEP;
    prefix = lines.slice(startLine).join('\n');
    prefixIds = tok.encode(prefix, { specials: 'plain' });
  }
  if (prefixIds.length > opts.maxPrefixTokens) prefixIds = prefixIds.slice(prefixIds.length - opts.maxPrefixTokens);
  const after = text.slice(offset);
  const suffix = after.split('\n').slice(0, opts.maxSuffixLines).join('\n');
  let suffixIds = tok.encode(suffix, { specials: 'plain' });
  if (suffixIds.length > opts.maxSuffixTokens) suffixIds = suffixIds.slice(0, opts.maxSuffixTokens);
  const block = fimBlock(special, cache.header(docPath), prefixIds, suffixIds);
  const ids = new Int32Array(layout.ids.length + block.length);
  ids.set(layout.ids, 0);
  ids.set(block, layout.ids.length);
  return { ids, sharedPrefix: layout.ids.length, prefix, suffix: after, linePrefix: lines[cursorLine], heal };
}

export interface ChatPromptInput {
  messages: readonly ChatMessage[];
  /** the active document as a file block before the conversation */
  activeFile?: { path: string; hash: string; text: string };
  /** extra context put in front of the last user message */
  extras: { title: string; text: string }[];
  /** tokens the prompt may use at most */
  budget: number;
}

const SYSTEM_PROMPT =
  'You are Glance, a coding assistant inside the user\'s editor. The repository above is the user\'s code. Answer ' +
  'concisely; put code in fenced blocks with the language name.';

export function chatPrompt(
  tok: Tokenizer, special: SpecialIds, cache: TokenCache, layout: RepositoryLayout, input: ChatPromptInput,
): { ids: Int32Array; sharedPrefix: number; droppedMessages: number } {
  const fileIds = input.activeFile ? Array.from(cache.fileBlock(input.activeFile.path, input.activeFile.hash, input.activeFile.text)) : [];
  const messages = [...input.messages];
  const lastUser = messages.map((m) => m.role).lastIndexOf('user');
  if (lastUser >= 0 && input.extras.length > 0) {
    const extra = input.extras.map((e) => `${e.title}:\n\`\`\`\n${e.text}\n\`\`\``).join('\n\n');
    messages[lastUser] = { role: 'user', content: `${extra}\n\n${messages[lastUser].content}` };
  }
  if (!messages.some((m) => m.role === 'system')) messages.unshift({ role: 'system', content: SYSTEM_PROMPT });
  const turn = (m: ChatMessage): number[] =>
    special.imStart !== null && special.imEnd !== null
      ? [special.imStart, ...tok.encode(`${m.role}\n${m.content}`, { specials: 'plain' }), special.imEnd, ...tok.encode('\n', { specials: 'plain' })]
      : tok.encode(`${m.role === 'user' ? 'User' : m.role === 'assistant' ? 'Assistant' : 'System'}: ${m.content}\n`, { specials: 'plain' });
  const tail =
    special.imStart !== null ? [special.imStart, ...tok.encode('assistant\n', { specials: 'plain' })] : tok.encode('Assistant:', { specials: 'plain' });
  let turns = messages.map(turn);
  let dropped = 0;
  const size = (): number => layout.ids.length + fileIds.length + turns.reduce((n, t) => n + t.length, 0) + tail.length;
  // Over budget: drop the oldest non-system turns, never the last one.
  while (size() > input.budget && turns.length > 2) {
    const i = messages[0].role === 'system' ? 1 : 0;
    turns = [...turns.slice(0, i), ...turns.slice(i + 1)];
    messages.splice(i, 1);
    dropped++;
  }
  if (size() > input.budget) {
    throw new PromptError(`the conversation needs ${size()} tokens and only ${input.budget} fit in the context window`);
  }
  const own = [...fileIds, ...turns.flat(), ...tail];
  const ids = new Int32Array(layout.ids.length + own.length);
  ids.set(layout.ids, 0);
  ids.set(own, layout.ids.length);
  return { ids, sharedPrefix: layout.ids.length, droppedMessages: dropped };
}

/** UTF-16 offset of an LSP position in `text`; null when the position is outside the text. */
export function offsetAt(text: string, line: number, character: number): number | null {
  let off = 0;
  for (let l = 0; l < line; l++) {
    const nl = text.indexOf('\n', off);
    if (nl < 0) return null;
    off = nl + 1;
  }
  const end = text.indexOf('\n', off);
  const lineLen = (end < 0 ? text.length : end) - off;
  if (character > lineLen + (end < 0 ? 0 : 0)) return null;
  return off + character;
}
