// Fill-in-the-middle prompts in the order the model was trained on (the tokenizer's fim.order):
//   PSM: [BOS] <fim_prefix> prefix <fim_suffix> suffix <fim_middle>           → the model writes the middle;
//   SPM: [BOS] <fim_prefix> <fim_suffix> suffix <fim_middle> prefix           → the middle continues the prefix.
// The markers are the tokenizer's own (Qwen <|fim_prefix|>…, DeepSeek <｜fim▁begin｜><｜fim▁hole｜><｜fim▁end｜>,
// StarCoder <fim_prefix>…). Prefix and suffix are encoded as plain text, so source code that happens to spell a
// special token cannot inject it.

import { GlanceError } from './errors';
import { FIM_FAMILIES, type Tokenizer } from './tokenizer';

/** The FIM markers around a prefix and a suffix, in `order` (shared with the sidecar's prompts). */
export function arrangeFim(
  order: 'psm' | 'spm', marks: { prefix: number; suffix: number; middle: number },
  prefixIds: readonly number[], suffixIds: readonly number[],
): number[] {
  return order === 'spm'
    ? [marks.prefix, marks.suffix, ...suffixIds, marks.middle, ...prefixIds]
    : [marks.prefix, ...prefixIds, marks.suffix, ...suffixIds, marks.middle];
}

export interface FimOptions {
  /** start with BOS; default: the tokenizer's addBos */
  bos?: boolean;
  /** keep only the last N tokens of the prefix */
  maxPrefixTokens?: number;
  /** keep only the first N tokens of the suffix */
  maxSuffixTokens?: number;
}

export interface FimPrompt {
  ids: number[];
  /** token counts of the two parts after truncation */
  prefixTokens: number;
  suffixTokens: number;
}

export function buildFimPrompt(tokenizer: Tokenizer | null, prefix: string, suffix: string, opts: FimOptions = {}): FimPrompt {
  if (!tokenizer) {
    throw new GlanceError('no_tokenizer', 'fill-in-the-middle needs a tokenizer, and the model directory has no tokenizer.json');
  }
  const fim = tokenizer.fim;
  if (!fim) {
    throw new GlanceError(
      'no_fim',
      `the tokenizer has no fill-in-the-middle tokens; looked for ${FIM_FAMILIES.map((f) => f.join(' ')).join(', or ')}`,
    );
  }
  for (const [k, v] of [['maxPrefixTokens', opts.maxPrefixTokens], ['maxSuffixTokens', opts.maxSuffixTokens]] as const) {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) {
      throw new GlanceError('bad_input', `FIM option ${k} must be a non-negative integer; found ${String(v)}`);
    }
  }
  let p = tokenizer.encode(prefix, { specials: 'plain' });
  let s = tokenizer.encode(suffix, { specials: 'plain' });
  if (opts.maxPrefixTokens !== undefined && p.length > opts.maxPrefixTokens) p = opts.maxPrefixTokens === 0 ? [] : p.slice(-opts.maxPrefixTokens);
  if (opts.maxSuffixTokens !== undefined && s.length > opts.maxSuffixTokens) s = s.slice(0, opts.maxSuffixTokens);
  const bos = opts.bos ?? tokenizer.addBos;
  const ids: number[] = [];
  if (bos) {
    if (tokenizer.bosId === null) throw new GlanceError('bad_input', 'FIM prompt with BOS asked for, but the tokenizer has no bos_token');
    ids.push(tokenizer.bosId);
  }
  ids.push(...arrangeFim(fim.order, { prefix: fim.prefix.id, suffix: fim.suffix.id, middle: fim.middle.id }, p, s));
  return { ids, prefixTokens: p.length, suffixTokens: s.length };
}
