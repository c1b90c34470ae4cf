#!/usr/bin/env python3
"""Train the Glance byte-level BPE tokenizer with the Python `tokenizers` lib (GPU host path).

    python3 training/tokenizer/train_tokenizer.py [--corpus training/data/train.jsonl.xz]
        [--out training/data/tokenizer-py] [--vocab 24576] [--min-freq 2] [--heldout training/data/heldout.jsonl.xz]

Same contract as train_tokenizer.mjs (the here-runnable path, which produced the shipped
tokenizer): byte-level BPE, no normalizer, ByteLevel pre-tokenizer (add_prefix_space false,
use_regex true), ByteLevel decoder, special tokens at ids 0..9 in the order of SPECIAL_TOKENS, the
256 byte symbols next, then merges; tokenizer_config.json with bos = eos = <|endoftext|>, pad
<|pad|>, model_max_length 32768, add_bos_token false and a ChatML chat_template.  Each training
text is one whole file ("path\\n" + content) of the *training split only*, so merges may span lines
(newline + indentation tokens).  The merges will differ slightly from the .mjs trainer's (the HF
trainer is a different implementation of the same algorithm); both load in @huggingface/tokenizers.
Keep SPECIAL_TOKENS / CHAT_TEMPLATE in sync with tokenizer_spec.mjs.
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING = os.path.dirname(HERE)

SPECIAL_TOKENS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                  "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
MODEL_MAX_LENGTH = 32768
CHAT_TEMPLATE = ("{%- for message in messages -%}"
                 "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
                 "{%- endfor -%}"
                 "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}")


def iter_files(corpus: str):
    with lzma.open(corpus, "rt", encoding="utf-8") as fh:
        for line in fh:
            pkg = json.loads(line)
            for f in pkg["files"]:
                yield f"{f['path']}\n{f['text']}"


def added_tokens():
    return [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
             "special": True} for i, t in enumerate(SPECIAL_TOKENS)]


def tokenizer_config():
    extra = [t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|pad|>")]
    return {
        "add_bos_token": False, "add_eos_token": False, "add_prefix_space": False,
        "added_tokens_decoder": {str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                                                  "single_word", "special")} for t in added_tokens()},
        "additional_special_tokens": extra,
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>", "unk_token": None,
        "clean_up_tokenization_spaces": False, "model_max_length": MODEL_MAX_LENGTH,
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=os.path.join(TRAINING, "data", "train.jsonl.xz"))
    ap.add_argument("--out", default=os.path.join(TRAINING, "data", "tokenizer-py"))
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--min-freq", type=int, default=2)
    ap.add_argument("--max-token-length", type=int, default=64)
    ap.add_argument("--heldout", default=os.path.join(TRAINING, "data", "heldout.jsonl.xz"),
                    help="only for the chars/token report after training")
    args = ap.parse_args()
    if not 1024 <= args.vocab <= 65535:
        raise SystemExit("--vocab must be in [1024, 65535] (uint16 shards)")
    if "heldout" in os.path.basename(args.corpus):
        raise SystemExit("refusing to train on the held-out split")

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab, min_frequency=args.min_freq, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=True,
                                  max_token_length=args.max_token_length)
    t0 = time.time()
    tok.train_from_iterator(iter_files(args.corpus), trainer=trainer)
    print(f"trained in {time.time() - t0:.0f}s: vocab {tok.get_vocab_size()}")

    tj = json.loads(tok.to_str())
    for t in tj["added_tokens"]:  # trainer puts specials at 0..9 already; assert the layout
        assert SPECIAL_TOKENS[t["id"]] == t["content"], t
    tj["added_tokens"] = added_tokens()
    tj["normalizer"] = None
    tj["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tj["post_processor"] = None
    tj["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    tj["model"].update(dropout=None, unk_token=None, continuing_subword_prefix=None, end_of_word_suffix=None,
                       fuse_unk=False, byte_fallback=False, ignore_merges=False)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(), f, indent=2)
    with open(os.path.join(args.out, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>",
                   "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|pad|>")]},
                  f, indent=2)

    tok2 = Tokenizer.from_file(os.path.join(args.out, "tokenizer.json"))
    sample = "<|repo_name|>demo\n<|file_sep|>src/a.ts\nexport const x = (a: number): string => `${a}`;\n"
    ids = tok2.encode(sample, add_special_tokens=False).ids
    assert tok2.decode(ids, skip_special_tokens=False) == sample, "round-trip failed"
    if args.heldout and os.path.exists(args.heldout):
        chars = toks = 0
        with lzma.open(args.heldout, "rt", encoding="utf-8") as fh:
            for line in fh:
                for f in json.loads(line)["files"]:
                    p = f["path"]
                    if p.endswith((".ts", ".tsx", ".mts", ".cts")) and ".d." not in p.rsplit("/", 1)[-1]:
                        chars += len(f["text"])
                        toks += len(tok2.encode(f["text"], add_special_tokens=False).ids)
        print(f"held-out TypeScript: {chars} chars / {toks} tokens = {chars / max(1, toks):.3f} chars/token")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
