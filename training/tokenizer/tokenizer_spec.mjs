// The Glance tokenizer's fixed parts: special tokens, pipeline pieces, tokenizer_config.json.
// Shared by train_tokenizer.mjs (here) and mirrored by train_tokenizer.py (GPU host); keep in sync.

export const SPECIAL_TOKENS = [
  '<|endoftext|>', // 0: bos = eos = document separator
  '<|fim_prefix|>',
  '<|fim_middle|>',
  '<|fim_suffix|>',
  '<|fim_pad|>',
  '<|repo_name|>',
  '<|file_sep|>',
  '<|im_start|>',
  '<|im_end|>',
  '<|pad|>',
];

export const MODEL_MAX_LENGTH = 32768;

// ChatML: <|im_start|>role\ncontent<|im_end|>\n ... and, with add_generation_prompt, <|im_start|>assistant\n
export const CHAT_TEMPLATE =
  "{%- for message in messages -%}" +
  "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}" +
  "{%- endfor -%}" +
  "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

// GPT-2 byte <-> unicode table (the ByteLevel alphabet).
export function bytesToUnicode() {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const map = new Array(256);
  bs.forEach((b, i) => (map[b] = String.fromCharCode(cs[i])));
  return map; // byte -> char
}

export function addedTokensJson() {
  return SPECIAL_TOKENS.map((content, id) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
}

/** tokenizer.json from a vocab {token: id} and an ordered merges list [[a, b], ...]. */
export function tokenizerJson(vocab, merges) {
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokensJson(),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
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
}

export function tokenizerConfigJson() {
  const decoder = {};
  addedTokensJson().forEach((t) => {
    decoder[String(t.id)] = {
      content: t.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true,
    };
  });
  return {
    add_bos_token: false,
    add_eos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: decoder,
    additional_special_tokens: SPECIAL_TOKENS.filter((t) => !['<|endoftext|>', '<|pad|>'].includes(t)),
    bos_token: '<|endoftext|>',
    eos_token: '<|endoftext|>',
    pad_token: '<|pad|>',
    unk_token: null,
    clean_up_tokenization_spaces: false,
    model_max_length: MODEL_MAX_LENGTH,
    tokenizer_class: 'PreTrainedTokenizerFast',
    chat_template: CHAT_TEMPLATE,
  };
}

export function specialTokensMapJson() {
  return {
    bos_token: '<|endoftext|>',
    eos_token: '<|endoftext|>',
    pad_token: '<|pad|>',
    additional_special_tokens: SPECIAL_TOKENS.filter((t) => !['<|endoftext|>', '<|pad|>'].includes(t)),
  };
}
