#!/usr/bin/env python3
"""Verify token shards against index.json and (where the Python `tokenizers` lib exists) re-tokenise.

    python3 training/corpus/verify_shards.py [--shards training/data/shards] [--tokenizer training/data/tokenizer]
        [--corpus-dir training/data] [--train-docs 40]

Checks: every shard's sha256 and token count; ids < vocab; each document ends with <|endoftext|>
and begins with <|repo_name|>.  With Python `tokenizers` (GPU host) it also re-encodes every
held-out package and --train-docs training packages from the .jsonl.xz corpus, compares the ids
with the shards exactly, and decodes them back to the laid-out text.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_shards import DATA, layout_blocks  # noqa: E402


def load_shard(path):
    with open(path, "rb") as f:
        data = f.read()
    return data, np.load(io.BytesIO(lzma.decompress(data)), allow_pickle=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default=os.path.join(DATA, "shards"))
    ap.add_argument("--tokenizer", default=os.path.join(DATA, "tokenizer"))
    ap.add_argument("--corpus-dir", default=DATA)
    ap.add_argument("--train-docs", type=int, default=40)
    args = ap.parse_args()
    index = json.load(open(os.path.join(args.shards, "index.json")))
    sp = index["special_tokens"]
    docs = {}
    bad = 0
    for split, info in index["splits"].items():
        for sh in info["shards"]:
            data, arr = load_shard(os.path.join(args.shards, sh["file"]))
            if hashlib.sha256(data).hexdigest() != sh["sha256"] or arr.size != sh["tokens"] or arr.dtype != np.uint16:
                print(f"BAD shard {sh['file']}")
                bad += 1
            if arr.size and int(arr.max()) >= index["vocab_size"]:
                print(f"BAD ids in {sh['file']}")
                bad += 1
            for d in sh["documents"]:
                name, start, length = d[0], d[1], d[2]
                docs.setdefault((split, name), []).append(arr[start: start + length])
        print(f"{split}: {len(info['shards'])} shard(s), {info['tokens']:,} tokens, index ok")
    for (split, name), parts in docs.items():
        ids = np.concatenate(parts)
        if ids[0] != sp["<|repo_name|>"] or ids[-1] != sp["<|endoftext|>"]:
            print(f"BAD document framing: {split} {name}")
            bad += 1
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("python `tokenizers` not installed: skipped the re-tokenisation check")
        return 1 if bad else 0
    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    checked = 0
    for split, limit in (("heldout", 10 ** 9), ("train", args.train_docs)):
        n = 0
        with lzma.open(os.path.join(args.corpus_dir, f"{split}.jsonl.xz"), "rt", encoding="utf-8") as fh:
            for line in fh:
                if n >= limit:
                    break
                pkg = json.loads(line)
                text = "".join(layout_blocks(pkg)) + "<|endoftext|>"
                want = np.asarray(tok.encode(text, add_special_tokens=False).ids, dtype=np.uint16)
                got = np.concatenate(docs[(split, pkg["name"])])
                if want.shape != got.shape or not np.array_equal(want, got):
                    print(f"MISMATCH python tokenizers vs shard: {split} {pkg['name']}")
                    bad += 1
                elif tok.decode(got.tolist(), skip_special_tokens=False) != text:
                    print(f"DECODE mismatch: {split} {pkg['name']}")
                    bad += 1
                n += 1
                checked += 1
    print(f"re-tokenised {checked} documents with python tokenizers: {'all identical' if not bad else f'{bad} problems'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
