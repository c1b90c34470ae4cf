"""Glance corpus -> training sequences (numpy + `tokenizers` only; no torch).

Reads the token shards described in training/corpus/FORMAT.md and builds fixed-length, repository-level sequences:

* A document is one package: `<|repo_name|>NAME\\n <|file_sep|>PATH\\nTEXT ... <|endoftext|>`.
* Pieces: a document that fits in a sequence is one piece. A longer one is cut into pieces that fill a sequence
  exactly; the next piece restarts at the last `<|file_sep|>` inside the previous one (that one file is seen twice,
  once cut and once whole) unless that would repeat more than half a sequence (one huge file: plain cut). Every
  continuation piece gets the package's header `<|repo_name|>NAME\\n` again, so each piece looks like a (partial)
  repository that starts at a file boundary.
* Packing: pieces are packed first-fit into sequences of `seq_len` tokens (whole pieces only, so every sequence starts
  at a package boundary or a file boundary of a continued package); the rest of a sequence is `<|pad|>` with label
  -100. Training packs pieces in a per-epoch shuffled package order and shuffles the sequences; held-out packs in
  list order, unshuffled.
* FIM (training only, rate `fim_rate` per piece): one complete file of the piece is chosen, split at character
  positions into prefix/middle/suffix, re-encoded and moved to the END of the piece as

      <|file_sep|>PATH\\n<|fim_prefix|>PREFIX<|fim_suffix|>SUFFIX<|fim_middle|>MIDDLE<|endoftext|>      (PSM)
      <|file_sep|>PATH\\n<|fim_prefix|><|fim_suffix|>SUFFIX<|fim_middle|>PREFIX MIDDLE<|endoftext|>      (SPM)

  (repository-level, FORMAT.md); the other files of the piece stay before it as context. SPM (rate `spm_rate` of
  the FIM examples; the "SPM variant" of Bavarian et al. 2022, as StarCoder and Code Llama train it) puts the
  suffix first, so the middle directly continues the prefix: easier to learn for a small model, and an editor that
  types at the cursor only ever appends to the prompt (the cached prefix stays valid). Split modes
  (`split_fim`): 35% one whole line (the middle without its final newline: the single-line eval case), 15% 2-3
  whole lines, 20% from a random position inside a line to the end of that line (or of up to 2 more lines), 30% two
  uniform character positions.
  If the re-encoded piece is longer than the room left in the sequence, context files are trimmed from the front
  (after the header); if that is not enough the piece stays plain.

Every sequence is a pure function of (seed, epoch, index), so a run resumes exactly from a saved position.
"""

from __future__ import annotations

import io
import json
import lzma
import os
from typing import Iterator, Optional

import numpy as np

EOT, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD, REPO_NAME, FILE_SEP, IM_START, IM_END, PAD = range(10)
SPECIALS = {"<|endoftext|>": EOT, "<|fim_prefix|>": FIM_PREFIX, "<|fim_middle|>": FIM_MIDDLE,
            "<|fim_suffix|>": FIM_SUFFIX, "<|fim_pad|>": FIM_PAD, "<|repo_name|>": REPO_NAME,
            "<|file_sep|>": FILE_SEP, "<|im_start|>": IM_START, "<|im_end|>": IM_END, "<|pad|>": PAD}


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------

def load_index(shard_dir: str) -> dict:
    with open(os.path.join(shard_dir, "index.json")) as f:
        index = json.load(f)
    got = index.get("special_tokens", {})
    for k, v in SPECIALS.items():
        if got.get(k, v) != v:
            raise ValueError(f"shards use {k}={got[k]}, the trainer expects {v} (FORMAT.md)")
    return index


def load_split(shard_dir: str, split: str) -> tuple[np.ndarray, list[tuple[str, int, int]], dict]:
    """(tokens uint16 [N], docs [(name, start, length)] in stream order, index.json). Documents split across shards
    (4th field = offset in document) are joined: the shards concatenate to the full stream."""
    index = load_index(shard_dir)
    sp = index["splits"][split]
    arrays, docs, off = [], [], 0
    for sh in sp["shards"]:
        with open(os.path.join(shard_dir, sh["file"]), "rb") as f:
            a = np.load(io.BytesIO(lzma.decompress(f.read())))
        if a.dtype != np.uint16 or a.size != sh["tokens"]:
            raise ValueError(f"{sh['file']}: dtype {a.dtype}, {a.size} tokens; index says uint16, {sh['tokens']}")
        for d in sh["documents"]:
            name, start, length = d[0], int(d[1]), int(d[2])
            in_doc = int(d[3]) if len(d) > 3 else 0
            if in_doc > 0:
                pname, pstart, plen = docs[-1]
                if pname != name or pstart + plen != off + start or plen != in_doc:
                    raise ValueError(f"bad continuation of document {name} in {sh['file']}")
                docs[-1] = (name, pstart, plen + length)
            else:
                docs.append((name, off + start, length))
        arrays.append(a)
        off += a.size
    tokens = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    for name, s, n in docs[:3] + docs[-3:]:
        if tokens[s] != REPO_NAME or tokens[s + n - 1] != EOT:
            raise ValueError(f"document {name} does not start with <|repo_name|> / end with <|endoftext|>")
    return tokens, docs, index


def load_tokenizer(path: str):
    from tokenizers import Tokenizer
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    return Tokenizer.from_file(path)


# ---------------------------------------------------------------------------------------------------------------
# Corpus: documents -> pieces -> packed sequences
# ---------------------------------------------------------------------------------------------------------------

class Corpus:
    def __init__(self, shard_dir: str, split: str, seq_len: int, overlap: Optional[bool] = None):
        self.split, self.seq_len = split, seq_len
        self.overlap = (split == "train") if overlap is None else overlap   # held-out: no token counted twice
        self.tokens, self.docs, self.index = load_split(shard_dir, split)
        fs_all = np.flatnonzero(self.tokens == FILE_SEP)
        self.doc_fs: list[np.ndarray] = []     # positions of <|file_sep|> relative to the document start
        self.doc_hdr: list[int] = []           # header length (<|repo_name|>NAME\n), tokens before the first file
        for _, s, n in self.docs:
            lo, hi = np.searchsorted(fs_all, [s, s + n])
            rel = (fs_all[lo:hi] - s).astype(np.int64)
            self.doc_fs.append(rel)
            self.doc_hdr.append(int(rel[0]) if rel.size else 0)
        self.pieces = self._make_pieces()
        self.doc_pieces: list[list[int]] = [[] for _ in self.docs]
        for i, p in enumerate(self.pieces):
            self.doc_pieces[p[0]].append(i)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)

    def _make_pieces(self) -> list[tuple[int, int, int, bool, bool]]:
        """(doc, start, end, with_header, clean_end): tokens doc[start:end], preceded by the header when with_header;
        clean_end = the piece ends at a file boundary or at the document end (its last file is complete)."""
        S = self.seq_len
        out = []
        for d, (_, s, n) in enumerate(self.docs):
            fs, hl = self.doc_fs[d], self.doc_hdr[d]
            bounds = np.concatenate([fs, [n]])
            pos, first = 0, True
            while pos < n:
                use_hdr = (not first) and hl > 0
                cap = S - (hl if use_hdr else 0)
                if cap < 64:
                    raise ValueError(f"sequence length {S} too short for header of {self.docs[d][0]}")
                limit = pos + cap
                if limit >= n:
                    end, nxt, clean = n, n, True
                else:
                    # Fill the sequence completely; the next piece restarts at the last file boundary inside this
                    # one (that file is repeated whole there) unless that would repeat more than half a sequence.
                    end, clean = limit, False
                    j = np.searchsorted(bounds, limit, side="right") - 1     # largest boundary <= limit
                    nxt = int(bounds[j]) if (self.overlap and j >= 0 and bounds[j] > pos + cap // 2) else limit
                    clean = bool(j >= 0 and bounds[j] == limit)
                    if not self.overlap and j >= 0 and bounds[j] > pos:       # held-out: cut at a file boundary
                        end = nxt = int(bounds[j])
                        clean = True
                out.append((d, pos, end, use_hdr, clean))
                pos, first = nxt, False
        return out

    def piece_len(self, p) -> int:
        d, a, b, hdr, _ = p
        return (b - a) + (self.doc_hdr[d] if hdr else 0)

    def piece_tokens(self, p) -> np.ndarray:
        d, a, b, hdr, _ = p
        s = self.docs[d][1]
        body = self.tokens[s + a: s + b]
        if hdr:
            return np.concatenate([self.tokens[s: s + self.doc_hdr[d]], body])
        return body

    def pack(self, order: Optional[np.ndarray] = None, window: int = 64) -> list[list[int]]:
        """First-fit packing of whole pieces (documents in `order`, pieces in document order) into bins of seq_len.
        Returns bins as lists of piece ids, in closing order."""
        S = self.seq_len
        docs = range(len(self.docs)) if order is None else order
        open_bins: list[list] = []         # [room, [piece ids]]
        closed: list[list[int]] = []
        for d in docs:
            for pi in self.doc_pieces[int(d)]:
                n = self.piece_len(self.pieces[pi])
                for b in open_bins:
                    if b[0] >= n:
                        b[0] -= n
                        b[1].append(pi)
                        break
                else:
                    b = [S - n, [pi]]
                    open_bins.append(b)
                    if len(open_bins) > window:
                        closed.append(open_bins.pop(0)[1])
                if b[0] < 32:
                    open_bins.remove(b)
                    closed.append(b[1])
        closed.extend(b[1] for b in open_bins)
        return closed


# ---------------------------------------------------------------------------------------------------------------
# FIM
# ---------------------------------------------------------------------------------------------------------------

def _line_starts(text: str) -> list[int]:
    starts, i = [0], text.find("\n")
    while i >= 0 and i + 1 < len(text):
        starts.append(i + 1)
        i = text.find("\n", i + 1)
    return starts


def split_fim(content: str, rng: np.random.Generator) -> tuple[str, str, str]:
    """Split one file into (prefix, middle, suffix) at character positions. The eval (and an editor's inline
    completion) asks for one whole line or the rest of a line, so those get most of the mass:
    35% one whole line (middle without its newline, suffix starting with it: exactly the eval's single-line case),
    15% 2-3 whole lines, 20% from a random position inside a line to its end (sometimes 1-2 more lines),
    30% two uniform character positions (arbitrary spans keep the format general)."""
    n = len(content)
    r = rng.random()
    if r < 0.3:                                                         # two uniform character positions
        i, j = sorted(int(x) for x in rng.integers(0, n + 1, size=2))
    elif r < 0.8:                                                       # 1 (70%) or 2-3 (30%) whole lines
        starts = _line_starts(content)
        li = int(rng.integers(0, len(starts)))
        extra = 0 if r < 0.65 else int(rng.choice([1, 2]))
        lj = min(len(starts) - 1, li + extra)
        i = starts[li]
        j = content.find("\n", starts[lj])
        j = n if j < 0 else j
    else:                                                               # inside a line -> end of (a later) line
        i = int(rng.integers(0, n))
        j = content.find("\n", i)
        j = n if j < 0 else j
        for _ in range(int(rng.choice([0, 0, 0, 1, 2]))):
            if j >= n:
                break
            k = content.find("\n", j + 1)
            j = n if k < 0 else k
    return content[:i], content[i:j], content[j:]


def fim_prompt(path_ids: list[int], prefix_ids: list[int], suffix_ids: list[int], spm: bool) -> list[int]:
    """A file's FIM block up to where the middle starts (the prompt), in PSM or SPM order."""
    head = [FILE_SEP] + list(path_ids)
    if spm:
        return head + [FIM_PREFIX, FIM_SUFFIX] + list(suffix_ids) + [FIM_MIDDLE] + list(prefix_ids)
    return head + [FIM_PREFIX] + list(prefix_ids) + [FIM_SUFFIX] + list(suffix_ids) + [FIM_MIDDLE]


class FimMaker:
    def __init__(self, tokenizer, spm_rate: float = 0.0):
        self.tok = tokenizer
        self.spm_rate = float(spm_rate)

    def enc(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids if text else []

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def fim_block(self, path: str, prefix: str, middle: str, suffix: str, spm: bool = False) -> list[int]:
        # prefix and middle encoded apart, as at inference (the prompt ends where the middle starts)
        return fim_prompt(self.enc(path + "\n"), self.enc(prefix), self.enc(suffix), spm) + self.enc(middle) + [EOT]

    def transform(self, toks: np.ndarray, hdr_len: int, clean_end: bool, rng: np.random.Generator,
                  max_len: int) -> Optional[np.ndarray]:
        """FIM one complete file of the piece `toks` (starting with its header) and move it to the end. None if the
        piece has no suitable file or the result cannot fit in max_len tokens."""
        fs = np.flatnonzero(toks == FILE_SEP)
        if fs.size == 0:
            return None
        # The document's closing EOT is dropped (the FIM block brings its own); an earlier FIM block keeps its EOT,
        # which ends that block's middle.
        end = toks.size - (1 if toks[-1] == EOT and not np.any(toks == FIM_PREFIX) else 0)
        bounds = np.concatenate([fs, [end]])
        nblocks = fs.size if clean_end else fs.size - 1
        if nblocks <= 0:
            return None
        for bi in rng.permutation(nblocks)[:4]:
            a, b = int(bounds[bi]), int(bounds[bi + 1])
            if np.any(toks[a:b] == FIM_PREFIX):    # already a FIM block (several FIMs per piece)
                continue
            text = self.decode(toks[a + 1: b])
            nl = text.find("\n")
            if nl < 0 or len(text) - nl < 24 or "\ufffd" in text:
                continue
            path, content = text[:nl], text[nl + 1:]
            prefix, middle, suffix = split_fim(content, rng)
            spm = self.spm_rate > 0 and rng.random() < self.spm_rate
            block = np.asarray(self.fim_block(path, prefix, middle, suffix, spm), dtype=np.int64)
            ctx = np.concatenate([toks[:a], toks[b:end]]).astype(np.int64)
            over = ctx.size + block.size - max_len
            if over > 0:
                tail = (end - int(fs[-1])) if not clean_end else 0     # the cut last file ends ctx
                if tail > over + 16:                       # shorten the already-cut last file
                    ctx = ctx[: ctx.size - over]
                else:                                      # drop context from the front, at a file start if cheap
                    if ctx.size - hdr_len < over:
                        return None
                    cut = hdr_len + over
                    nf = np.flatnonzero(ctx[cut:] == FILE_SEP)
                    if nf.size and nf[0] <= 512:
                        cut += int(nf[0])
                    ctx = np.concatenate([ctx[:hdr_len], ctx[cut:]])
            return np.concatenate([ctx, block])
        return None


# ---------------------------------------------------------------------------------------------------------------
# Sequence streams
# ---------------------------------------------------------------------------------------------------------------

def n_fim_piece(toks: np.ndarray) -> int:
    return int(np.count_nonzero(toks == FIM_PREFIX))


class SequenceStream:
    """Deterministic stream of (ids int64 [S], labels int64 [S]) for a corpus. Position = (epoch, index)."""

    def __init__(self, corpus: Corpus, seed: int = 0, fim_rate: float = 0.0, tokenizer=None, shuffle: bool = True,
                 fim_per_piece: int = 1, spm_rate: float = 0.0):
        self.c, self.seed, self.fim_rate, self.shuffle = corpus, seed, fim_rate, shuffle
        # up to this many files of one piece become FIM examples (each with probability fim_rate); more than one
        # gives the model many more FIM middles per token of training than the usual one per document
        self.fim_per_piece = max(1, int(fim_per_piece))
        self.fim = FimMaker(tokenizer, spm_rate) if (fim_rate > 0 and tokenizer is not None) else None
        if fim_rate > 0 and tokenizer is None:
            raise ValueError("FIM needs the tokenizer")
        self._bins: dict[int, list[list[int]]] = {}

    def bins(self, epoch: int) -> list[list[int]]:
        if epoch not in self._bins:
            if self.shuffle:
                rng = np.random.default_rng([self.seed, epoch, 1])
                bins = self.c.pack(rng.permutation(len(self.c.docs)))
                bins = [bins[i] for i in rng.permutation(len(bins))]
            else:
                bins = self.c.pack(None)
            self._bins = {e: b for e, b in self._bins.items() if e >= epoch - 1}   # keep two epochs
            self._bins[epoch] = bins
        return self._bins[epoch]

    def epoch_len(self, epoch: int = 0) -> int:
        return len(self.bins(epoch))

    def sequence(self, epoch: int, idx: int) -> tuple[np.ndarray, np.ndarray, dict]:
        S, c = self.c.seq_len, self.c
        pieces = [c.pieces[pi] for pi in self.bins(epoch)[idx]]
        parts = [c.piece_tokens(p).astype(np.int64) for p in pieces]
        room = S - sum(p.size for p in parts)
        n_fim = 0
        if self.fim is not None:
            rng = np.random.default_rng([self.seed, epoch, idx, 2])
            for k, p in enumerate(pieces):
                for _ in range(self.fim_per_piece):
                    if rng.random() >= self.fim_rate:
                        continue
                    # after the first FIM the piece ends with a FIM block, never a cut file
                    clean_end = bool(p[4]) or n_fim_piece(parts[k]) > 0
                    new = self.fim.transform(parts[k], c.doc_hdr[p[0]], clean_end, rng, parts[k].size + room)
                    if new is not None:
                        room -= new.size - parts[k].size
                        parts[k] = new
                        n_fim += 1
        ids = np.full(S, PAD, dtype=np.int64)
        seq = np.concatenate(parts)
        assert seq.size <= S, (seq.size, S)
        ids[: seq.size] = seq
        labels = ids.copy()
        labels[seq.size:] = -100
        return ids, labels, {"pieces": len(parts), "fim": n_fim, "tokens": int(seq.size)}

    def iterate(self, epoch: int, idx: int) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, dict, tuple]]:
        """Yields (epoch, idx, ids, labels, info, next_position) from the given position on, forever (epochs roll
        over)."""
        while True:
            n = self.epoch_len(epoch)
            while idx < n:
                ids, labels, info = self.sequence(epoch, idx)
                nxt = (epoch, idx + 1) if idx + 1 < n else (epoch + 1, 0)
                yield epoch, idx, ids, labels, info, nxt
                idx += 1
            epoch, idx = epoch + 1, 0


# ---------------------------------------------------------------------------------------------------------------
# Background workers (train.py)
# ---------------------------------------------------------------------------------------------------------------

def _positions(stream: SequenceStream, epoch: int, idx: int):
    """(epoch, idx) of every sequence from the given position on, in training order (epochs roll over)."""
    while True:
        n = stream.epoch_len(epoch)
        while idx < n:
            yield epoch, idx
            idx += 1
        epoch, idx = epoch + 1, 0


def _prefetch_worker(stream, epoch, idx, worker, workers, q, stop, rank=0, world=1):
    """Builds this rank's share of the sequences (data-parallel rank r of `world` takes the k-th sequence for
    k % world == r) and of that every `workers`-th one (j % workers == worker) into its own queue."""
    import queue as _queue
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        for k, (e, i) in enumerate(_positions(stream, epoch, idx)):
            if k % world != rank or (k // world) % workers != worker:
                continue
            ids, labels, info = stream.sequence(e, i)
            n = stream.epoch_len(e)
            item = (e, i, ids, labels, info, (e, i + 1) if i + 1 < n else (e + 1, 0))
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.5)
                    break
                except _queue.Full:
                    continue
            if stop.is_set():
                return
    except BaseException as e:  # surfaced in get()
        q.put(("error", repr(e)))


class Prefetcher:
    """Sequences in training order, built ahead by `workers` processes (FIM re-tokenisation is CPU work that one
    thread could not keep up with at ~26 sequences/s). Worker w builds the k-th sequence for k % workers == w;
    get() takes them round-robin, so the order is exactly that of stream.iterate(). With data parallelism (rank,
    world) each rank gets every world-th sequence: one optimizer step over all ranks consumes a contiguous block of
    the global order, so the position after a step is the largest next-position over the ranks."""

    def __init__(self, stream: SequenceStream, epoch: int, idx: int, workers: int = 6, depth: int = 8,
                 rank: int = 0, world: int = 1):
        import multiprocessing as mp
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # spawn, not fork: the trainer has CUDA (and its threads) up by now; the workers import only this module
        ctx = mp.get_context("spawn")
        self.workers = max(1, workers)
        self.stop = ctx.Event()
        self.qs = [ctx.Queue(maxsize=depth) for _ in range(self.workers)]
        self.procs = [ctx.Process(target=_prefetch_worker, args=(stream, epoch, idx, w, self.workers, self.qs[w],
                                                                 self.stop, rank, world), daemon=True)
                      for w in range(self.workers)]
        for p in self.procs:
            p.start()
        self.k = 0

    def get(self):
        import queue as _queue
        q = self.qs[self.k % self.workers]
        while True:
            try:
                item = q.get(timeout=5.0)
                break
            except _queue.Empty:
                dead = [p.pid for p in self.procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"data worker(s) {dead} exited")
        if len(item) == 2 and item[0] == "error":
            raise RuntimeError(f"data worker failed: {item[1]}")
        self.k += 1
        return item

    def close(self):
        self.stop.set()
        for p in self.procs:
            p.join(timeout=2.0)
            if p.is_alive():
                p.terminate()


# ---------------------------------------------------------------------------------------------------------------
# Held-out files (for eval.py)
# ---------------------------------------------------------------------------------------------------------------

def doc_files(corpus: Corpus, d: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(header tokens, [file block tokens, each starting with <|file_sep|>]) of document d."""
    _, s, n = corpus.docs[d]
    toks = corpus.tokens[s: s + n].astype(np.int64)
    fs = corpus.doc_fs[d]
    end = n - 1 if toks[-1] == EOT else n
    bounds = list(fs) + [end]
    return toks[: corpus.doc_hdr[d]], [toks[bounds[i]: bounds[i + 1]] for i in range(len(fs))]


if __name__ == "__main__":   # quick self-check: python3 training/glance_data.py [--data training/data/shards]
    import argparse
    import time
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "shards"))
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--seq-len", type=int, default=8192)
    ap.add_argument("--n", type=int, default=64)
    a = ap.parse_args()
    tokp = a.tokenizer or os.path.join(os.path.dirname(os.path.abspath(a.data)), "tokenizer")
    t0 = time.time()
    for split in ("train", "heldout"):
        c = Corpus(a.data, split, a.seq_len)
        st = SequenceStream(c, seed=0, fim_rate=0.5 if split == "train" else 0.0,
                            tokenizer=load_tokenizer(tokp), shuffle=split == "train")
        n = st.epoch_len(0)
        used = sum(sum(c.piece_len(c.pieces[p]) for p in b) for b in st.bins(0))
        print(f"{split}: {len(c.docs)} docs, {c.n_tokens} tokens, {len(c.pieces)} pieces, {n} sequences/epoch, "
              f"fill {used / (n * a.seq_len):.4f}, {time.time() - t0:.1f}s")
        tot_fim = tot_tok = 0
        t1 = time.time()
        for i in range(min(a.n, n)):
            ids, lab, info = st.sequence(0, i)
            assert ids.shape == (a.seq_len,) and ids.max() < c.index.get("vocab_size", 65536)
            tot_fim += info["fim"]
            tot_tok += info["tokens"]
        k = min(a.n, n)
        print(f"  {k} sequences in {time.time() - t1:.2f}s, fim pieces {tot_fim}, fill {tot_tok / (k * a.seq_len):.4f}")
