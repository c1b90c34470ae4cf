// Post-processing of a raw completion before it is shown: trims what would only repeat the document, limits
// lines, and keeps single-line answers where the cursor is in the middle of a line.

export interface FilterInput {
  /** the model's text, to insert at the cursor */
  text: string;
  /** the current line's text before the cursor */
  linePrefix?: string;
  /** the current line's text after the cursor */
  lineSuffix: string;
  /** the lines below the cursor's line (a few are enough) */
  followingLines: readonly string[];
  maxLines: number;
}

/** Characters that may follow the cursor without making it "mid-line" (closers the editor auto-inserted). */
const CLOSERS_ONLY = /^[\s)\]}>'"`;,]*$/;

/** Returns the text to show, or null when nothing useful is left. */
export function filterCompletion(input: FilterInput): string | null {
  let text = stripRepeatedLinePrefix(input.text.replace(/\r\n/g, '\n'), input.linePrefix ?? '');
  const midLine = !CLOSERS_ONLY.test(input.lineSuffix);
  const lines = text.split('\n');

  // In the middle of a line only the rest of that line makes sense.
  let kept = midLine ? lines.slice(0, 1) : lines.slice(0, input.maxLines);

  // Stop where the completion starts repeating the document below the cursor.
  const nextNonEmpty = input.followingLines.find((l) => l.trim() !== '')?.trim();
  if (nextNonEmpty !== undefined && nextNonEmpty.length > 1) {
    const at = kept.findIndex((l, i) => i > 0 && l.trim() === nextNonEmpty);
    if (at > 0) kept = kept.slice(0, at);
  }
  // Drop trailing blank lines.
  while (kept.length > 1 && (kept[kept.length - 1] ?? '').trim() === '') kept.pop();
  text = kept.join('\n');

  // Auto-closed characters after the cursor: drop them from the end of a one-line suggestion that already
  // contains them, since the editor shows the suffix anyway.
  const closers = input.lineSuffix.trim();
  if (closers !== '' && !midLine && kept.length === 1 && text.trimEnd().endsWith(closers)) {
    text = text.trimEnd().slice(0, -closers.length);
  }

  if (text.trim() === '') return null;
  // Suppress what would only repeat the text right after the cursor.
  const suffixStart = input.lineSuffix.trimStart();
  if (suffixStart !== '' && suffixStart.startsWith(text.trim())) return null;
  return text;
}

/**
 * Models sometimes restart the current line: after `  return ` they answer `  return a + b;`. When the first
 * line of the answer begins with the line's text before the cursor, keep only what comes after it.
 */
export function stripRepeatedLinePrefix(text: string, linePrefix: string): string {
  const typed = linePrefix.trim();
  if (typed === '') return text;
  const first = text.trimStart();
  if (!first.startsWith(typed)) return text;
  const rest = first.slice(typed.length);
  // `return` repeated must not swallow `returnValue`: the repeat has to end where the typed text ended
  if (/^\w/.test(rest) && /\w$/.test(typed)) return text;
  return /\s$/.test(linePrefix) ? rest.replace(/^[ \t]+/, '') : rest;
}
