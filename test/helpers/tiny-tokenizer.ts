// A tiny byte-level BPE tokenizer.json built like GPT-2's (bytes_to_unicode alphabet, a few merges) with special
// tokens, FIM markers included, for tests.

import * as fs from 'node:fs';
import * as path from 'node:path';

/** GPT-2's bytes_to_unicode: every byte gets a printable character. */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = '!'.charCodeAt(0); b <= '~'.charCodeAt(0); b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const out = new Array<string>(256);
  bs.forEach((b, i) => {
    out[b] = String.fromCharCode(cs[i]!);
  });
  return out;
}

/** The byte-level spelling of a string (its UTF-8 bytes mapped through bytes_to_unicode). */
export function byteLevel(s: string): string {
  const map = bytesToUnicode();
  return Array.from(new TextEncoder().encode(s), (b) => map[b]).join('');
}

export type FimStyle = 'qwen' | 'deepseek' | 'none';

export interface TinyTokenizer {
  json: Record<string, unknown>;
  config: Record<string, unknown>;
  /** ids of the special tokens by content */
  special: Record<string, number>;
}

export function tinyTokenizer(fim: FimStyle = 'qwen'): TinyTokenizer {
  const alphabet = bytesToUnicode();
  const vocab: Record<string, number> = {};
  alphabet.forEach((ch, b) => {
    vocab[ch] = b;
  });
  const merges: [string, string][] = [];
  const merge = (a: string, b: string): void => {
    merges.push([a, b]);
    vocab[a + b] = Object.keys(vocab).length;
  };
  merge('h', 'e');
  merge('l', 'l');
  merge('he', 'll');
  merge('hell', 'o');
  merge('Ġ', 'w');
  merge('o', 'r');
  merge('Ġw', 'or');
  merge('Ġwor', 'l');
  merge('Ġworl', 'd');
  const eAcute = byteLevel('é'); // two byte characters
  merge(eAcute[0]!, eAcute[1]!);
  merge('Ġ', 'Ġ');
  merge('ĠĠ', 'ĠĠ');
  let next = Object.keys(vocab).length;
  const added: { id: number; content: string; special: boolean }[] = [];
  const special: Record<string, number> = {};
  const addSpecial = (content: string): void => {
    added.push({ id: next, content, special: true });
    special[content] = next++;
  };
  addSpecial('<｜begin▁of▁sentence｜>');
  addSpecial('<|endoftext|>');
  if (fim === 'qwen') ['<|fim_prefix|>', '<|fim_suffix|>', '<|fim_middle|>'].forEach(addSpecial);
  if (fim === 'deepseek') ['<｜fim▁begin｜>', '<｜fim▁hole｜>', '<｜fim▁end｜>'].forEach(addSpecial);
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added.map((t) => ({ ...t, single_word: false, lstrip: false, rstrip: false, normalized: false })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  const config = {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: { __type: 'AddedToken', content: '<｜begin▁of▁sentence｜>', lstrip: false, normalized: true, rstrip: false, single_word: false },
    eos_token: '<|endoftext|>',
    clean_up_tokenization_spaces: true, // decoding must ignore this (we always pass false)
    model_max_length: 4096,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
  return { json, config, special };
}

export function writeTinyTokenizer(dir: string, fim: FimStyle = 'qwen'): TinyTokenizer {
  const t = tinyTokenizer(fim);
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(t.json));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(t.config));
  return t;
}
