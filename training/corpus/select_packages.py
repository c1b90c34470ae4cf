#!/usr/bin/env python3
"""Probe the candidate packages and write the pinned package list.

For every name in candidates.txt (minus the held-out names in heldout.txt) this resolves the
current `latest` version on the npm registry, downloads the tarball into the cache, checks the
licence and runs the same file filters as build_corpus.py.  Packages whose tarball still holds at
least --min-kb of source after filtering are written to packages.txt as `name@version`, with a
comment saying how much TS / JS source they ship.  Run once when (re)choosing the list; the
committed packages.txt is what build_corpus.py uses, so the corpus does not drift with `latest`.

Usage:  python3 training/corpus/select_packages.py [--min-kb 8] [--write]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_corpus as bc  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", default=os.path.join(bc.HERE, "candidates.txt"))
    ap.add_argument("--heldout", default=os.path.join(bc.HERE, "heldout.txt"))
    ap.add_argument("--out", default=os.path.join(bc.HERE, "packages.txt"))
    ap.add_argument("--min-kb", type=float, default=8.0)
    ap.add_argument("--max-pkg-mb", type=float, default=2.0)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--write", action="store_true", help="write packages.txt (otherwise only report)")
    args = ap.parse_args()

    held = {n for n, _ in bc.read_list(args.heldout)} if os.path.exists(args.heldout) else set()
    names = []
    for n, _ in bc.read_list(args.candidates):
        if n not in names and n not in held:
            names.append(n)
    t0 = time.time()

    def probe(n):
        rec, kept, drops = bc.process_package(n, None, int(args.max_pkg_mb * (1 << 20)))
        if kept is not None:
            code = [f for f in kept if f["kind"] in ("code", "decl")]
            rec["ts_kb"] = sum(len(f["text"]) for f in code
                              if f["kind"] == "code" and f["path"].lower().endswith(bc.TS_EXTS)) / 1024
            rec["js_kb"] = sum(len(f["text"]) for f in code if f["path"].lower().endswith(bc.JS_EXTS)) / 1024
            rec["decl_kb"] = sum(len(f["text"]) for f in code if f["kind"] == "decl") / 1024
            rec["drops"] = dict(drops)
        return rec

    rows = []
    with ThreadPoolExecutor(max(1, min(16, args.jobs))) as ex:
        for i, rec in enumerate(ex.map(probe, names)):
            rows.append(rec)
            if rec.get("status") == "dropped":
                print(f"[{i + 1}/{len(names)}] {rec['name']}: {rec['reason']}", flush=True)
            else:
                print(f"[{i + 1}/{len(names)}] {rec['name']}@{rec['version']} {rec['licence']} "
                      f"ts={rec['ts_kb']:.0f}KB js={rec['js_kb']:.0f}KB decl={rec['decl_kb']:.0f}KB", flush=True)
    os.makedirs(bc.DATA, exist_ok=True)
    with open(os.path.join(bc.DATA, "selection.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    good = [r for r in rows if r.get("status") != "dropped"
            and r["ts_kb"] + r["js_kb"] + r["decl_kb"] >= args.min_kb]
    print(f"\n{len(good)}/{len(rows)} packages pass; TS {sum(r['ts_kb'] for r in good) / 1024:.1f} MB, "
          f"JS {sum(r['js_kb'] for r in good) / 1024:.1f} MB, decl {sum(r['decl_kb'] for r in good) / 1024:.1f} MB "
          f"(before dedupe) in {time.time() - t0:.0f}s")
    if args.write:
        with open(args.out, "w") as f:
            f.write("# Training packages for the Glance corpus, pinned (name@version).  Written by\n"
                    "# select_packages.py from candidates.txt; edit by hand only to pin/unpin.  Packages\n"
                    "# also listed in heldout.txt are refused by build_corpus.py.\n")
            for r in good:
                f.write(f"{r['name']}@{r['version']}  # {r['licence']}; ts {r['ts_kb']:.0f} KB, "
                        f"js {r['js_kb']:.0f} KB, d.ts {r['decl_kb']:.0f} KB\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
