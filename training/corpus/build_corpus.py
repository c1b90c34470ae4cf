#!/usr/bin/env python3
"""Build the Glance TS/JS code corpus from published npm tarballs.

Stdlib + numpy only.  Reads the pinned package lists

    training/corpus/packages.txt   training packages   (name@version per line)
    training/corpus/heldout.txt    held-out packages   (name@version per line, never trained on)

downloads each tarball from the npm registry (cached under training/data/cache, sha1 + sha512
verified), keeps only permissively licensed packages, filters files (see FILTERS below and
FORMAT.md), deduplicates exactly (content hash) and approximately (MinHash LSH, Jaccard >= 0.85)
across the whole corpus -- held-out packages are processed first, and any training file that
duplicates a held-out file is dropped (decontamination) -- orders each package's files so that a
file's relative imports come before it, and writes

    training/data/train.jsonl.xz     one JSON object per package: {name, version, licence, files:[{path, text}]}
    training/data/heldout.jsonl.xz
    training/data/manifest.jsonl     one line per package: name, version, licence, tarball, shasum, split, status, counts
    training/corpus/SOURCES.md       committed summary (package, version, licence)

Usage:  python3 training/corpus/build_corpus.py [--jobs 4] [--limit N] [--max-pkg-mb 4]
"""
from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import io
import json
import lzma
import os
import posixpath
import re
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING = os.path.dirname(HERE)
DATA = os.path.join(TRAINING, "data")
CACHE = os.path.join(DATA, "cache")
REGISTRY = os.environ.get("NPM_REGISTRY", "https://registry.npmjs.org").rstrip("/")
USER_AGENT = "glance-corpus-builder/1.0 (+npm tarball fetcher; polite, cached)"

# The special-token strings of the Glance tokenizer.  A file that contains one literally is dropped
# (it would otherwise be encoded as a control token).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>", "<|pad|>",
]

# ----------------------------------------------------------------------------------------------
# Licences
# ----------------------------------------------------------------------------------------------
ALLOWED_LICENCES = {"MIT", "ISC", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "0BSD"}
_LICENCE_ALIASES = {
    "MIT": "MIT", "MIT LICENSE": "MIT", "MIT/X11": "MIT", "EXPAT": "MIT",
    "ISC": "ISC",
    "BSD-2-CLAUSE": "BSD-2-Clause", "BSD 2-CLAUSE": "BSD-2-Clause", "FREEBSD": "BSD-2-Clause",
    "BSD-3-CLAUSE": "BSD-3-Clause", "BSD 3-CLAUSE": "BSD-3-Clause", "NEW BSD": "BSD-3-Clause",
    "BSD": "BSD-3-Clause",
    "APACHE-2.0": "Apache-2.0", "APACHE 2.0": "Apache-2.0", "APACHE2": "Apache-2.0",
    "APACHE-2": "Apache-2.0", "APACHE LICENSE 2.0": "Apache-2.0", "APACHE LICENSE, VERSION 2.0": "Apache-2.0",
    "0BSD": "0BSD",
}


def _norm_licence_id(tok: str) -> str:
    t = tok.strip().strip("()").strip()
    return _LICENCE_ALIASES.get(t.upper(), t)


def licence_of(pkg: dict) -> tuple[str, bool]:
    """Return (licence string as declared, allowed?).  SPDX: OR -> any allowed, AND -> all allowed."""
    lic = pkg.get("license")
    if isinstance(lic, dict):
        lic = lic.get("type")
    if not lic and isinstance(pkg.get("licenses"), list) and pkg["licenses"]:
        types = [l.get("type") if isinstance(l, dict) else str(l) for l in pkg["licenses"]]
        lic = " OR ".join(t for t in types if t)
    if not lic or not isinstance(lic, str):
        return ("UNKNOWN", False)
    expr = lic.strip()
    if re.search(r"\bWITH\b", expr, re.I) or expr.upper().startswith("SEE LICEN"):
        return (expr, False)

    def ok(e: str) -> bool:
        e = e.strip()
        while e.startswith("(") and e.endswith(")"):
            e = e[1:-1].strip()
        # split on top-level OR first, then AND (SPDX precedence: AND binds tighter)
        parts, depth, cur = [], 0, ""
        for tok in re.split(r"(\(|\)|\s+OR\s+)", e, flags=re.I):
            if tok == "(":
                depth += 1
            elif tok == ")":
                depth -= 1
            if depth == 0 and re.fullmatch(r"\s+OR\s+", tok or "", re.I):
                parts.append(cur)
                cur = ""
            else:
                cur += tok or ""
        parts.append(cur)
        if len(parts) > 1:
            return any(ok(p) for p in parts)
        ands = re.split(r"\s+AND\s+", e, flags=re.I)
        if len(ands) > 1:
            return all(ok(p) for p in ands)
        return _norm_licence_id(e) in ALLOWED_LICENCES

    return (expr, ok(expr))


# ----------------------------------------------------------------------------------------------
# Registry access (polite: retries with backoff, everything cached on disk)
# ----------------------------------------------------------------------------------------------
def _http_get(url: str, timeout: float = 60.0, tries: int = 5) -> bytes:
    delay = 1.0
    for attempt in range(tries):
        try:
            req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            if e.code == 404 or attempt == tries - 1:
                raise
        except Exception:
            if attempt == tries - 1:
                raise
        time.sleep(delay)
        delay *= 2
    raise RuntimeError("unreachable")


def _safe(name: str) -> str:
    return name.replace("/", "__").replace("@", "")


def npm_meta(name: str, version: str | None = None) -> dict:
    """Version metadata (the registry's per-version document).  Pinned versions are cached."""
    ver = version or "latest"
    path = os.path.join(CACHE, "meta", f"{_safe(name)}@{ver}.json")
    if version and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    url = f"{REGISTRY}/{urllib.parse.quote(name, safe='@')}/{urllib.parse.quote(ver)}"
    meta = json.loads(_http_get(url))
    slim = {k: meta.get(k) for k in ("name", "version", "license", "licenses", "dist")}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pinned = os.path.join(CACHE, "meta", f"{_safe(name)}@{meta['version']}.json")
    with open(pinned + ".tmp", "w") as f:
        json.dump(slim, f)
    os.replace(pinned + ".tmp", pinned)
    return slim


def fetch_tarball(meta: dict) -> str:
    """Download (or reuse) the tarball; verify shasum (sha1) and integrity (sha512)."""
    dist = meta["dist"]
    path = os.path.join(CACHE, "tarballs", f"{_safe(meta['name'])}-{meta['version']}.tgz")
    if os.path.exists(path):
        return path
    data = _http_get(dist["tarball"], timeout=300)
    if dist.get("shasum") and hashlib.sha1(data).hexdigest() != dist["shasum"]:
        raise ValueError(f"sha1 mismatch for {meta['name']}@{meta['version']}")
    integ = dist.get("integrity") or ""
    if integ.startswith("sha512-"):
        if base64.b64encode(hashlib.sha512(data).digest()).decode() != integ[7:]:
            raise ValueError(f"sha512 mismatch for {meta['name']}@{meta['version']}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
    return path


def read_tarball(path: str, max_member: int = 4 << 20) -> dict[str, bytes]:
    """Regular files of an npm tarball, first path component ('package/') stripped."""
    out: dict[str, bytes] = {}
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            if not m.isfile() or m.size > max_member:
                if m.isfile():
                    out[m.name.split("/", 1)[-1]] = b""  # too big: recorded as empty, dropped later
                continue
            rel = m.name.split("/", 1)[1] if "/" in m.name else m.name
            rel = posixpath.normpath(rel).lstrip("/")
            if rel.startswith(".."):
                continue
            f = tf.extractfile(m)
            if f is not None:
                out[rel] = f.read()
    return out


# ----------------------------------------------------------------------------------------------
# File filters
# ----------------------------------------------------------------------------------------------
CODE_EXTS = (".ts", ".tsx", ".mts", ".cts", ".js", ".jsx", ".mjs", ".cjs")
TS_EXTS = (".ts", ".tsx", ".mts", ".cts")
JS_EXTS = (".js", ".jsx", ".mjs", ".cjs")
DECL_RE = re.compile(r"\.d\.(ts|mts|cts|tsx)$")
# whole directories that never hold hand-written sources
DROP_DIRS = {"dist", "build", "umd", "node_modules", "coverage", "min", "bundle", "bundles", "_bundles",
             "fesm2015", "fesm2020", "fesm2022", "esm5", "esm2015", "esm2020", "esm2022", "out-tsc",
             "vendor", "vendors", "third_party", "third-party", ".cache", "bower_components", "__snapshots__"}
DROP_DIR_PREFIXES = ("dist-", "dist.", "build-", "build.", "_dist", "lib-dist")
# directories that hold compiled copies when a package also ships its sources
OUTPUT_DIRS = {"lib", "esm", "cjs", "es", "es6", "module", "modules", "commonjs", "mjs", "node", "browser", "_esm",
               "_cjs", "_types", "legacy", "out", "types", "typings", "lib.esm", "lib.commonjs", "esnext",
               "es2015", "es2017", "es2018", "es2019", "es2020", "es2022", "mod", "deno", "web", "worker"}
# when the same module exists in several of these, keep the highest priority (lowest number)
VARIANT_PRIORITY = {"src": 0, "source": 0, "": 1, "esm": 2, "es": 2, "es6": 2, "module": 2, "mjs": 2, "_esm": 2,
                    "esnext": 2, "lib": 3, "lib.esm": 3, "mod": 3, "node": 4, "browser": 5, "web": 5, "legacy": 6,
                    "cjs": 7, "commonjs": 7, "_cjs": 7, "lib.commonjs": 7}
GENERATED_MARKERS = (
    "__webpack_require__", "/******/", "webpackBootstrap", "Object.defineProperty(exports, \"__esModule\"",
    "Object.defineProperty(exports, '__esModule'", "exports.__esModule = true", "_interopRequireDefault(",
    "function _classCallCheck(", "var __awaiter = (this && this.__awaiter)", "var __importDefault = (this",
    "__createBinding = (this", "System.register(", "define.amd",
)
GENERATED_HEADER_RE = re.compile(r"@generated|do not edit|auto-?generated|generated by|this file is generated",
                                 re.I)
SOURCEMAP_RE = re.compile(r"^\s*(//|/\*)[#@]\s*sourceMappingURL=", re.M)
IMPORT_RES = [
    re.compile(r"""\bfrom\s*['"](\.{1,2}/[^'"\n]*|\.{1,2})['"]"""),
    re.compile(r"""\bimport\s*\(?\s*['"](\.{1,2}/[^'"\n]*|\.{1,2})['"]"""),
    re.compile(r"""\brequire\s*\(\s*['"](\.{1,2}/[^'"\n]*|\.{1,2})['"]\s*\)"""),
]
MAX_FILE_BYTES = 200 * 1024
MIN_STUB_BYTES = 160   # code files shorter than this are "stubs" ...
MAX_STUBS_PER_PKG = 100  # ... and at most this many are kept per package (core-js has thousands)
MAX_DECL_BYTES_PER_PKG = 256 << 10  # type-only packages (kept .d.ts) get at most 256 KiB
MAX_README_BYTES = 48 * 1024
MAX_PKGJSON_BYTES = 24 * 1024
MAX_DOC_BYTES_PER_PKG = 64 * 1024   # other .md / .json files together
MAX_DOC_FILE_BYTES = 24 * 1024
SKIP_DOC_RE = re.compile(r"(^|/)(package-lock\.json|yarn\.lock|pnpm-lock\.yaml|npm-shrinkwrap\.json|"
                         r"changelog[^/]*|history[^/]*|releases?\.md|licen[cs]e[^/]*|copying[^/]*|"
                         r"[^/]*\.map|[^/]*\.tsbuildinfo|code_of_conduct\.md|security\.md|contributing\.md)$", re.I)


def _dirs(path: str) -> list[str]:
    return path.split("/")[:-1]


def _in_drop_dir(path: str) -> bool:
    for d in _dirs(path):
        dl = d.lower()
        if dl in DROP_DIRS or dl.startswith(DROP_DIR_PREFIXES):
            return True
    return False


def _variant(path: str) -> tuple[str, str]:
    """(variant dir, key) -- key identifies 'the same module' across esm/ cjs/ lib/ src/ copies."""
    parts = path.split("/")
    variant, rest = "", []
    for i, p in enumerate(parts[:-1]):
        pl = p.lower()
        if not variant and (pl in OUTPUT_DIRS or pl in ("src", "source")):
            variant = pl
            continue
        rest.append(p)
    base = parts[-1]
    stem = re.sub(r"\.(d\.)?(ts|tsx|mts|cts|js|jsx|mjs|cjs)$", "", base)
    return variant, "/".join(rest + [stem])


def text_stats_reason(text: str, is_code: bool) -> str | None:
    """Return a drop reason for minified/generated/binary-looking text, else None."""
    if "\x00" in text:
        return "binary"
    n = len(text)
    if n == 0 or not text.strip():
        return "empty"
    lines = text.split("\n")
    if max(len(l) for l in lines) > 1000:
        return "long_line"
    if n / max(1, len(lines)) > 200:
        return "long_avg_line"
    alnum = sum(1 for c in text if c.isalnum())
    if alnum / n < 0.20:
        return "low_alnum"
    for t in SPECIAL_TOKENS:
        if t in text:
            return "special_token_literal"
    if is_code:
        if SOURCEMAP_RE.search(text):
            return "sourcemap"
        head = text[:3000]
        if any(m in head for m in GENERATED_MARKERS) or "__webpack_require__" in text:
            return "generated"
        if GENERATED_HEADER_RE.search(text[:400]) or GENERATED_HEADER_RE.search(leading_comments(text)):
            return "generated"
    return None


def leading_comments(text: str, limit: int = 3000) -> str:
    """The comment blocks (and blank lines) a file opens with, up to `limit` chars: SDK generators put their
    "auto generated" note after a long API description or a licence block, past the first 400 chars."""
    i, n = 0, min(len(text), limit)
    while i < n:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif text.startswith("//", i) or (i == 0 and text.startswith("#!")):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        else:
            break
    return text[:min(i, n)]


def select_files(files: dict[str, bytes], max_pkg_bytes: int) -> tuple[list[dict], collections.Counter, dict]:
    """Pick the files of one package that go into the corpus.

    Returns (kept [{path, text, kind}], drop reasons Counter, info dict).
    kind: 'code' | 'decl' | 'doc'.
    """
    drops: collections.Counter = collections.Counter()
    cand = {}
    for path, raw in files.items():
        low = path.lower()
        base = low.rsplit("/", 1)[-1]
        is_decl = bool(DECL_RE.search(low))
        is_code = low.endswith(CODE_EXTS) and not is_decl
        is_doc = (low == "package.json" or (base.startswith("readme") and low.endswith(".md") and "/" not in low)
                  or low.endswith((".md", ".json")))
        if not (is_code or is_decl or is_doc):
            drops["other_ext"] += 1
            continue
        if _in_drop_dir(path):
            drops["build_dir"] += 1
            continue
        if ".min." in base or base.endswith(("-min.js", ".bundle.js", ".umd.js", ".production.js", ".iife.js")):
            drops["minified_name"] += 1
            continue
        if len(raw) > MAX_FILE_BYTES or len(raw) == 0:
            drops["too_big" if raw else "too_big_or_empty"] += 1
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            drops["not_utf8"] += 1
            continue
        text = text.lstrip("\ufeff").replace("\r\n", "\n")
        kind = "code" if is_code else "decl" if is_decl else "doc"
        cand[path] = (text, kind)

    ts_src = [p for p, (t, k) in cand.items() if k == "code" and p.lower().endswith(TS_EXTS)]
    ts_bytes = sum(len(cand[p][0]) for p in ts_src)
    has_ts = ts_bytes >= 2048
    ts_stems = {_variant(p)[1] for p in ts_src}
    decl_dirs_stems = {p[: -len(DECL_RE.search(p.lower()).group(0))] for p, (t, k) in cand.items() if k == "decl"}

    # variant dedupe for JS copies (esm/ vs cjs/ vs lib/ ...)
    best_variant: dict[str, tuple[int, str]] = {}
    for p, (t, k) in cand.items():
        if k != "code" or not p.lower().endswith(JS_EXTS):
            continue
        v, key = _variant(p)
        pr = VARIANT_PRIORITY.get(v, 5)
        if p.lower().endswith(".cjs"):
            pr += 0.5
        if key not in best_variant or (pr, p) < best_variant[key]:
            best_variant[key] = (pr, p)

    kept, doc_bytes = [], 0
    have_code = False
    staged = []
    for p in sorted(cand):
        text, kind = cand[p]
        low = p.lower()
        if kind == "code" and low.endswith(JS_EXTS):
            v, key = _variant(p)
            if has_ts:
                stem_noext = p[: p.rfind(".")]
                if any(d.lower() in OUTPUT_DIRS for d in _dirs(p)):
                    drops["compiled_copy"] += 1
                    continue
                if stem_noext in decl_dirs_stems or key in ts_stems:
                    drops["compiled_copy"] += 1
                    continue
            elif best_variant.get(key, (0, p))[1] != p:
                drops["variant_dup"] += 1
                continue
        if kind == "code" and has_ts and low.endswith(TS_EXTS):
            pass
        reason = text_stats_reason(text, kind in ("code", "decl"))
        if reason:
            drops[reason] += 1
            continue
        staged.append((p, text, kind))
        if kind == "code":
            have_code = True

    # when a package is over the cap, its sources (src/, source/, lib/) win over root files, and those
    # over examples/tests/docs; tiny stub files (re-export one-liners) are capped per package
    def cap_rank(item):
        first = item[0].split("/", 1)[0].lower() if "/" in item[0] else ""
        return (0 if first in ("src", "source", "lib") else 1 if first == "" else 2, item[0])

    code_bytes, stubs = 0, 0
    for p, text, kind in sorted(staged, key=cap_rank):
        low = p.lower()
        if kind == "decl" and (has_ts or have_code):
            # declarations are compiled output when sources are shipped; kept only for type-only packages
            drops["decl_with_sources"] += 1
            continue
        if kind == "doc":
            if low == "package.json":
                if len(text) > MAX_PKGJSON_BYTES:
                    drops["doc_too_big"] += 1
                    continue
            elif "/" not in low and low.startswith("readme") and low.endswith(".md"):
                if len(text) > MAX_README_BYTES:
                    drops["doc_too_big"] += 1
                    continue
            else:
                if SKIP_DOC_RE.search(low) or any(d.lower() in OUTPUT_DIRS for d in _dirs(p)):
                    drops["doc_skipped"] += 1
                    continue
                if len(text) > MAX_DOC_FILE_BYTES or doc_bytes + len(text) > MAX_DOC_BYTES_PER_PKG:
                    drops["doc_cap"] += 1
                    continue
                doc_bytes += len(text)
        else:
            if len(text.strip()) < MIN_STUB_BYTES:
                stubs += 1
                if stubs > MAX_STUBS_PER_PKG:
                    drops["stub_cap"] += 1
                    continue
            cap = max_pkg_bytes if kind == "code" else min(max_pkg_bytes, MAX_DECL_BYTES_PER_PKG)
            if code_bytes + len(text) > cap:
                drops["pkg_cap"] += 1
                continue
            code_bytes += len(text)
        kept.append({"path": p, "text": text, "kind": kind})
    info = {"has_ts": has_ts, "ts_bytes": ts_bytes, "code_bytes": code_bytes}
    return kept, drops, info


# ----------------------------------------------------------------------------------------------
# Ordering: package.json, README first; then code with relative imports before importers
# ----------------------------------------------------------------------------------------------
def _resolve(from_path: str, spec: str, paths: set[str]) -> str | None:
    base = posixpath.normpath(posixpath.join(posixpath.dirname(from_path), spec))
    cands = [base]
    root, ext = posixpath.splitext(base)
    if ext in (".js", ".jsx", ".mjs", ".cjs"):
        swap = {".js": (".ts", ".tsx"), ".jsx": (".tsx",), ".mjs": (".mts",), ".cjs": (".cts",)}[ext]
        cands += [root + e for e in swap]
    cands += [base + e for e in CODE_EXTS] + [base + "/index" + e for e in CODE_EXTS]
    for c in cands:
        if c in paths:
            return c
    return None


def order_files(kept: list[dict]) -> list[dict]:
    by_path = {f["path"]: f for f in kept}
    head = [p for p in ("package.json",) if p in by_path]
    head += sorted(p for p in by_path if "/" not in p and p.lower().startswith("readme") and p.lower().endswith(".md"))
    rest = sorted(p for p in by_path if p not in head)
    code_paths = {p for p in rest if by_path[p]["kind"] in ("code", "decl")}
    deps: dict[str, list[str]] = {}
    for p in rest:
        if p not in code_paths:
            deps[p] = []
            continue
        text = by_path[p]["text"]
        ds = []
        for rx in IMPORT_RES:
            for m in rx.finditer(text):
                r = _resolve(p, m.group(1), code_paths)
                if r and r != p and r not in ds:
                    ds.append(r)
        deps[p] = sorted(ds)
    order, state = [], {}
    for root in rest:  # iterative DFS post-order; cycles broken by path order
        if root in state:
            continue
        stack = [(root, iter(deps[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next((d for d in it if d not in state), None)
            if nxt is None:
                stack.pop()
                state[node] = 2
                order.append(node)
            else:
                state[nxt] = 1
                stack.append((nxt, iter(deps[nxt])))
    return [by_path[p] for p in head + order]


# ----------------------------------------------------------------------------------------------
# Dedupe: exact (sha1 of text) + MinHash LSH (5-gram token shingles, 64 perms, 8 bands x 8 rows)
# ----------------------------------------------------------------------------------------------
_TOKEN_RE = re.compile(r"[A-Za-z0-9_$]+|[^\sA-Za-z0-9_$]")
_M61 = np.uint64((1 << 61) - 1)


class Deduper:
    def __init__(self, num_perm=64, bands=8, threshold=0.85, shingle=5, seed=1234):
        assert num_perm % bands == 0
        self.num_perm, self.bands, self.rows = num_perm, bands, num_perm // bands
        self.threshold, self.shingle = threshold, shingle
        rng = np.random.RandomState(seed)
        self.a = (rng.randint(1, 1 << 31, size=num_perm).astype(np.uint64) << np.uint64(16)) | np.uint64(1)
        self.b = rng.randint(0, 1 << 31, size=num_perm).astype(np.uint64)
        self.exact: dict[str, str] = {}
        self.tables = [collections.defaultdict(list) for _ in range(bands)]
        self.sigs: list[np.ndarray] = []
        self.owners: list[str] = []
        self.tok_cache: dict[str, int] = {}

    def signature(self, text: str) -> np.ndarray | None:
        toks = _TOKEN_RE.findall(text)
        if len(toks) < self.shingle + 15:
            return None
        cache = self.tok_cache
        ids = np.fromiter((cache.get(t) if t in cache else cache.setdefault(t, zlib.crc32(t.encode())) for t in toks),
                          dtype=np.uint64, count=len(toks))
        n = len(ids) - self.shingle + 1
        h = np.zeros(n, dtype=np.uint64)
        for j in range(self.shingle):  # polynomial hash of the 5-gram (wrapping uint64)
            h = h * np.uint64(1000003) + ids[j: j + n]
        h = np.unique(h)
        # multiply-shift hashing, 64 functions, min over shingles (chunked to bound memory)
        sig = np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        for s in range(0, len(h), 1 << 15):
            blk = h[s: s + (1 << 15)]
            v = (blk[:, None] * self.a[None, :] + self.b[None, :]) >> np.uint64(20)
            sig = np.minimum(sig, v.min(axis=0))
        return sig

    def check_add(self, text: str, owner: str) -> tuple[str, str] | None:
        """(kind, owner of the kept twin) if text duplicates a kept file ('exact'/'near'), else register it."""
        hx = hashlib.sha1(text.encode("utf-8")).hexdigest()
        if hx in self.exact:
            return ("exact", self.exact[hx])
        sig = self.signature(text)
        if sig is not None:
            keys = [sig[i * self.rows:(i + 1) * self.rows].tobytes() for i in range(self.bands)]
            seen = set()
            for bi, k in enumerate(keys):
                for idx in self.tables[bi].get(k, ()):
                    if idx in seen:
                        continue
                    seen.add(idx)
                    if float(np.mean(self.sigs[idx] == sig)) >= self.threshold:
                        return ("near", self.owners[idx])
            idx = len(self.sigs)
            self.sigs.append(sig)
            self.owners.append(owner)
            for bi, k in enumerate(keys):
                self.tables[bi][k].append(idx)
        self.exact[hx] = owner
        return None


# ----------------------------------------------------------------------------------------------
# Package lists
# ----------------------------------------------------------------------------------------------
def read_list(path: str) -> list[tuple[str, str | None]]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            at = line.rfind("@")
            if at > 0:
                out.append((line[:at], line[at + 1:]))
            else:
                out.append((line, None))
    return out


def process_package(name, version, max_pkg_bytes):
    """Download + licence + file selection for one package.  Returns a dict (no dedupe yet)."""
    rec = {"name": name, "version": version}
    try:
        meta = npm_meta(name, version)
    except Exception as e:  # noqa: BLE001
        rec.update(status="dropped", reason=f"meta_error: {e}")
        return rec, None, None
    rec.update(version=meta["version"], tarball=meta["dist"]["tarball"], shasum=meta["dist"].get("shasum"),
               integrity=meta["dist"].get("integrity"))
    try:
        tpath = fetch_tarball(meta)
        files = read_tarball(tpath)
    except Exception as e:  # noqa: BLE001
        rec.update(status="dropped", reason=f"download_error: {e}")
        return rec, None, None
    with open(tpath, "rb") as f:
        rec["sha256"] = hashlib.sha256(f.read()).hexdigest()
    try:
        pkg = json.loads(files.get("package.json", b"{}").decode("utf-8", "replace"))
    except Exception:  # noqa: BLE001
        pkg = {}
    if not pkg:
        pkg = meta
    lic, ok = licence_of(pkg)
    rec["licence"] = lic
    if not ok:
        rec.update(status="dropped", reason="licence")
        return rec, None, None
    kept, drops, info = select_files(files, max_pkg_bytes)
    rec.update(info)
    rec["files_in_tarball"] = len(files)
    return rec, kept, drops


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packages", default=os.path.join(HERE, "packages.txt"))
    ap.add_argument("--heldout", default=os.path.join(HERE, "heldout.txt"))
    ap.add_argument("--out", default=DATA)
    ap.add_argument("--jobs", type=int, default=4, help="concurrent downloads (<= 4)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N training packages (smoke runs)")
    ap.add_argument("--max-pkg-mb", type=float, default=0.9, help="cap on code bytes kept per package")
    ap.add_argument("--min-code-kb", type=float, default=4.0, help="drop packages with less code than this")
    ap.add_argument("--sources-md", default=os.path.join(HERE, "SOURCES.md"))
    args = ap.parse_args(argv)
    jobs = max(1, min(4, args.jobs))
    max_pkg = int(args.max_pkg_mb * (1 << 20))

    held = read_list(args.heldout)
    train = read_list(args.packages)
    held_names = {n for n, _ in held}
    if args.limit:
        train = train[: args.limit]
    work = [("heldout", n, v) for n, v in held] + [("train", n, v) for n, v in train]
    os.makedirs(args.out, exist_ok=True)

    t0 = time.time()
    # prefetch metadata + tarballs (<= 4 concurrent), then process sequentially in list order
    def prefetch(item):
        split, n, v = item
        if split == "train" and n in held_names:
            return
        try:
            fetch_tarball(npm_meta(n, v))
        except Exception:  # noqa: BLE001  (reported later by process_package)
            pass

    with ThreadPoolExecutor(jobs) as ex:
        for i, _ in enumerate(ex.map(prefetch, work)):
            if (i + 1) % 50 == 0:
                print(f"  fetched {i + 1}/{len(work)} ({time.time() - t0:.0f}s)", flush=True)

    dd = Deduper()
    pkg_status = collections.Counter()
    file_drops = collections.Counter()
    dedupe = collections.Counter()
    totals = {"train": collections.Counter(), "heldout": collections.Counter()}
    outs = {s: lzma.open(os.path.join(args.out, f"{s}.jsonl.xz.tmp"), "wt", encoding="utf-8", preset=6)
            for s in ("train", "heldout")}
    manifest = open(os.path.join(args.out, "manifest.jsonl.tmp"), "w")
    sources = []
    kept_mb = 0.0
    for i, (split, n, v) in enumerate(work):
        if split == "train" and n in held_names:
            rec = {"name": n, "version": v, "split": split, "status": "dropped", "reason": "in_heldout_list"}
            pkg_status["dropped:in_heldout_list"] += 1
            manifest.write(json.dumps(rec) + "\n")
            continue
        rec, kept, drops = process_package(n, v, max_pkg)
        rec["split"] = split
        if kept is None:
            pkg_status[f"dropped:{rec['reason'].split(':')[0]}"] += 1
            manifest.write(json.dumps(rec) + "\n")
            print(f"[{i + 1}/{len(work)}] {n}: DROPPED ({rec['reason']})", flush=True)
            continue
        file_drops.update(drops)
        final = []
        for f in kept:
            d = dd.check_add(f["text"], f"{split}\t{n}\t{f['path']}")
            if d:
                kind, owner = d
                if split == "train" and owner.startswith("heldout\t"):
                    kind += "_of_heldout"  # decontamination: training file duplicates a held-out file
                dedupe[f"{split}:{kind}"] += 1
                file_drops[f"dedupe_{kind}"] += 1
                continue
            final.append(f)
        code_bytes = sum(len(f["text"]) for f in final if f["kind"] in ("code", "decl"))
        if code_bytes < args.min_code_kb * 1024:
            rec.update(status="dropped", reason="too_little_code", kept_code_bytes=code_bytes)
            pkg_status["dropped:too_little_code"] += 1
            manifest.write(json.dumps(rec) + "\n")
            print(f"[{i + 1}/{len(work)}] {n}: DROPPED (too little code after filters: {code_bytes} B)", flush=True)
            continue
        ordered = order_files(final)
        nbytes = sum(len(f["text"].encode("utf-8")) for f in ordered)
        obj = {"name": n, "version": rec["version"], "licence": rec["licence"],
               "files": [{"path": f["path"], "text": f["text"]} for f in ordered]}
        outs[split].write(json.dumps(obj, ensure_ascii=False) + "\n")
        rec.update(status="kept", kept_files=len(ordered), kept_bytes=nbytes, kept_code_bytes=code_bytes)
        manifest.write(json.dumps(rec) + "\n")
        pkg_status[f"kept:{split}"] += 1
        t = totals[split]
        t["packages"] += 1
        t["files"] += len(ordered)
        t["bytes"] += nbytes
        t["code_bytes"] += code_bytes
        for f in ordered:
            ext = f["path"].rsplit(".", 1)[-1].lower() if f["kind"] == "code" else f["kind"]
            t[f"bytes_{ext}"] += len(f["text"].encode("utf-8"))
        kept_mb += nbytes / 1e6
        sources.append((split, n, rec["version"], rec["licence"], len(ordered), nbytes))
        print(f"[{i + 1}/{len(work)}] {n}@{rec['version']} ({split}) {len(ordered)} files, "
              f"{nbytes / 1024:.0f} KB; total kept {kept_mb:.1f} MB ({time.time() - t0:.0f}s)", flush=True)
    for s, fh in outs.items():
        fh.close()
        os.replace(os.path.join(args.out, f"{s}.jsonl.xz.tmp"), os.path.join(args.out, f"{s}.jsonl.xz"))
    manifest.close()
    os.replace(os.path.join(args.out, "manifest.jsonl.tmp"), os.path.join(args.out, "manifest.jsonl"))

    # SOURCES.md (committed): generated, deterministic given the lists
    with open(args.sources_md, "w") as f:
        f.write("# Corpus sources\n\nGenerated by `training/corpus/build_corpus.py` -- do not edit by hand.\n"
                "Every package below was downloaded from the npm registry at the pinned version; only MIT, ISC, "
                "BSD-2-Clause, BSD-3-Clause, Apache-2.0 and 0BSD packages are kept.\n\n")
        for split in ("train", "heldout"):
            rows = [r for r in sources if r[0] == split]
            f.write(f"## {split} ({len(rows)} packages, {sum(r[5] for r in rows) / 1e6:.1f} MB kept)\n\n"
                    "| package | version | licence | files | KB kept |\n|---|---|---|---:|---:|\n")
            for _, n, v, lic, nf, nb in sorted(rows):
                f.write(f"| {n} | {v} | {lic} | {nf} | {nb / 1024:.0f} |\n")
            f.write("\n")

    # summary
    print("\n================ corpus summary ================")
    print(f"{'packages':<40}{'count':>10}")
    for k, c in sorted(pkg_status.items()):
        print(f"  {k:<38}{c:>10}")
    print(f"{'files dropped by reason':<40}{'count':>10}")
    for k, c in file_drops.most_common():
        print(f"  {k:<38}{c:>10}")
    print(f"{'dedupe (split:kind)':<40}{'count':>10}")
    for k, c in sorted(dedupe.items()):
        print(f"  {k:<38}{c:>10}")
    for s in ("train", "heldout"):
        t = totals[s]
        print(f"{s}: {t['packages']} packages, {t['files']} files, {t['bytes'] / 1e6:.2f} MB "
              f"(code {t['code_bytes'] / 1e6:.2f} MB)")
        exts = {k[6:]: v for k, v in t.items() if k.startswith("bytes_")}
        print("   by kind: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sorted(exts.items(), key=lambda x: -x[1])))
    for s in ("train", "heldout"):
        p = os.path.join(args.out, f"{s}.jsonl.xz")
        print(f"{p}: {os.path.getsize(p) / 1e6:.2f} MB compressed")
    print(f"done in {time.time() - t0:.0f}s")
    with open(os.path.join(args.out, "corpus_summary.json"), "w") as f:
        json.dump({"packages": pkg_status, "file_drops": file_drops, "dedupe": dedupe, "totals": totals}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
