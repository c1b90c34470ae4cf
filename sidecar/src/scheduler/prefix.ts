// Longest common prefix of two token sequences: how much of a cached prompt a new one can reuse.

/** Length of the common prefix of held[0..n) and ids. */
export function commonPrefixLength(held: ArrayLike<number>, n: number, ids: ArrayLike<number>): number {
  const m = Math.min(n, ids.length);
  let i = 0;
  while (i < m && held[i] === ids[i]) i++;
  return i;
}
