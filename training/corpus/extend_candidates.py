#!/usr/bin/env python3
"""Propose new candidate package names for the corpus, without asking the registry.

Names come from two local sources only:
  * the dependencies / devDependencies / peerDependencies of the packages already in packages.txt
    (read from their cached tarballs in training/data/cache/tarballs), and
  * a dated list of npm names with monthly downloads and summaries (--npm-list, a TSV with the
    columns name, version, downloads_a_month, summary), for popularity and the "TypeScript" hint.

Names already in candidates.txt or heldout.txt and `@types/*` are skipped.  Order: dependencies of
chosen packages, then names whose summary says TypeScript / typed, then the most downloaded others,
each group by downloads (at least --min-downloads a month), until --count names.  The output is a
plain name list for `select_packages.py --candidates FILE` (which probes each one).

Usage:  python3 training/corpus/extend_candidates.py --npm-list npm.tsv --count 4500 --out new.txt
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_corpus as bc  # noqa: E402

TS_HINT = re.compile(r"typescript|\btyped\b|type-safe|typesafe|\bts\b", re.I)


def read_npm_list(path: str) -> dict[str, tuple[int, str]]:
    out = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:3] != ["name", "version", "downloads_a_month"]:
            raise SystemExit(f"{path}: expected columns name, version, downloads_a_month, summary; got {header}")
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 3:
                continue
            try:
                d = int(p[2] or 0)
            except ValueError:
                d = 0
            out[p[0]] = (d, p[3] if len(p) > 3 else "")
    return out


def dependencies_of_chosen(packages_txt: str) -> set[str]:
    names = set()
    for n, v in bc.read_list(packages_txt):
        path = os.path.join(bc.CACHE, "tarballs", f"{bc._safe(n)}-{v}.tgz")
        if not os.path.exists(path):
            continue
        try:
            with tarfile.open(path, "r:gz") as t:
                for m in t:
                    if m.isfile() and m.name.count("/") == 1 and m.name.endswith("/package.json"):
                        pkg = json.load(t.extractfile(m))
                        break
                else:
                    continue
        except Exception:  # noqa: BLE001  (a broken tarball only loses its dependency names)
            continue
        for key in ("dependencies", "devDependencies", "peerDependencies"):
            deps = pkg.get(key)
            if isinstance(deps, dict):
                names.update(deps)
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npm-list", required=True)
    ap.add_argument("--count", type=int, default=4500)
    ap.add_argument("--min-downloads", type=int, default=1000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not os.path.exists(args.npm_list):
        raise SystemExit(f"--npm-list {args.npm_list}: no such file")
    known = {n for n, _ in bc.read_list(os.path.join(bc.HERE, "candidates.txt"))}
    known |= {n for n, _ in bc.read_list(os.path.join(bc.HERE, "heldout.txt"))}
    known |= {n for n, _ in bc.read_list(os.path.join(bc.HERE, "packages.txt"))}
    listed = read_npm_list(args.npm_list)

    def fresh(n):
        return n in listed and n not in known and not n.startswith("@types/") and listed[n][0] >= args.min_downloads

    deps = {n for n in dependencies_of_chosen(os.path.join(bc.HERE, "packages.txt")) if fresh(n)}
    by_dl = sorted((n for n in listed if fresh(n)), key=lambda n: -listed[n][0])
    ts = [n for n in by_dl if n not in deps and TS_HINT.search(listed[n][1])]
    others = [n for n in by_dl if n not in deps and not TS_HINT.search(listed[n][1])]
    groups = [("dependencies of chosen packages", sorted(deps, key=lambda n: -listed[n][0])),
              ("summary says TypeScript / typed", ts), ("most downloaded others", others)]
    chosen = []
    with open(args.out, "w") as f:
        for title, names in groups:
            take = names[: max(0, args.count - len(chosen))]
            if not take:
                continue
            f.write(f"# --- {title} ({len(take)} names, >= {listed[take[-1]][0]} downloads a month)\n")
            f.write("".join(n + "\n" for n in take))
            chosen += take
            print(f"{title}: {len(take)} of {len(names)}")
    print(f"wrote {len(chosen)} names to {args.out}")


if __name__ == "__main__":
    main()
