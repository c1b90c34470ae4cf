#!/usr/bin/env python3
"""Does the repository context bring what a line needs? A model-free check of context strategies on the held-out
packages (runs here, no GPU, no torch):

    python3 training/context_recall.py [--heldout training/data/heldout.jsonl.xz] [--cases 300] [--weights 0,5000]
        [--write-cases FILE]   (the packages and sampled lines, for bench/completion-eval.ts: our engine, real model)

For held-out TypeScript lines sampled as eval.py samples them (a file uniformly, then a line with >= 4 non-blank
characters incl. a letter or digit; fixed seed), the identifiers of the line that the rest of its file lacks are the
ones only the context can supply. For each strategy it prints the share of those identifiers present in the
context (recall) and the share of lines whose identifiers are all there, with the file's prompt in 8,192 tokens
(sizes in characters at 3.54 per token, the corpus's rate):
  * tail: the package's other files in corpus order, cut from the front (eval.py's `*_repo` tasks);
  * layout, weight W: the sidecar's layout (sidecar_layout.py) with similarity weight W (0 = structure only),
    ranked by the file's text without the line.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sidecar_layout as sl  # noqa: E402

CHARS_PER_TOKEN = 3.54
TS_EXT = (".ts", ".tsx", ".mts", ".cts")
DECL_EXT = (".d.ts", ".d.mts", ".d.cts")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--heldout", default=os.path.join(here, "data", "heldout.jsonl.xz"))
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=8192, help="prompt tokens")
    ap.add_argument("--weights", default=f"0,{sl.SIMILARITY_WEIGHT:g}", help="similarity weights to compare")
    ap.add_argument("--write-cases", default=None, metavar="FILE",
                    help="also write the packages and the sampled lines as JSON for bench/completion-eval.ts")
    a = ap.parse_args(argv)
    if not os.path.exists(a.heldout):
        raise SystemExit(f"{a.heldout}: no such file (the held-out packages as JSON lines, training/corpus)")
    weights = [float(w) for w in a.weights.split(",")]
    with lzma.open(a.heldout, "rt") as fh:
        packages = [json.loads(line) for line in fh]
    files = []
    for pi, p in enumerate(packages):
        for fi, f in enumerate(p["files"]):
            if not f["path"].endswith(TS_EXT) or f["path"].endswith(DECL_EXT):
                continue
            lines = f["text"].split("\n")
            cands = [i for i in range(1, len(lines) - 1)
                     if len(lines[i].strip()) >= 4 and any(ch.isalnum() for ch in lines[i])]
            if cands:
                files.append((pi, fi, lines, cands))
    rng = np.random.default_rng(a.seed)
    sampled = []
    for _ in range(a.cases):
        pi, fi, lines, cands = files[int(rng.integers(len(files)))]
        sampled.append((pi, fi, lines, int(cands[int(rng.integers(len(cands)))])))
    if a.write_cases:
        with open(a.write_cases, "w") as fh:
            json.dump(dict(packages=[dict(name=p["name"], files=[dict(path=f["path"], text=f["text"]) for f in p["files"]])
                                     for p in packages],
                           cases=[[pi, fi, li] for pi, fi, _, li in sampled]), fh)
        print(f"wrote {len(sampled)} cases over {len(packages)} packages to {a.write_cases}")
    names = ["tail"] + [f"layout, weight {w:g}" for w in weights]
    recall = {k: [] for k in names}
    tokens = {k: [] for k in names}
    for pi, fi, lines, li in sampled:
        pkg, f = packages[pi], packages[pi]["files"][fi]
        visible = "\n".join(lines[:li] + lines[li + 1:])
        novel = sl.identifier_set(lines[li]) - sl.identifier_set(visible, limit=None)
        if not novel:
            continue
        room = max(0.0, (a.ctx - 64) * CHARS_PER_TOKEN - len(f["text"]))
        others = [g for j, g in enumerate(pkg["files"]) if j != fi]
        block = lambda g: f"\n{g['path']}\n{g['text']}"  # noqa: E731
        tail = "".join(block(g) for g in others)
        tail = tail[max(0, len(tail) - int(room)):] if room > 0 else ""
        contexts = [tail] + ["".join(block(g) for g in sl.layout_order(others, f["path"], visible, room,
                                                                        size=lambda g: len(block(g)), weight=w))
                             for w in weights]
        for k, text in zip(names, contexts):
            recall[k].append(len(novel & sl.identifier_set(text, limit=None)) / len(novel))
            tokens[k].append(len(text) / CHARS_PER_TOKEN)
    n = len(recall["tail"])
    print(f"{n} of {a.cases} lines need identifiers their own file lacks ({a.heldout}, prompt {a.ctx} tokens)")
    print("| context | recall of those identifiers | lines with all of them | mean context tokens |\n|---|---|---|---|")
    for k in names:
        r = np.array(recall[k])
        print(f"| {k} | {r.mean():.3f} | {(r == 1).mean():.3f} | {np.mean(tokens[k]):.0f} |")


if __name__ == "__main__":
    main()
