#!/usr/bin/env python3
"""Lay a shard folder out as device-upload parts: training/data/up1/, up2/, ... each <= --max-mb.

One device call uploads at most 64 MiB with the repository, so a shard set larger than what fits
beside it travels in several calls, one part each, and is reassembled on the device by copying
every part into one folder.  Parts hold hard links to the shard files (no copy); index.json goes
into up1 together with the held-out shards (so up1 alone serves eval.py).  Other shards are packed first-fit by decreasing size; a shard larger than --max-mb is an error
(make_shards.py --max-shard-tokens controls shard size).

Usage:  python3 training/corpus/upload_parts.py --shards training/data/shards_v04 [--max-mb 21]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(os.path.dirname(HERE), "data")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--out-parent", default=DATA, help="where up1/, up2/, ... are written")
    ap.add_argument("--max-mb", type=float, default=21.0, help="cap per part in MB (10^6 bytes)")
    args = ap.parse_args()
    index_path = os.path.join(args.shards, "index.json")
    if not os.path.exists(index_path):
        raise SystemExit(f"{index_path}: no index.json (run make_shards.py --out {args.shards} first)")
    index = json.load(open(index_path))
    cap = int(args.max_mb * 1e6)
    files = [sh["file"] for info in index["splits"].values() for sh in info["shards"]]
    sizes = {fn: os.path.getsize(os.path.join(args.shards, fn)) for fn in files}
    first = ["index.json"] + [sh["file"] for sh in index["splits"].get("heldout", {}).get("shards", [])]
    parts: list[list[str]] = [first]
    used = [os.path.getsize(index_path) + sum(sizes[fn] for fn in first[1:])]
    for fn in sorted((f for f in files if f not in first), key=lambda f: -sizes[f]):
        if sizes[fn] > cap:
            raise SystemExit(f"{fn}: {sizes[fn] / 1e6:.2f} MB is larger than a part ({args.max_mb} MB)")
        for i, u in enumerate(used):
            if u + sizes[fn] <= cap:
                parts[i].append(fn)
                used[i] += sizes[fn]
                break
        else:
            parts.append([fn])
            used.append(sizes[fn])
    for name in os.listdir(args.out_parent):   # stale parts of an earlier layout
        if name.startswith("up") and name[2:].isdigit():
            shutil.rmtree(os.path.join(args.out_parent, name))
    for i, names in enumerate(parts, 1):
        d = os.path.join(args.out_parent, f"up{i}")
        os.makedirs(d)
        for fn in names:
            os.link(os.path.join(args.shards, fn), os.path.join(d, fn))
        print(f"up{i}: {len(names)} files, {used[i - 1] / 1e6:.2f} MB: {' '.join(sorted(names))}")
    print(f"{len(parts)} parts, {sum(used) / 1e6:.2f} MB in all")


if __name__ == "__main__":
    sys.exit(main())
