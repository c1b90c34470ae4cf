// Character similarity for fuzzy matching: 1 − LevenshteinDistance / max(length), in [0, 1].

/** Texts longer than this are compared by lines instead (the character DP would be too slow). */
const MAX_CHARS = 6000;

export function similarity(a: string, b: string): number {
  if (a === b) return 1;
  const longest = Math.max(a.length, b.length);
  if (longest === 0) return 1;
  if (longest > MAX_CHARS) return lineSimilarity(a, b);
  return 1 - levenshtein(a, b) / longest;
}

/** Edit distance with two rolling rows, O(|a|·|b|) time and O(|b|) memory. */
export function levenshtein(a: string, b: string): number {
  if (a.length === 0) return b.length;
  if (b.length === 0) return a.length;
  let previous = new Int32Array(b.length + 1);
  let current = new Int32Array(b.length + 1);
  for (let j = 0; j <= b.length; j++) previous[j] = j;
  for (let i = 1; i <= a.length; i++) {
    current[0] = i;
    const ca = a.charCodeAt(i - 1);
    for (let j = 1; j <= b.length; j++) {
      const substitute = (previous[j - 1] ?? 0) + (ca === b.charCodeAt(j - 1) ? 0 : 1);
      const remove = (previous[j] ?? 0) + 1;
      const insert = (current[j - 1] ?? 0) + 1;
      current[j] = Math.min(substitute, remove, insert);
    }
    [previous, current] = [current, previous];
  }
  return previous[b.length] ?? 0;
}

/** Same measure with whole lines as the symbols. */
function lineSimilarity(a: string, b: string): number {
  const la = a.split('\n');
  const lb = b.split('\n');
  const ids = new Map<string, number>();
  const encode = (lines: string[]): string =>
    lines
      .map((l) => {
        let id = ids.get(l);
        if (id === undefined) {
          id = ids.size;
          ids.set(l, id);
        }
        return String.fromCharCode(0x100 + (id % 0xfe00));
      })
      .join('');
  const ea = encode(la);
  const eb = encode(lb);
  const longest = Math.max(ea.length, eb.length);
  return longest === 0 ? 1 : 1 - levenshtein(ea, eb) / longest;
}
