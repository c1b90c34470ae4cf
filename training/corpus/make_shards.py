#!/usr/bin/env python3
"""Tokenise the corpus into compressed uint16 token shards.

    python3 training/corpus/make_shards.py [--tokenizer training/data/tokenizer]
        [--backend auto|python|node] [--max-shard-tokens 8000000] [--out training/data/shards]

Each package becomes one document laid out as in FORMAT.md

    <|repo_name|>NAME\\n <|file_sep|>PATH\\nTEXT[\\n] <|file_sep|>PATH\\nTEXT[\\n] ... <|endoftext|>

and documents are concatenated into uint16 token streams (training packages shuffled with a fixed
seed; held-out in list order).  A shard holds whole documents (a document larger than a shard is
split) and at most --max-shard-tokens tokens (8M tokens = 16 MB raw), written as an xz-compressed
.npy file: train_00000.npy.xz, ..., heldout_00000.npy.xz, plus index.json (tokens, sha256 and the
[name, start, length] of every document per shard).  Load on the GPU host with

    np.load(io.BytesIO(lzma.decompress(open(path, 'rb').read())))

Backends: `python` uses the Python `tokenizers` lib (GPU host); `node` runs
training/tokenizer/encode_packages.mjs with the native Node binding (`npm ci` in training/).  Both
run the same Rust tokenizer, so the ids are the same.  `auto` picks python if importable, else node.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import random
import struct
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING = os.path.dirname(HERE)
DATA = os.path.join(TRAINING, "data")


def layout_blocks(pkg: dict) -> list[str]:
    blocks = [f"<|repo_name|>{pkg['name']}\n"]
    for f in pkg["files"]:
        t = f["text"]
        blocks.append(f"<|file_sep|>{f['path']}\n{t if t.endswith(chr(10)) else t + chr(10)}")
    return blocks


def iter_python(tok_dir: str, corpus: str):
    from tokenizers import Tokenizer  # GPU host
    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    with lzma.open(corpus, "rt", encoding="utf-8") as fh:
        for line in fh:
            pkg = json.loads(line)
            encs = tok.encode_batch(layout_blocks(pkg), add_special_tokens=False)
            ids = [i for e in encs for i in e.ids] + [eot]
            yield pkg["name"], np.asarray(ids, dtype=np.uint16)


def iter_node(tok_dir: str, corpus: str, verify: int = 3):
    script = os.path.join(TRAINING, "tokenizer", "encode_packages.mjs")
    # absolute paths: the encoder runs in training/, so a path relative to the caller's folder would miss
    p = subprocess.Popen(["node", script, os.path.abspath(tok_dir), os.path.abspath(corpus), "--verify", str(verify)],
                         stdout=subprocess.PIPE, cwd=TRAINING)
    r = p.stdout

    def read(n):
        b = r.read(n)
        if len(b) != n:
            raise EOFError
        return b

    try:
        while True:
            try:
                (nl,) = struct.unpack("<I", read(4))
            except EOFError:
                break
            name = read(nl).decode("utf-8")
            (nt,) = struct.unpack("<I", read(4))
            yield name, np.frombuffer(read(2 * nt), dtype="<u2").astype(np.uint16)
    finally:
        rc = p.wait()
        if rc != 0:
            raise RuntimeError(f"encode_packages.mjs exited with {rc}")


def write_shard(out_dir, split, idx, parts, docs):
    arr = np.concatenate(parts) if parts else np.zeros(0, np.uint16)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    data = lzma.compress(buf.getvalue(), preset=6)
    name = f"{split}_{idx:05d}.npy.xz"
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(data)
    return {"file": name, "tokens": int(arr.size), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "documents": docs}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default=os.path.join(DATA, "tokenizer"))
    ap.add_argument("--corpus-dir", default=DATA)
    ap.add_argument("--out", default=os.path.join(DATA, "shards"))
    ap.add_argument("--backend", default="auto", choices=["auto", "python", "node"])
    ap.add_argument("--max-shard-tokens", type=int, default=8_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    assert args.max_shard_tokens * 2 <= 16 * (1 << 20), "a shard must stay <= 16 MiB even uncompressed"
    backend = args.backend
    if backend == "auto":
        try:
            import tokenizers  # noqa: F401
            backend = "python"
        except ImportError:
            backend = "node"
    it = iter_python if backend == "python" else iter_node
    tok_path = os.path.join(args.tokenizer, "tokenizer.json")
    with open(tok_path, "rb") as f:
        tok_sha = hashlib.sha256(f.read()).hexdigest()
    tj = json.load(open(tok_path))
    vocab_size = max(max(tj["model"]["vocab"].values()), max(t["id"] for t in tj["added_tokens"])) + 1
    specials = {t["content"]: t["id"] for t in tj["added_tokens"]}
    os.makedirs(args.out, exist_ok=True)
    for fn in os.listdir(args.out):
        if fn.endswith(".npy.xz"):
            os.remove(os.path.join(args.out, fn))
    index = {"format": "uint16 .npy, xz-compressed; documents = packages laid out per training/corpus/FORMAT.md",
             "tokenizer_sha256": tok_sha, "vocab_size": vocab_size, "dtype": "uint16", "special_tokens": specials,
             "backend": backend, "splits": {}}
    t0 = time.time()
    for split in ("train", "heldout"):
        corpus = os.path.join(args.corpus_dir, f"{split}.jsonl.xz")
        if not os.path.exists(corpus):
            raise SystemExit(f"--corpus-dir {args.corpus_dir}: no {split}.jsonl.xz (run build_corpus.py --out first)")
        docs = list(it(args.tokenizer, corpus))
        chars = 0
        with lzma.open(corpus, "rt", encoding="utf-8") as fh:
            for line in fh:
                chars += sum(len(b) for b in layout_blocks(json.loads(line)))
        if split == "train":
            random.Random(args.seed).shuffle(docs)
        shards, parts, sdocs, n, idx = [], [], [], 0, 0
        for name, ids in docs:
            pos = 0
            while pos < ids.size:
                take = min(ids.size - pos, args.max_shard_tokens - n)
                parts.append(ids[pos: pos + take])
                sdocs.append([name, n, int(take)] + ([] if pos == 0 and take == ids.size else [int(pos)]))
                n += take
                pos += take
                if n >= args.max_shard_tokens:
                    shards.append(write_shard(args.out, split, idx, parts, sdocs))
                    idx, parts, sdocs, n = idx + 1, [], [], 0
        if parts:
            shards.append(write_shard(args.out, split, idx, parts, sdocs))
        total = sum(s["tokens"] for s in shards)
        index["splits"][split] = {"documents": len(docs), "tokens": total, "chars": chars,
                                  "chars_per_token": chars / max(1, total), "shards": shards}
        print(f"{split}: {len(docs)} packages, {total:,} tokens ({chars / max(1, total):.3f} chars/token incl. "
              f"layout), {len(shards)} shard(s), {sum(s['bytes'] for s in shards) / 1e6:.2f} MB compressed "
              f"({time.time() - t0:.0f}s)", flush=True)
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    total_bytes = sum(os.path.getsize(os.path.join(args.out, fn)) for fn in os.listdir(args.out))
    print(f"wrote {args.out}: {total_bytes / 1e6:.2f} MB in all (backend {backend})")


if __name__ == "__main__":
    sys.exit(main())
