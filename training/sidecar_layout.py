"""The sidecar's repository layout (sidecar/src/context/layout.ts) in Python, for evaluation: which of a package's
other files the sidecar puts before the active one when they do not all fit, and in what order.

The same import pattern, identifier set and relevance score (Jaccard similarity of identifier sets times
SIMILARITY_WEIGHT, imports of the active text, same folder, shared path depth, a mild preference for small files; no
edit recency here), the least relevant files cut first, the kept ones in path order. No torch: eval.py and
context_recall.py both use it.
"""

from __future__ import annotations

import math
import posixpath
import re

SIMILARITY_WEIGHT = 5000.0   # as layout.ts
IDENTIFIER_SCAN_CHARS = 65536   # as layout.ts: identifier sets are read from a file's first characters

IMPORT_RE = re.compile(r"""(?:import|export)[^'"`;]*?from\s*['"]([^'"]+)['"]|require\(\s*['"]([^'"]+)['"]\s*\)"""
                       r"""|import\(\s*['"]([^'"]+)['"]\s*\)""")
SOURCE_EXT_RE = re.compile(r"\.(d\.ts|tsx?|jsx?|mjs|cjs|mts|cts)$")
IDENTIFIER_RE = re.compile(r"[A-Za-z_$][\w$]*")
KEYWORDS = frozenset("""abstract any as async await boolean break case catch class const constructor continue debugger
declare default delete do else enum export extends false finally for from function get if implements import in infer
instanceof interface is keyof let module namespace never new null number object of package private protected public
readonly require return set static string super switch symbol this throw true try type typeof undefined unique unknown
var void while with yield""".split())


def dirname(p: str) -> str:
    return posixpath.dirname(p) or "."       # as node's path.posix.dirname


def imported_paths(path: str, text: str) -> set[str]:
    """Paths (without extension) of the relative imports of a TS/JS text, resolved against its folder."""
    out = set()
    d = dirname(path)
    for m in IMPORT_RE.finditer(text):
        spec = m.group(1) or m.group(2) or m.group(3)
        if not spec or not spec.startswith("."):
            continue
        resolved = posixpath.normpath(posixpath.join(d, spec))
        out.add(SOURCE_EXT_RE.sub("", resolved))
        out.add(f"{resolved}/index")
    return out


def identifier_set(text: str, limit: int | None = IDENTIFIER_SCAN_CHARS) -> set[str]:
    """Words of two or more characters that are not TS / JS keywords, in the first `limit` characters (None: all)."""
    scanned = text if limit is None else text[:limit]
    return {w for w in IDENTIFIER_RE.findall(scanned) if len(w) > 1 and w not in KEYWORDS}


def jaccard(a: set[str], b: set[str]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def _common_depth(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("/"), b.split("/")):
        if x != y:
            break
        n += 1
    return n


def layout_order(others: list[dict], active_path: str, visible_text: str, room: float,
                 size=lambda f: len(f["ids"]), weight: float = SIMILARITY_WEIGHT) -> list[dict]:
    """The files of `others` ({"path", "text", ...}) that the sidecar keeps within `room` (measured by `size`), in
    layout order. `visible_text` is what the editor holds of the active document (never the text to be predicted)."""
    imports = imported_paths(active_path, visible_text)
    active_dir = dirname(active_path)
    active_ids = identifier_set(visible_text) if weight else set()

    def score(f):
        d = dirname(f["path"])
        s = (100 * (SOURCE_EXT_RE.sub("", f["path"]) in imports) + 40 * (d == active_dir)
             + 5 * _common_depth(d, active_dir) - math.log10(1 + len(f["text"])))
        if weight:
            ids = f.get("identifiers")
            if ids is None:
                ids = f["identifiers"] = identifier_set(f["text"])
            s += weight * jaccard(active_ids, ids)
        return s

    total = sum(size(f) for f in others)
    drop = set()
    for f in sorted(others, key=score):                 # stable, as Array.prototype.sort
        if total <= room:
            break
        drop.add(f["path"])
        total -= size(f)
    return sorted((f for f in others if f["path"] not in drop), key=lambda f: f["path"])
