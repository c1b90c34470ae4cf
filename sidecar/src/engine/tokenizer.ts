// Tokenizer glue over @huggingface/tokenizers (pure JS): loading tokenizer.json + tokenizer_config.json,
// special / FIM token discovery, and an incremental detokenizer for streaming that only ever emits complete
// UTF-8 text. Decoding always passes clean_up_tokenization_spaces: false (code must round-trip exactly).

import * as fs from 'node:fs';
import * as path from 'node:path';

import type * as HfTokenizers from '@huggingface/tokenizers' with { 'resolution-mode': 'import' };

// The package is ESM-typed but ships a CommonJS build under its "require" export condition; this file compiles
// to CommonJS, so load that build with require() and type it from the ESM declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { Tokenizer: HfTokenizer } = require('@huggingface/tokenizers') as typeof HfTokenizers;
type HfTokenizer = InstanceType<typeof HfTokenizer>;

import { GlanceError } from './errors';

export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';

/** Fill-in-the-middle markers (prefix-suffix-middle order). */
export interface FimTokens {
  readonly prefix: { id: number; text: string };
  readonly suffix: { id: number; text: string };
  readonly middle: { id: number; text: string };
  /**
   * The order the model was trained to read: 'psm' = prefix, suffix, middle (the common default); 'spm' =
   * <prefix-token><suffix-token>SUFFIX<middle-token>PREFIX, the middle continuing the prefix (StarCoder/Code Llama's
   * SPM variant). From tokenizer_config.json's "fim_order" (Glance's own key; absent means 'psm').
   */
  readonly order: 'psm' | 'spm';
}

/** Known FIM token families: [prefix, suffix, middle]. */
export const FIM_FAMILIES: readonly (readonly [string, string, string])[] = [
  ['<|fim_prefix|>', '<|fim_suffix|>', '<|fim_middle|>'], // Qwen2.5-Coder, many others
  ['<｜fim▁begin｜>', '<｜fim▁hole｜>', '<｜fim▁end｜>'], // DeepSeek (fullwidth bars, ▁)
  ['<|fim_begin|>', '<|fim_hole|>', '<|fim_end|>'], // DeepSeek names with ASCII bars
  ['<fim_prefix>', '<fim_suffix>', '<fim_middle>'], // StarCoder / SantaCoder
  ['<fim-prefix>', '<fim-suffix>', '<fim-middle>'], // CodeGen2 style
];

export interface DecodeOptions {
  /** drop special tokens (BOS, EOS, FIM markers, …) from the text; default false */
  skipSpecialTokens?: boolean;
  /**
   * ids the tokenizer does not know (a model's vocab_size is often padded past the tokenizer's): 'throw' (default)
   * or 'skip' (decode them as nothing).
   */
  unknownIds?: 'throw' | 'skip';
}

export interface EncodeOptions {
  /**
   * 'allow' (default): text that spells a special token (e.g. "<|fim_prefix|>") becomes that token, as HF does.
   * 'plain': such text is encoded as ordinary text — use it for file contents and other untrusted text.
   */
  specials?: 'allow' | 'plain';
}

function readJsonFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new GlanceError('io', `cannot read ${file}: ${(e as Error).message}`, { file }, { cause: e });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new GlanceError('bad_tokenizer', `${file} is not valid JSON: ${(e as Error).message}`, { file }, { cause: e });
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** tokenizer_config's special-token fields are strings or AddedToken objects {"content": …}. */
function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return null;
}

interface AddedTokenJson {
  id: number;
  content: string;
  special: boolean;
}

/** A loaded tokenizer. */
export class Tokenizer {
  /** number of ids (max id + 1, added tokens included) */
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  /** whether prompts should start with BOS (tokenizer_config add_bos_token, or the post-processor template) */
  readonly addBos: boolean;
  /** special tokens by content (added_tokens with special: true, plus BOS/EOS) */
  readonly specialTokens: ReadonlyMap<string, number>;
  readonly fim: FimTokens | null;
  readonly chatTemplate: string | null;

  private readonly hf: HfTokenizer;
  private readonly specialIds: Set<number>;
  /** special-token contents, longest first (for 'plain' encoding) */
  private readonly specialContents: string[];

  constructor(tokenizerJson: unknown, tokenizerConfig: unknown, readonly file = TOKENIZER_FILE) {
    if (!isObject(tokenizerJson)) {
      throw new GlanceError('bad_tokenizer', `${file} must be a JSON object`, { file });
    }
    if (!isObject(tokenizerJson.model)) {
      throw new GlanceError('bad_tokenizer', `${file} has no "model" object (expected a Hugging Face tokenizers file)`, { file });
    }
    const cfg = tokenizerConfig === null || tokenizerConfig === undefined ? {} : tokenizerConfig;
    if (!isObject(cfg)) throw new GlanceError('bad_tokenizer', `${TOKENIZER_CONFIG_FILE} must be a JSON object`, {});
    const added: AddedTokenJson[] = [];
    const rawAdded = tokenizerJson.added_tokens ?? [];
    if (!Array.isArray(rawAdded)) throw new GlanceError('bad_tokenizer', `${file}: "added_tokens" must be a list`, { file });
    for (const t of rawAdded) {
      if (!isObject(t) || typeof t.id !== 'number' || !Number.isInteger(t.id) || t.id < 0 || typeof t.content !== 'string') {
        throw new GlanceError('bad_tokenizer', `${file}: every added token needs an integer "id" and a string "content"; found ${JSON.stringify(t).slice(0, 80)}`, { file });
      }
      added.push({ id: t.id, content: t.content, special: t.special === true });
    }
    try {
      this.hf = new HfTokenizer(tokenizerJson.added_tokens === undefined ? { ...tokenizerJson, added_tokens: [] } : tokenizerJson, cfg);
    } catch (e) {
      throw new GlanceError('bad_tokenizer', `${file} could not be loaded: ${(e as Error).message}`, { file }, { cause: e });
    }
    const vocab = this.hf.get_vocab(true);
    let maxId = -1;
    for (const id of vocab.values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;

    const special = new Map<string, number>();
    for (const t of added) if (t.special) special.set(t.content, t.id);

    const lookup = (v: unknown): number | null => {
      const c = tokenContent(v);
      if (c === null) return null;
      return this.hf.token_to_id(c) ?? null;
    };
    this.bosId = lookup(cfg.bos_token);
    this.eosId = lookup(cfg.eos_token);
    for (const key of ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const) {
      const c = tokenContent(cfg[key]);
      const id = c === null ? undefined : this.hf.token_to_id(c);
      if (c !== null && id !== undefined) special.set(c, id);
    }
    this.specialTokens = special;
    this.specialIds = new Set(special.values());
    this.specialContents = [...special.keys()].filter((s) => s.length > 1).sort((a, b) => b.length - a.length);

    if (typeof cfg.add_bos_token === 'boolean') {
      this.addBos = cfg.add_bos_token && this.bosId !== null;
    } else {
      // the post-processor template (e.g. TemplateProcessing single = [BOS, $A]) says so
      const pp = tokenizerJson.post_processor;
      const single = isObject(pp) && Array.isArray(pp.single) ? pp.single : null;
      const firstSpecial = single && isObject(single[0]) && isObject(single[0].SpecialToken) ? single[0].SpecialToken.id : null;
      this.addBos = this.bosId !== null && typeof firstSpecial === 'string' && this.hf.token_to_id(firstSpecial) === this.bosId;
    }

    this.fim = null;
    const order = cfg.fim_order ?? 'psm';
    if (order !== 'psm' && order !== 'spm') {
      throw new GlanceError('bad_tokenizer', `${TOKENIZER_CONFIG_FILE}: "fim_order" must be "psm" or "spm"; found ${JSON.stringify(order).slice(0, 40)}`, {});
    }
    for (const [p, s, m] of FIM_FAMILIES) {
      const ids = [p, s, m].map((t) => this.hf.token_to_id(t));
      if (ids.every((x) => x !== undefined)) {
        this.fim = {
          prefix: { id: ids[0]!, text: p },
          suffix: { id: ids[1]!, text: s },
          middle: { id: ids[2]!, text: m },
          order,
        };
        break;
      }
    }
    this.chatTemplate = typeof cfg.chat_template === 'string' ? cfg.chat_template : null;
  }

  /** Token ids of `text` (no BOS/EOS added). */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (text.length === 0) return [];
    if (opts.specials !== 'plain' || this.specialContents.length === 0) {
      return this.hf.encode(text, { add_special_tokens: false }).ids;
    }
    // 'plain': cut the text around every spelled-out special token and encode that token's text in two
    // pieces, so that no piece contains a whole special token.
    const out: number[] = [];
    let rest = text;
    for (;;) {
      let at = -1;
      let which = '';
      for (const s of this.specialContents) {
        const i = rest.indexOf(s);
        if (i >= 0 && (at < 0 || i < at || (i === at && s.length > which.length))) {
          at = i;
          which = s;
        }
      }
      if (at < 0) break;
      if (at > 0) out.push(...this.hf.encode(rest.slice(0, at), { add_special_tokens: false }).ids);
      const cp = String.fromCodePoint(which.codePointAt(0)!);
      out.push(...this.hf.encode(cp, { add_special_tokens: false }).ids);
      out.push(...this.hf.encode(which.slice(cp.length), { add_special_tokens: false }).ids);
      rest = rest.slice(at + which.length);
    }
    if (rest.length > 0) out.push(...this.hf.encode(rest, { add_special_tokens: false }).ids);
    return out;
  }

  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    let list = Array.from(ids);
    const known = (id: number): boolean => Number.isInteger(id) && id >= 0 && id < this.vocabSize && this.hf.id_to_token(id) !== undefined;
    if (opts.unknownIds === 'skip') {
      list = list.filter(known);
    } else {
      for (const id of list) {
        if (!known(id)) throw new GlanceError('bad_input', `token id ${id} is not in the tokenizer's vocabulary (0..${this.vocabSize - 1})`, { id });
      }
    }
    if (list.length === 0) return '';
    return this.hf.decode(list, { skip_special_tokens: opts.skipSpecialTokens === true, clean_up_tokenization_spaces: false });
  }

  /** The token's string as stored in the vocabulary (e.g. "Ġworld"), or null. */
  tokenString(id: number): string | null {
    return this.hf.id_to_token(id) ?? null;
  }

  tokenToId(token: string): number | null {
    return this.hf.token_to_id(token) ?? null;
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** A streaming detokenizer. `context`: the last few prompt ids, so the first generated token decodes in context. */
  createStreamDecoder(opts: DecodeOptions & { context?: ArrayLike<number> } = {}): StreamDecoder {
    return new StreamDecoder(this, opts);
  }
}

/**
 * Incremental detokenizer. `push(id)` returns the text that became final with this token: text is held back while
 * the decoded tail ends in U+FFFD (an incomplete UTF-8 sequence split across byte-level tokens). The window
 * technique (decode prefix..end, minus decode prefix..read) keeps decoders that strip a leading space correct.
 */
export class StreamDecoder {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;
  private readonly skip: boolean;

  constructor(private readonly tok: Tokenizer, opts: DecodeOptions & { context?: ArrayLike<number> } = {}) {
    this.skip = opts.skipSpecialTokens === true;
    if (opts.context && opts.context.length > 0) {
      const ctx = Array.from(opts.context).slice(-6);
      this.ids.push(...ctx);
      this.prefixOffset = 0;
      this.readOffset = ctx.length;
    }
  }

  private text(from: number, to: number): string {
    return this.tok.decode(this.ids.slice(from, to), { skipSpecialTokens: this.skip, unknownIds: 'skip' });
  }

  push(id: number): string {
    this.ids.push(id);
    const prefixText = this.text(this.prefixOffset, this.readOffset);
    const newText = this.text(this.prefixOffset, this.ids.length);
    if (newText.length > prefixText.length && !newText.endsWith('\uFFFD')) {
      const delta = newText.slice(prefixText.length);
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      return delta;
    }
    return '';
  }

  /** Text still held back (an incomplete sequence at the end), emitted as is; the decoder is then empty. */
  flush(): string {
    const prefixText = this.text(this.prefixOffset, this.readOffset);
    const all = this.text(this.prefixOffset, this.ids.length);
    this.prefixOffset = this.readOffset = this.ids.length;
    return all.length > prefixText.length ? all.slice(prefixText.length) : '';
  }
}

/** Builds a tokenizer from parsed JSON (tests, embedded models). */
export function createTokenizer(tokenizerJson: unknown, tokenizerConfig: unknown = {}): Tokenizer {
  return new Tokenizer(tokenizerJson, tokenizerConfig);
}

/** Loads `dir/tokenizer.json` (+ tokenizer_config.json); null when the model directory has no tokenizer.json. */
export function loadTokenizer(dir: string): Tokenizer | null {
  const file = path.join(dir, TOKENIZER_FILE);
  if (!fs.existsSync(file)) return null;
  const json = readJsonFile(file);
  const cfgFile = path.join(dir, TOKENIZER_CONFIG_FILE);
  const cfg = fs.existsSync(cfgFile) ? readJsonFile(cfgFile) : {};
  if (!isObject(cfg)) throw new GlanceError('bad_tokenizer', `${cfgFile} must be a JSON object`, { file: cfgFile });
  return new Tokenizer(json, cfg, file);
}
