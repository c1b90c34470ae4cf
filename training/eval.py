#!/usr/bin/env python3
"""Evaluate an exported Glance model (FP8 or bf16 HF directory) on the held-out packages. Runs on the GPU host.

    python3 training/eval.py --model models/glance-tiny --data training/data/shards [--out FILE.json]
        [--ref-out reference_logits.json] [--cases 300] [--seed 0] [--ctx 8192] [--fim-attn sparse|dense|both]

The checkpoint is loaded by dequantising it into the PyTorch model (glance_model.model.load_hf), then:

(a) held-out loss / perplexity over every held-out sequence (packed as in training, no FIM, no token counted twice),
    with dense attention and with the indexer's top-k (DSA); ratio sparse/dense (goal <= 1.02).
(b) on held-out TypeScript files (.ts/.tsx/.mts/.cts, no declaration files), `--cases` sampled (file uniformly, then
    a line with >= 4 non-blank characters incl. an alphanumeric one; fixed seed), greedy decoding with a KV cache:
    * FIM single-line: prefix = text before the line, suffix = "\\n" + text after it, middle = the line; prompt
      `<|repo_name|>NAME\\n [other files] <|file_sep|>PATH\\n<|fim_prefix|>..<|fim_suffix|>..<|fim_middle|>`; the
      prediction is the text generated before the first newline / special token.
    * next-line: prompt = the file up to the end of the previous line (without its newline); the model must
      write "\\n" + the line; prediction = the generated text between the first and second newline.
    each with the current file only and with the repository in context (the package's other files in layout order
    before it, FORMAT.md, truncated from the front so that prompt + --max-new fits --ctx). SPM FIM and next-line
    also run with the repository as the sidecar lays it out (`*_layout`, sidecar_layout.py mirroring
    sidecar/src/context/layout.ts): whole files only, the least relevant cut first (relevance: identifiers shared
    with the visible text of the file, its imports, same folder, shared path depth, small files), the kept ones in
    path order. Exact match compares the lines with leading/trailing whitespace
    stripped (`em`); `em_raw` compares them verbatim.
(c) --ref-out (default: next to --out, else ./reference_logits.json): for 3 fixed id sequences (a TypeScript prompt,
    a FIM prompt, and 320 tokens of held-out text, longer than index_topk so the top-k really selects), the logits
    computed in fp32 on the CPU from the exported weights, dense and sparse: the last position's full logits
    (base64 float32 little-endian) and the top-5 ids/logits at every position.

A KV-cache decoder (written here, mirroring model.py) is checked against the full forward first (fp32, dense and
sparse, prompt longer than index_topk); the differences are reported. Prints a markdown table of every number.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
import time

T_START = time.time()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import glance_data as gd  # noqa: E402
import sidecar_layout as sl  # noqa: E402
from glance_model.model import (_index_chunk, count_parameters, load_hf, rope_half,  # noqa: E402
                                rope_interleaved)

TS_EXT = (".ts", ".tsx", ".mts", ".cts")
DECL_EXT = (".d.ts", ".d.mts", ".d.cts")


def log(*a):
    print(f"[eval {time.time() - T_START:7.1f}s]", *a, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# KV-cache forward (same math as model.py's full forward; rows attend to cached keys)
# ---------------------------------------------------------------------------------------------------------------

class Cache:
    def __init__(self, n_layers: int):
        self.k = [None] * n_layers     # [B, H, T, Dqk]  MHA-form keys (nope from kv_b | shared rope)
        self.v = [None] * n_layers     # [B, H, T, Dv]
        self.ik = [None] * n_layers    # [B, T, D_I]     indexer keys, fp32
        self.len = 0


def _cat(old, new, dim):
    return new if old is None else torch.cat([old, new], dim=dim)


def _indexer_cached(ix, x, q_resid, cos, sin, cache, li, causal, chunk=1024):
    B, S, _ = x.shape
    H, D, R = ix.n_heads, ix.head_dim, ix.rope_dim
    q = ix.wq_b(q_resid).view(B, S, H, D)
    q_rot, q_pass = q.split([R, D - R], dim=-1)
    k = ix.k_norm(ix.wk(x))
    k_rot, k_pass = k.split([R, D - R], dim=-1)
    q = torch.cat([rope_half(q_rot, cos[None, :, None, :], sin[None, :, None, :]), q_pass], dim=-1).float()
    k = torch.cat([rope_half(k_rot, cos[None], sin[None]), k_pass], dim=-1).float()
    with torch.autocast(device_type=x.device.type, enabled=False):
        w = F.linear(x.float(), ix.weights_proj.weight.float()) * (H ** -0.5)
    K = cache.ik[li] = _cat(cache.ik[li], k, 1)
    rows = [_index_chunk(q[:, a:a + chunk], K, w[:, a:a + chunk], ix.softmax_scale) for a in range(0, S, chunk)]
    scores = torch.cat(rows, dim=1) if len(rows) > 1 else rows[0]
    return scores.masked_fill(~causal, float("-inf"))


_indexer_cached_impl = [_indexer_cached]     # swappable (check_cache spies on it)


def _attn_cached(at, x, cos, sin, cache, li, causal, sparse, p0):
    B, S, _ = x.shape
    H = at.num_heads
    q_resid = at.q_a_layernorm(at.q_a_proj(x))
    q = at.q_b_proj(q_resid).view(B, S, H, at.qk_head_dim).transpose(1, 2)
    q_pass, q_rot = q.split([at.nope, at.rope], dim=-1)
    kv = at.kv_a_proj_with_mqa(x)
    kv_pass, k_rot = kv.split([at.kv_lora, at.rope], dim=-1)
    c_kv = at.kv_a_layernorm(kv_pass)
    k_rot = k_rot.view(B, 1, S, at.rope)
    q_rot = rope_interleaved(q_rot, cos, sin)
    k_rot = rope_interleaved(k_rot, cos, sin)
    query = torch.cat([q_pass, q_rot], dim=-1)
    kvb = at.kv_b_proj(c_kv).view(B, S, H, at.nope + at.vdim).transpose(1, 2)
    k_nope, value = kvb.split([at.nope, at.vdim], dim=-1)
    key = torch.cat([k_nope, k_rot.expand(B, H, S, at.rope)], dim=-1)
    K = cache.k[li] = _cat(cache.k[li], key, 2)
    V = cache.v[li] = _cat(cache.v[li], value, 2)
    T = K.shape[2]
    mask = None
    if sparse:
        scores = _indexer_cached_impl[0](at.indexer, x, q_resid, cos, sin, cache, li, causal)
        if T > at.indexer.index_topk:
            top = scores.topk(at.indexer.index_topk, dim=-1).indices
            keep = torch.zeros(scores.shape, dtype=torch.bool, device=x.device).scatter_(-1, top, True) & causal
            mask = keep[:, None]
    if mask is not None:
        out = F.scaled_dot_product_attention(query, K, V.to(query.dtype), attn_mask=mask, scale=at.scaling)
    elif S == 1:
        out = F.scaled_dot_product_attention(query, K, V.to(query.dtype), scale=at.scaling)
    elif p0 == 0:
        out = F.scaled_dot_product_attention(query, K, V.to(query.dtype), is_causal=True, scale=at.scaling)
    else:
        out = F.scaled_dot_product_attention(query, K, V.to(query.dtype), attn_mask=causal[None, None],
                                             scale=at.scaling)
    return at.o_proj(out.transpose(1, 2).reshape(B, S, H * at.vdim))


@torch.no_grad()
def forward_cached(model, ids: torch.Tensor, cache: Cache, sparse: bool) -> torch.Tensor:
    """ids [B, S] new tokens after cache.len cached ones -> logits [B, S, V]."""
    B, S = ids.shape
    p0 = cache.len
    x = model.model.embed_tokens(ids)
    pos = torch.arange(p0, p0 + S, device=ids.device)
    cos, sin = model.model.rotary_emb(pos, x.dtype)
    causal = torch.arange(p0 + S, device=ids.device)[None, :] <= pos[:, None]      # [S, T]
    for li, layer in enumerate(model.model.layers):
        x = x + _attn_cached(layer.self_attn, layer.input_layernorm(x), cos, sin, cache, li, causal, sparse, p0)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    cache.len = p0 + S
    return model.lm_head(model.model.norm(x))


def _capture_indexer_scores(model):
    """Forward hooks that keep every layer's full-forward index scores [B, S, T]."""
    got, hooks = {}, []
    for i, layer in enumerate(model.model.layers):
        def hook(mod, inp, out, i=i):
            got[i] = out.detach().float().clone()
        hooks.append(layer.self_attn.indexer.register_forward_hook(hook))
    return got, hooks


def topk_margins(scores: dict, k: int) -> dict:
    """Per layer: rows with more than k candidates, the smallest gap between the k-th and (k+1)-th index score
    (relative to the row's max |score|), and how many rows tie exactly there (any top-k then is arbitrary)."""
    out = {}
    for li, sc in scores.items():
        s = sc[0]
        rows = [t for t in range(s.shape[0]) if t + 1 > k]
        if not rows:
            continue
        v = s[rows].sort(dim=-1, descending=True).values
        gap = (v[:, k - 1] - v[:, k]) / v[:, 0].abs().clamp_min(1e-30)
        out[str(li)] = dict(rows=len(rows), min_rel_gap=float(gap.min()), tied_rows=int((gap == 0).sum()))
    return out


@torch.no_grad()
def check_cache(model, ids: torch.Tensor, n_prefill: int) -> dict:
    """KV-cache decoder (prefill + one-token steps) vs the full forward, fp32 with TF32 off. Dense: logits must
    agree. Sparse: layer 0's index scores must agree (the same inputs); logits are reported too, but they may differ
    where a row's top-k is tied (e.g. several keys with index score exactly 0 after the ReLU) and the two paths
    break the tie differently."""
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    res = {}
    try:
        for sparse in (False, True):
            if sparse:
                full_scores, hooks = _capture_indexer_scores(model)
            full = model(ids, sparse=sparse).logits[0].float()
            if sparse:
                for h in hooks:
                    h.remove()
            inc_scores = []
            orig = _indexer_cached_impl[0]

            def spy(ix, x, q_resid, cos, sin, cache, li, causal, chunk=1024):
                r = orig(ix, x, q_resid, cos, sin, cache, li, causal, chunk)
                if li == 0:
                    inc_scores.append(r[0].float())
                return r

            _indexer_cached_impl[0] = spy
            try:
                cache = Cache(len(model.model.layers))
                parts = [forward_cached(model, ids[:, :n_prefill], cache, sparse)[0]]
                for t in range(n_prefill, ids.shape[1]):
                    parts.append(forward_cached(model, ids[:, t:t + 1], cache, sparse)[0])
            finally:
                _indexer_cached_impl[0] = orig
            inc = torch.cat(parts, 0).float()
            name = "sparse" if sparse else "dense"
            res[f"{name}_max_abs_diff"] = float((inc - full).abs().max())
            res[f"{name}_argmax_agree"] = float((inc.argmax(-1) == full.argmax(-1)).float().mean())
            if sparse:
                T = ids.shape[1]
                rows = torch.cat([F.pad(r, (0, T - r.shape[-1]), value=float("-inf")) for r in inc_scores])
                f0 = full_scores[0][0]
                fin = torch.isfinite(f0)
                res["indexer_scores_layer0_max_abs_diff"] = float((rows[fin] - f0[fin]).abs().max())
                res["indexer_scores_layer0_scale"] = float(f0[fin].abs().max())
                res["topk_margins"] = topk_margins(full_scores, model.config.index_topk)
        res["logits_scale"] = float(full.abs().max())
        res["tokens"] = int(ids.shape[1])
        res["prefill"] = n_prefill
        res["ok"] = bool(res["dense_max_abs_diff"] <= 1e-3 * max(1.0, res["logits_scale"])
                         and res["indexer_scores_layer0_max_abs_diff"] <= 1e-4 * max(1e-3, res["indexer_scores_layer0_scale"]))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    return res


# ---------------------------------------------------------------------------------------------------------------
# Completion tasks
# ---------------------------------------------------------------------------------------------------------------

class Completer:
    def __init__(self, model, tok, sparse: bool, max_new: int):
        self.model, self.tok, self.sparse, self.max_new = model, tok, sparse, max_new

    @torch.no_grad()
    def greedy(self, prompt: list[int], mode: str) -> tuple[str | None, str, int]:
        """mode 'line': stop at the first newline; 'next': expect "\\n" first, stop at the second newline.
        Returns (predicted line or None, raw text, new tokens)."""
        dev = next(self.model.parameters()).device
        cache = Cache(len(self.model.model.layers))
        # fp32: the cached decoder is checked against the full forward in fp32 (cache_check); bf16 autocast here
        # produced degenerate completions in the first run
        with torch.autocast(dev.type, enabled=False):
            logits = forward_cached(self.model, torch.tensor([prompt], device=dev), cache, self.sparse)[0, -1]
            out: list[int] = []
            text = ""
            for _ in range(self.max_new):
                nxt = int(logits.argmax())
                if nxt < 10:                      # any special token ends the completion
                    break
                out.append(nxt)
                text = self.tok.decode(out, skip_special_tokens=False)
                if mode == "line" and "\n" in text:
                    break
                if mode == "next" and ("\n" in text[1:] or (text and not text.startswith("\n"))):
                    break
                logits = forward_cached(self.model, torch.tensor([[nxt]], device=dev), cache, self.sparse)[0, -1]
        if mode == "line":
            return text.split("\n")[0], text, len(out)
        if not text.startswith("\n"):
            return None, text, len(out)
        return text[1:].split("\n")[0], text, len(out)


def heldout_ts_files(held: gd.Corpus, tok) -> list[dict]:
    files = []
    for d, (name, _, _) in enumerate(held.docs):
        hdr, blocks = gd.doc_files(held, d)
        for bi, blk in enumerate(blocks):
            text = tok.decode(blk[1:].tolist(), skip_special_tokens=False)
            nl = text.find("\n")
            if nl < 0:
                continue
            path, content = text[:nl], text[nl + 1:]
            if not path.endswith(TS_EXT) or path.endswith(DECL_EXT):
                continue
            lines = content.split("\n")
            starts = np.cumsum([0] + [len(x) + 1 for x in lines[:-1]])
            cands = [i for i in range(1, len(lines) - 1)
                     if len(lines[i].strip()) >= 4 and any(ch.isalnum() for ch in lines[i])]
            if cands:
                files.append(dict(doc=d, block=bi, name=name, path=path, content=content, lines=lines,
                                  starts=starts, cands=cands))
    return files


def sidecar_layout(pkg_files: list[dict], active_path: str, visible_text: str, room: int) -> list[int]:
    """Token ids of the other files as the sidecar lays them out within `room` tokens (whole files)."""
    others = [f for f in pkg_files if f["path"] != active_path]
    return [t for f in sl.layout_order(others, active_path, visible_text, room) for t in f["ids"]]


def package_files(held: gd.Corpus, tok, doc: int) -> list[dict]:
    """Every file block of a held-out package: path, text and its token ids (`<|file_sep|>path\\n` + text)."""
    _, blocks = gd.doc_files(held, doc)
    out = []
    for blk in blocks:
        text = tok.decode(blk[1:].tolist(), skip_special_tokens=False)
        nl = text.find("\n")
        out.append(dict(path=text[:nl] if nl >= 0 else text, text=text[nl + 1:] if nl >= 0 else "",
                        ids=blk.tolist()))
    return out


def sample_cases(files: list[dict], n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    seen, cases = set(), []
    tries = 0
    while len(cases) < n and tries < 50 * n:
        tries += 1
        fi = int(rng.integers(len(files)))
        f = files[fi]
        li = int(f["cands"][int(rng.integers(len(f["cands"])))])
        if (fi, li) in seen:
            continue
        seen.add((fi, li))
        cases.append(dict(file=fi, line=li))
    return cases


def build_prompts(held: gd.Corpus, fm: gd.FimMaker, f: dict, li: int, budget: int, pkg_files: list[dict]) -> dict:
    """Token prompts for one case: fim_file, fim_repo, spm_file, spm_repo, spm_layout, next_file, next_repo,
    next_layout."""
    content, start = f["content"], int(f["starts"][li])
    line = f["lines"][li]
    prefix, suffix = content[:start], content[start + len(line):]
    hdr, blocks = gd.doc_files(held, f["doc"])
    hdr = hdr.tolist()
    path_ids = fm.enc(f["path"] + "\n")
    # FIM block: <|file_sep|>path\n<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>
    P, Sx = fm.enc(prefix), fm.enc(suffix)
    room = budget - len(hdr) - len(path_ids) - 4
    if len(P) + len(Sx) > room:
        ns = min(len(Sx), max(room // 4, room - len(P)))
        Sx = Sx[:ns]
        P = P[len(P) - (room - ns):] if room - ns > 0 else []
    fim_block = gd.fim_prompt(path_ids, P, Sx, spm=False)
    spm_block = gd.fim_prompt(path_ids, P, Sx, spm=True)   # as glance_data trains it and the sidecar prompts
    # next-line block: <|file_sep|>path\n + text up to the end of the previous line
    nb = fm.enc(f["path"] + "\n" + content[:start - 1])
    room = budget - len(hdr) - 1
    if len(nb) > room:
        nb = nb[:len(path_ids)] + nb[len(nb) - (room - len(path_ids)):]
    next_block = [gd.FILE_SEP] + nb
    ctx = [t for bi, b in enumerate(blocks) if bi != f["block"] for t in b.tolist()]

    def with_repo(block):
        r = budget - len(hdr) - len(block)
        c = ctx[len(ctx) - r:] if 0 < r < len(ctx) else (ctx if r > 0 else [])
        return hdr + c + block, len(c)

    def with_layout(block, visible):   # visible: what the editor holds of the file (never the line to predict)
        c = sidecar_layout(pkg_files, f["path"], visible, budget - len(hdr) - len(block))
        return hdr + c + block, len(c)

    fim_repo, fim_ctx = with_repo(fim_block)
    spm_repo, _ = with_repo(spm_block)
    next_repo, next_ctx = with_repo(next_block)
    spm_layout, layout_ctx = with_layout(spm_block, prefix + suffix)
    next_layout, _ = with_layout(next_block, content[:start])
    return dict(fim_file=hdr + fim_block, fim_repo=fim_repo, spm_file=hdr + spm_block, spm_repo=spm_repo,
                spm_layout=spm_layout, next_file=hdr + next_block, next_repo=next_repo, next_layout=next_layout,
                target=line, ctx_tokens=dict(fim=fim_ctx, next=next_ctx, layout=layout_ctx),
                repo_ctx_available=len(ctx))


def run_tasks(model, tok, held, files, cases, ctx_len, max_new, sparse, deadline=None) -> dict:
    fm = gd.FimMaker(tok)
    comp = Completer(model, tok, sparse, max_new)
    budget = ctx_len - max_new
    keys = ("fim_file", "fim_repo", "spm_file", "spm_repo", "spm_layout", "next_file", "next_repo", "next_layout")
    hits = {k: 0 for k in keys}
    hits_raw = {k: 0 for k in keys}
    gen_tokens = 0
    examples = []
    ctx_used, layout_used = [], []
    pkg_cache: dict[int, list[dict]] = {}
    t0 = time.time()
    done = 0
    for ci, c in enumerate(cases):
        if deadline is not None and time.time() > deadline:
            log(f"  time limit: stopping after {ci} of {len(cases)} cases")
            break
        done = ci + 1
        f = files[c["file"]]
        if f["doc"] not in pkg_cache:
            pkg_cache[f["doc"]] = package_files(held, tok, f["doc"])
        pr = build_prompts(held, fm, f, c["line"], budget, pkg_cache[f["doc"]])
        tgt = pr["target"]
        ex = dict(package=f["name"], path=f["path"], line=c["line"] + 1, target=tgt,
                  repo_ctx_tokens=pr["ctx_tokens"])
        ctx_used.append(pr["ctx_tokens"]["fim"])
        layout_used.append(pr["ctx_tokens"]["layout"])
        for k in keys:
            pred, raw, n = comp.greedy(pr[k], "next" if k.startswith("next") else "line")
            gen_tokens += n
            ok = pred is not None and pred.strip() == tgt.strip()
            hits[k] += ok
            hits_raw[k] += pred is not None and pred == tgt
            ex[k] = pred
        if len(examples) < 40:
            examples.append(ex)
        if (ci + 1) % 25 == 0 or ci + 1 == len(cases):
            log(f"  {'sparse' if sparse else 'dense'} cases {ci + 1}/{len(cases)}: " + ", ".join(
                f"{k} {hits[k] / (ci + 1):.3f}" for k in keys) + f" ({time.time() - t0:.0f}s)")
    n = max(1, done)
    return summarise_tasks(dict(hits=hits, hits_raw=hits_raw, cases=done, cases_planned=len(cases),
                                ctx_sum=float(np.sum(ctx_used)) if ctx_used else 0.0,
                                layout_sum=float(np.sum(layout_used)) if layout_used else 0.0, generated_tokens=gen_tokens,
                                seconds=time.time() - t0, examples=examples))


def summarise_tasks(raw: dict) -> dict:
    """Rates from hit counts (one worker's, or several workers' summed by merge_tasks)."""
    n = max(1, raw["cases"])
    res = dict(raw)
    res.update({f"{k}_em": v / n for k, v in raw["hits"].items()})
    res.update({f"{k}_em_raw": v / n for k, v in raw["hits_raw"].items()})
    res["fim_repo_gain"] = res["fim_repo_em"] - res["fim_file_em"]
    if "spm_file" in raw["hits"]:
        res["spm_repo_gain"] = res["spm_repo_em"] - res["spm_file_em"]
    if "spm_layout" in raw["hits"]:
        res["spm_layout_gain"] = res["spm_layout_em"] - res["spm_file_em"]
        res["next_layout_gain"] = res["next_layout_em"] - res["next_file_em"]
        res["mean_layout_ctx_tokens"] = raw.get("layout_sum", 0.0) / n
    res["next_repo_gain"] = res["next_repo_em"] - res["next_file_em"]
    res["mean_repo_ctx_tokens"] = raw["ctx_sum"] / n
    return res


def merge_tasks(parts: list[dict]) -> dict:
    keys = parts[0]["hits"].keys()
    raw = dict(hits={k: sum(p["hits"][k] for p in parts) for k in keys},
               hits_raw={k: sum(p["hits_raw"][k] for p in parts) for k in keys},
               cases=sum(p["cases"] for p in parts), cases_planned=sum(p["cases_planned"] for p in parts),
               ctx_sum=sum(p["ctx_sum"] for p in parts), layout_sum=sum(p.get("layout_sum", 0.0) for p in parts),
               generated_tokens=sum(p["generated_tokens"] for p in parts),
               seconds=max(p["seconds"] for p in parts), workers=len(parts),
               examples=[e for p in parts for e in p["examples"]][:40])
    return summarise_tasks(raw)


def _task_worker(args: tuple) -> dict:
    """One process of --workers: its own model copy on the GPU, cases[worker::workers] (round-robin, so a time box
    cuts every worker's share about equally)."""
    model_dir, tok_path, data, seq_len, cases, ctx, max_new, sparse, deadline, worker, dev = args
    torch.set_num_threads(2)
    model = load_hf(model_dir, device=dev).eval()
    tok = gd.load_tokenizer(tok_path)
    held = gd.Corpus(data, "heldout", seq_len)
    files = heldout_ts_files(held, tok)
    return run_tasks(model, tok, held, files, cases, ctx, max_new, sparse, deadline)


# ---------------------------------------------------------------------------------------------------------------
# Reference logits for the engine's tests
# ---------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def reference_logits(model, tok, held: gd.Corpus | None, model_dir: str) -> dict:
    fm = gd.FimMaker(tok)
    s1 = tok.encode("<|repo_name|>demo\n<|file_sep|>src/isPalindrome.ts\n"
                    "export function isPalindrome(s: string): boolean {\n", add_special_tokens=False).ids
    s2 = ([gd.REPO_NAME] + fm.enc("demo\n") + [gd.FILE_SEP] + fm.enc("src/add.ts\n") + [gd.FIM_PREFIX]
          + fm.enc("export function add(a: number, b: number): number {\n") + [gd.FIM_SUFFIX] + fm.enc("\n}\n")
          + [gd.FIM_MIDDLE])
    if held is not None:
        _, s, _ = held.docs[0]
        s3 = held.tokens[s: s + 320].astype(np.int64).tolist()
        s3_name = f"heldout_{held.docs[0][0]}_first320"
    else:
        s3 = np.random.default_rng(0).integers(10, model.config.vocab_size, 320).tolist()
        s3_name = "random320"
    import copy
    cpu = copy.deepcopy(model).to("cpu").float()
    seqs = []
    for name, ids in (("ts_prompt", s1), ("fim_prompt", s2), (s3_name, s3)):
        rec = dict(name=name, ids=[int(i) for i in ids], length=len(ids))
        x = torch.tensor([ids])
        for mode in ("dense", "sparse"):
            if mode == "sparse":
                sc, hooks = _capture_indexer_scores(cpu)
            lg = cpu(x, sparse=mode == "sparse").logits[0].float()
            if mode == "sparse":
                for h in hooks:
                    h.remove()
                rec["topk_margins"] = topk_margins(sc, model.config.index_topk)
            top = lg.topk(5, dim=-1)
            rec[mode] = dict(
                last_logits_f32_b64=base64.b64encode(lg[-1].numpy().astype("<f4").tobytes()).decode(),
                last_argmax=int(lg[-1].argmax()), last_logsumexp=float(torch.logsumexp(lg[-1], -1)),
                top5_ids=top.indices.tolist(), top5_logits=[[round(float(v), 4) for v in r] for r in top.values])
        rec["sparse_differs"] = len(ids) > model.config.index_topk
        seqs.append(rec)
    return dict(model=os.path.abspath(model_dir), computed_with="PyTorch fp32 on CPU, weights dequantised from the "
                "export (w = fp8 * weight_scale_inv); glance_model.model full forward (no cache)",
                vocab_size=model.config.vocab_size, index_topk=model.config.index_topk,
                encoding="last_logits_f32_b64 = base64 of float32 little-endian [vocab]", sequences=seqs)


# ---------------------------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--ref-out", default=None)
    ap.add_argument("--tokenizer", default=None, help="default: the model folder's tokenizer.json")
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=8192, help="prompt + generation tokens")
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=8192, help="held-out loss sequence length")
    ap.add_argument("--heldout-seqs", type=int, default=0, help="0 = all held-out sequences")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--fim-attn", choices=["sparse", "dense", "both"], default="sparse")
    ap.add_argument("--skip-ref", action="store_true")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop sampling completion cases at this time from start (the table says how many ran)")
    ap.add_argument("--device", default=None, help="default cuda (cpu only for tests)")
    ap.add_argument("--workers", type=int, default=8,
                    help="processes sharing the GPU for the completion tasks (greedy decoding one token at a time is "
                         "bound by Python overhead, not the GPU); cases are split round-robin")
    a = ap.parse_args(argv)
    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type != "cuda":
        log(f"WARNING: running on {dev} (tests only)")
    torch.backends.cuda.matmul.allow_tf32 = True

    model = load_hf(a.model, device=str(dev))
    model.eval()
    cfg = model.config
    pc = count_parameters(model)
    tok = gd.load_tokenizer(a.tokenizer or a.model)
    log(f"loaded {a.model}: {pc['total'] / 1e6:.2f}M params ({pc['active'] / 1e6:.2f}M active), "
        f"index_topk {cfg.index_topk}")
    results = dict(model=os.path.abspath(a.model), params=pc, index_topk=cfg.index_topk, seed=a.seed)

    # --- KV-cache decoder check -------------------------------------------------------------------------------
    held = gd.Corpus(a.data, "heldout", a.seq_len)
    n = min(cfg.index_topk + 160, 1024)
    _, s, _ = held.docs[min(1, len(held.docs) - 1)]
    ids = torch.from_numpy(held.tokens[s: s + n].astype(np.int64))[None].to(dev)
    results["cache_check"] = check_cache(model, ids, n - 48)
    log(f"KV-cache decoder vs full forward (fp32): {results['cache_check']}")

    # --- (a) held-out loss ----------------------------------------------------------------------------------------
    from train import evaluate
    hs = gd.SequenceStream(held, shuffle=False)
    nseq = hs.epoch_len(0) if a.heldout_seqs <= 0 else min(a.heldout_seqs, hs.epoch_len(0))
    seqs = [hs.sequence(0, i)[:2] for i in range(nseq)]
    t0 = time.time()
    ev = evaluate(model, seqs, a.batch, ("dense", "sparse"))
    ev.update(dense_ppl=math.exp(ev["dense_loss"]), sparse_ppl=math.exp(ev["sparse_loss"]), sequences=nseq,
              seq_len=a.seq_len, seconds=time.time() - t0)
    results["heldout"] = ev
    log(f"held-out: {json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in ev.items()})}")

    # --- (c) reference logits -------------------------------------------------------------------------------------
    if not a.skip_ref:
        ref_out = a.ref_out or os.path.join(os.path.dirname(os.path.abspath(a.out)) if a.out else ".",
                                            "reference_logits.json")
        ref = reference_logits(model, tok, held, a.model)
        with open(ref_out, "w") as f:
            json.dump(ref, f)
        results["reference_logits"] = dict(path=os.path.abspath(ref_out), bytes=os.path.getsize(ref_out),
                                           sequences=[(r["name"], r["length"]) for r in ref["sequences"]])
        log(f"reference logits -> {ref_out} ({os.path.getsize(ref_out) / 1024:.0f} KiB)")

    # --- (b) completion tasks -------------------------------------------------------------------------------------
    files = heldout_ts_files(held, tok)
    cases = sample_cases(files, a.cases, a.seed)
    log(f"{len(files)} held-out TypeScript files; {len(cases)} cases")
    results["tasks"] = {}
    for mode in (("sparse", "dense") if a.fim_attn == "both" else (a.fim_attn,)):
        deadline = None if a.max_minutes is None else T_START + a.max_minutes * 60
        if a.workers <= 1:
            results["tasks"][mode] = run_tasks(model, tok, held, files, cases, a.ctx, a.max_new, mode == "sparse",
                                               deadline)
            continue
        import multiprocessing as mp
        W = a.workers
        jobs = [(a.model, a.tokenizer or a.model, a.data, a.seq_len, cases[w::W], a.ctx, a.max_new, mode == "sparse",
                 deadline, w, f"cuda:{w % torch.cuda.device_count()}" if dev.type == "cuda" else str(dev))
                for w in range(W)]   # workers spread over every GPU of the machine
        with mp.get_context("spawn").Pool(W) as pool:
            parts = pool.map(_task_worker, jobs)
        results["tasks"][mode] = merge_tasks(parts)
        r = results["tasks"][mode]
        log(f"{mode}: {r['cases']} cases by {W} workers in {r['seconds']:.0f}s: " + ", ".join(
            f"{k} {r[k + '_em']:.3f}" for k in r["hits"]))

    results["seconds"] = time.time() - T_START
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)

    # --- table ----------------------------------------------------------------------------------------------------
    ev = results["heldout"]
    rows = [("held-out loss, dense attention", f"{ev['dense_loss']:.4f} (ppl {ev['dense_ppl']:.3f})"),
            (f"held-out loss, DSA top-{cfg.index_topk}", f"{ev['sparse_loss']:.4f} (ppl {ev['sparse_ppl']:.3f})"),
            ("sparse / dense loss ratio", f"{ev['sparse_over_dense']:.4f}"),
            ("indexer KL on the selected set", f"{ev['indexer_kl_topk']:.4f}"),
            ("held-out tokens", f"{ev['eval_tokens']} ({ev['sequences']} x {ev['seq_len']})")]
    for mode, r in results["tasks"].items():
        rows += [(f"FIM single-line EM, file only ({mode})", f"{100 * r['fim_file_em']:.1f}%"),
                 (f"FIM single-line EM, repo context ({mode})", f"{100 * r['fim_repo_em']:.1f}%"),
                 (f"FIM repo-context gain ({mode})", f"{100 * r['fim_repo_gain']:+.1f} pt"),
                 (f"FIM single-line EM in SPM order, file only / repo context ({mode})",
                  f"{100 * r.get('spm_file_em', float('nan')):.1f}% / {100 * r.get('spm_repo_em', float('nan')):.1f}% "
                  f"({100 * r.get('spm_repo_gain', float('nan')):+.1f} pt)"),
                 (f"SPM FIM EM, repository as the sidecar lays it out ({mode})",
                  f"{100 * r['spm_layout_em']:.1f}% ({100 * r['spm_layout_gain']:+.1f} pt over file only)"),
                 (f"next-line EM, file only ({mode})", f"{100 * r['next_file_em']:.1f}%"),
                 (f"next-line EM, repo context ({mode})", f"{100 * r['next_repo_em']:.1f}%"),
                 (f"next-line repo-context gain ({mode})", f"{100 * r['next_repo_gain']:+.1f} pt"),
                 (f"next-line EM, repository as the sidecar lays it out ({mode})",
                  f"{100 * r['next_layout_em']:.1f}% ({100 * r['next_layout_gain']:+.1f} pt over file only)"),
                 (f"verbatim EM fim file/repo, next file/repo ({mode})",
                  " / ".join(f"{100 * r[k]:.1f}%" for k in ("fim_file_em_raw", "fim_repo_em_raw",
                                                             "next_file_em_raw", "next_repo_em_raw"))),
                 (f"cases, mean repo-context tokens: tail / sidecar layout ({mode})",
                  f"{r['cases']}, {r['mean_repo_ctx_tokens']:.0f} / {r['mean_layout_ctx_tokens']:.0f}")]
    cc = results["cache_check"]
    rows.append(("KV-cache decoder check (dense logits, layer-0 index scores)", "ok" if cc["ok"] else "FAILED"))
    rows.append(("KV-cache decode vs full forward, max |dlogit| dense / sparse (ties may differ)",
                 f"{cc['dense_max_abs_diff']:.2e} / {cc['sparse_max_abs_diff']:.2e}"))
    print("\n| metric | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print(flush=True)
    return results


if __name__ == "__main__":
    main()
