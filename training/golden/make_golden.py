#!/usr/bin/env python3
"""Golden fixtures for the Glance engine: small random DeepSeek-V2/V3/V3.2 checkpoints + HF outputs.

Runs on the GPU host (Python 3.12, torch 2.11, transformers 5.17.0, safetensors, tokenizers).
Everything except the tokenizer model's training runs on CPU in the requested dtype, so the expected
numbers do not depend on GPU kernels / TF32.

    python3 training/golden/make_golden.py --out $OUT/golden            # all variants
    python3 training/golden/make_golden.py --out /tmp/g --only v3_fp32_noqlora v2_fp32_softmax

Each fixture directory holds:
  config.json                  HF format, loadable by from_pretrained
  model.safetensors            or model-0000{1,2}-of-00002.safetensors + model.safetensors.index.json
  expected.json                ids, logits (base64 float32 LE, [n, vocab], full forward use_cache=False),
                               greedy {prompt_ids, new_ids} (HF generate, greedy, 12 new tokens, with cache),
                               dtype, tolerance, notes, checks (margins etc.)
  tokenizer.json, tokenizer_config.json   (v32_tok only)

Tensor names in the safetensors are DeepSeek / HF *checkpoint* names: per-expert
`model.layers.L.mlp.experts.E.{gate_proj,up_proj,down_proj}.weight` (split from the transformers-v5 packed
`experts.gate_up_proj` [E, 2I, H] whose first I rows are gate -- `gate, up = linear(x, gate_up_proj[e]).chunk(2)`
-- and `experts.down_proj` [E, H, I]), router `mlp.gate.weight` + `mlp.gate.e_score_correction_bias`, indexer
`self_attn.indexer.{wq_b,wk,k_norm,weights_proj}`. After writing, every fixture is re-loaded with
`from_pretrained(dir)` and its logits compared with the in-memory model: that proves HF maps the per-expert
names (conversion_mapping.py: deepseek_v2/v3/v32 -> "qwen2_moe" converter, MergeModulelist + Concatenate(dim=1)).

Each variant runs in its own try/except: a failing variant prints its traceback, the others still get written,
and the exit code is 1 if any variant failed (or missed a required check).
"""

from __future__ import annotations

import argparse
import base64
import copy
import glob
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

T0 = time.time()


def log(*a):
    print(f"[golden {time.time() - T0:7.1f}s]", *a, flush=True)


# ----------------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------------

# Shared small MLA + MoE shape. intermediate_size 160 (layer 0 dense MLP) makes the FP8 variant have
# multi-block weights with a partial last block in both directions ([160,64] -> scale [2,1]; [64,160] -> [1,2]).
COMMON = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=160,
    moe_intermediate_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=4,  # MLA: kv heads == q heads (HF v3.2 default is 128, must override)
    n_shared_experts=1,
    n_routed_experts=8,
    num_experts_per_tok=2,
    kv_lora_rank=32,
    q_lora_rank=48,
    qk_rope_head_dim=16,
    qk_nope_head_dim=16,
    v_head_dim=16,
    first_k_dense_replace=1,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=None,
    tie_word_embeddings=False,
    attention_bias=False,
    initializer_range=0.02,
)

YARN_V32 = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=64,
                beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0)
# V2-Lite style YaRN: mscale == mscale_all_dim == 0.707 -> cos/sin attention_factor 1, softmax scale * mscale(0.707)^2
YARN_V2 = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=64,
               beta_fast=32.0, beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707)


def make_config(family, **over):
    import transformers as tf
    kw = dict(COMMON)
    if family == "v32":
        kw.update(n_group=2, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5,
                  index_n_heads=8, index_head_dim=32, index_topk=16, max_position_embeddings=256,
                  rope_parameters=dict(YARN_V32))
        kw.update(over)
        cfg = tf.DeepseekV32Config(**kw)
        cfg.architectures = ["DeepseekV32ForCausalLM"]
    elif family == "v3":
        kw.update(n_group=1, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5, q_lora_rank=None,
                  max_position_embeddings=256, rope_parameters=dict(rope_type="default", rope_theta=10000.0))
        kw.update(over)
        cfg = tf.DeepseekV3Config(**kw)
        cfg.architectures = ["DeepseekV3ForCausalLM"]
    elif family == "v2":
        kw.update(n_group=None, topk_group=None, topk_method="greedy", norm_topk_prob=False,
                  routed_scaling_factor=1.5, n_shared_experts=2, q_lora_rank=None, max_position_embeddings=256,
                  rope_parameters=dict(YARN_V2))
        kw.update(over)
        cfg = tf.DeepseekV2Config(**kw)
        cfg.architectures = ["DeepseekV2ForCausalLM"]
    else:
        raise ValueError(family)
    return cfg


def model_class(family):
    import transformers as tf
    return {"v32": tf.DeepseekV32ForCausalLM, "v3": tf.DeepseekV3ForCausalLM, "v2": tf.DeepseekV2ForCausalLM}[family]


# Extra keys DeepSeek's own config.json files carry that HF does not declare (HF hard-codes the behaviour per
# model_type). We add them so the engine can read them like it would from a real release.
EXTRA_KEYS = {
    "v32": {"scoring_func": "sigmoid", "topk_method": "noaux_tc", "moe_layer_freq": 1},
    "v3": {"scoring_func": "sigmoid", "topk_method": "noaux_tc", "moe_layer_freq": 1},
    "v2": {"scoring_func": "softmax", "moe_layer_freq": 1},
}


NOISE_KEYS = ("_name_or_path", "id2label", "label2id", "chunk_size_feed_forward", "is_encoder_decoder",
              "output_attentions", "output_hidden_states", "return_dict", "problem_type")


def config_json(cfg, family, dtype_str, style="hf", quant=None):
    """Full (non-diff) HF config dict. style 'deepseek' rewrites rope to the release format
    (rope_theta + rope_scaling{type: yarn}) and drops the HF-derived list keys, as in DeepSeek's own files."""
    d = json.loads(cfg.to_json_string(use_diff=False))
    for k in NOISE_KEYS:  # generic PreTrainedConfig fields irrelevant to a causal LM checkpoint
        d.pop(k, None)
    d.update(EXTRA_KEYS[family])
    d.pop("torch_dtype", None)
    d["dtype"] = dtype_str
    if style == "deepseek":
        rp = dict(d.pop("rope_parameters"))
        d["rope_theta"] = rp.pop("rope_theta")
        rp["type"] = rp.pop("rope_type")
        d["rope_scaling"] = rp
        for k in ("layer_types", "mlp_layer_types", "head_dim", "qk_head_dim"):
            d.pop(k, None)
        d.pop("dtype", None)
        d["torch_dtype"] = dtype_str
    if quant is not None:
        d["quantization_config"] = quant
    return d


# ----------------------------------------------------------------------------------------------------
# Random weights (larger than HF's std 0.02 init so that logits, routing and index scores are well spread)
# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def randomize_(model, seed, bias_scale=0.1):
    g = torch.Generator().manual_seed(seed)

    def rn(shape):
        return torch.randn(shape, generator=g, dtype=torch.float32)

    done = set()
    for mname, mod in model.named_modules():
        cls = type(mod).__name__
        pre = mname + "." if mname else ""
        if isinstance(mod, torch.nn.Embedding):
            mod.weight.copy_(rn(mod.weight.shape))
            done.add(pre + "weight")
        elif isinstance(mod, torch.nn.Linear):
            mod.weight.copy_(rn(mod.weight.shape) / math.sqrt(mod.weight.shape[1]))
            done.add(pre + "weight")
            if mod.bias is not None:
                mod.bias.copy_(0.1 * rn(mod.bias.shape))
                done.add(pre + "bias")
        elif isinstance(mod, torch.nn.LayerNorm):
            mod.weight.copy_(1.0 + 0.1 * rn(mod.weight.shape))
            mod.bias.copy_(0.1 * rn(mod.bias.shape))
            done.update({pre + "weight", pre + "bias"})
        elif cls.endswith("RMSNorm"):
            mod.weight.copy_(1.0 + 0.1 * rn(mod.weight.shape))
            done.add(pre + "weight")
        elif hasattr(mod, "gate_up_proj") and hasattr(mod, "down_proj") and isinstance(mod.gate_up_proj, torch.nn.Parameter):
            E, twoI, H = mod.gate_up_proj.shape
            mod.gate_up_proj.copy_(rn((E, twoI, H)) / math.sqrt(H))
            mod.down_proj.copy_(rn(mod.down_proj.shape) / math.sqrt(mod.down_proj.shape[-1]))
            done.update({pre + "gate_up_proj", pre + "down_proj"})
        elif cls.endswith("TopkRouter"):
            mod.weight.copy_(rn(mod.weight.shape) / math.sqrt(mod.weight.shape[1]))
            done.add(pre + "weight")
            if hasattr(mod, "e_score_correction_bias"):
                mod.e_score_correction_bias.copy_(bias_scale * rn(mod.e_score_correction_bias.shape))
    missing = [n for n, _ in model.named_parameters() if n not in done]
    if missing:
        raise RuntimeError(f"randomize_: parameters not re-initialised: {missing}")


# ----------------------------------------------------------------------------------------------------
# Checkpoint naming: HF packed experts <-> DeepSeek per-expert names; dtype policies; FP8 block quantisation
# ----------------------------------------------------------------------------------------------------

EXPERT_RE = re.compile(r"^(.*\.mlp\.experts)\.(gate_up_proj|down_proj)$")
PER_EXPERT_RE = re.compile(r"^(.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
FP8_MAX = 448.0
BLOCK = 128


def split_experts(sd):
    """HF v5 state_dict -> checkpoint-style names (fp32 clones)."""
    out = {}
    for name, t in sd.items():
        t = t.detach().to("cpu")
        m = EXPERT_RE.match(name)
        if not m:
            out[name] = t.clone().contiguous()
            continue
        prefix, kind = m.groups()
        if kind == "gate_up_proj":  # [E, 2I, H]; rows [0, I) = gate, [I, 2I) = up
            I = t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{prefix}.{e}.gate_proj.weight"] = t[e, :I].clone().contiguous()
                out[f"{prefix}.{e}.up_proj.weight"] = t[e, I:].clone().contiguous()
        else:  # down_proj [E, H, I] == stack of nn.Linear(I -> H) weights
            for e in range(t.shape[0]):
                out[f"{prefix}.{e}.down_proj.weight"] = t[e].clone().contiguous()
    return out


def fp8_quantizable(name, t):
    """Which tensors DeepSeek stores as FP8: 2-D Linear weights, but not embeddings / lm_head / router gate /
    indexer weights_proj (norms are 1-D)."""
    if not name.endswith(".weight") or t.dim() != 2:
        return False
    if "embed_tokens" in name or name.startswith("lm_head"):
        return False
    if re.search(r"\.mlp\.gate\.weight$", name):
        return False
    if "indexer.weights_proj" in name:
        return False
    if "norm" in name:
        return False
    return True


def fp8_quantize(w):
    """w fp32 [r, c] -> (e4m3 [r, c], scale_inv fp32 [ceil(r/128), ceil(c/128)]), scale_inv = amax/448 per block,
    so that w ~= fp8 * scale_inv (DeepSeek convention)."""
    r, c = w.shape
    br, bc = -(-r // BLOCK), -(-c // BLOCK)
    q = torch.empty((r, c), dtype=torch.float8_e4m3fn)
    s = torch.empty((br, bc), dtype=torch.float32)
    for i in range(br):
        for j in range(bc):
            blk = w[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK].float()
            amax = blk.abs().max().clamp_min(1e-12)
            sc = (amax / FP8_MAX).to(torch.float32)
            s[i, j] = sc
            q[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK] = (blk / sc).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, s


def fp8_dequantize(q, s, hf_blocks=False):
    """DeepSeek convention: block (i // 128, j // 128), last block partial. hf_blocks=True mimics transformers'
    Fp8Dequantize, which derives the block size as rows // scale_rows (differs when a dim is not a multiple of 128
    and has more than one block) -- diagnostic only."""
    r, c = q.shape
    bm, bn = BLOCK, BLOCK
    if hf_blocks:
        if r % s.shape[0] or c % s.shape[1]:
            raise ValueError(f"HF convention: ({r},{c}) not divisible by scale grid {tuple(s.shape)}")
        bm, bn = r // s.shape[0], c // s.shape[1]
    full = s.repeat_interleave(bm, 0)[:r].repeat_interleave(bn, 1)[:, :c]
    return q.to(torch.float32) * full


def to_checkpoint(sd, policy):
    """policy: 'fp32' | 'bf16' | 'fp8'. Returns {name: tensor} in checkpoint naming/dtypes."""
    ck = split_experts(sd)
    out = {}
    for name, t in ck.items():
        if name.endswith("e_score_correction_bias"):
            out[name] = t.float()  # DeepSeek and HF keep this fp32 (HF: _keep_in_fp32_modules_strict)
        elif policy == "fp32":
            out[name] = t.float()
        elif policy == "bf16":
            out[name] = t.to(torch.bfloat16)
        elif policy == "fp8":
            if fp8_quantizable(name, t):
                q, s = fp8_quantize(t.float())
                out[name] = q
                out[name + "_scale_inv"] = s
            else:
                out[name] = t.float()
        else:
            raise ValueError(policy)
    return out


def from_checkpoint(ck, hf_blocks=False):
    """Checkpoint tensors -> HF v5 state_dict in fp32 (dequantising FP8 blocks), i.e. what our engine computes with."""
    sd, experts = {}, {}
    for name, t in ck.items():
        if name.endswith("_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            t = fp8_dequantize(t, ck[name + "_scale_inv"], hf_blocks=hf_blocks)
        t = t.float()
        m = PER_EXPERT_RE.match(name)
        if m:
            prefix, e, kind = m.group(1), int(m.group(2)), m.group(3)
            experts.setdefault(prefix, {}).setdefault(e, {})[kind] = t
        else:
            sd[name] = t
    for prefix, es in experts.items():
        n = max(es) + 1
        sd[prefix + ".gate_up_proj"] = torch.stack([torch.cat([es[e]["gate_proj"], es[e]["up_proj"]], 0) for e in range(n)])
        sd[prefix + ".down_proj"] = torch.stack([es[e]["down_proj"] for e in range(n)])
    return sd


def write_checkpoint(dirpath, ck, cfg_dict, shards=1):
    from safetensors.torch import save_file
    os.makedirs(dirpath, exist_ok=True)
    with open(os.path.join(dirpath, "config.json"), "w") as f:
        json.dump(cfg_dict, f, indent=2, sort_keys=True)
    names = sorted(ck)
    if shards == 1:
        save_file({n: ck[n] for n in names}, os.path.join(dirpath, "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    # split by bytes, keeping each weight next to its scale_inv
    groups, seen = [], set()
    for n in names:
        if n in seen:
            continue
        g = [n]
        if n + "_scale_inv" in ck:
            g.append(n + "_scale_inv")
        seen.update(g)
        groups.append(g)
    total = sum(ck[n].numel() * ck[n].element_size() for n in names)
    files, cur, acc, parts = [], [], 0, []
    for g in groups:
        cur.extend(g)
        acc += sum(ck[n].numel() * ck[n].element_size() for n in g)
        if len(parts) < shards - 1 and acc >= total * (len(parts) + 1) / shards:
            parts.append(cur)
            cur = []
    parts.append(cur)
    weight_map = {}
    for i, p in enumerate(parts):
        fn = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        save_file({n: ck[n] for n in p}, os.path.join(dirpath, fn), metadata={"format": "pt"})
        files.append(fn)
        for n in p:
            weight_map[n] = fn
    with open(os.path.join(dirpath, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    return files


def read_checkpoint(dirpath):
    from safetensors.torch import load_file
    ck = {}
    for fn in sorted(glob.glob(os.path.join(dirpath, "*.safetensors"))):
        ck.update(load_file(fn))
    return ck


# ----------------------------------------------------------------------------------------------------
# HF model helpers
# ----------------------------------------------------------------------------------------------------

def build_model(family, cfg, seed, bias_scale=0.1):
    cls = model_class(family)
    torch.manual_seed(seed)
    model = cls._from_config(copy.deepcopy(cfg), attn_implementation="eager", experts_implementation="eager",
                             dtype=torch.float32)
    randomize_(model, seed, bias_scale=bias_scale)
    model.eval()
    return model


def hf_load(family, dirpath, dtype, **extra):
    cls = model_class(family)
    model, info = cls.from_pretrained(dirpath, dtype=dtype, attn_implementation="eager",
                                      experts_implementation="eager", output_loading_info=True, **extra)
    try:
        model.set_experts_implementation("eager")
    except Exception as e:  # noqa: BLE001
        log("  (set_experts_implementation failed, continuing):", repr(e))
    model.eval()
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    nonempty = {k: (sorted(map(str, v))[:8] if hasattr(v, "__iter__") and not isinstance(v, str) else v)
                for k, v in info.items() if v}
    log(f"  from_pretrained({os.path.basename(dirpath)}, dtype={dtype}) loading info (non-empty): {nonempty or 'clean'}")
    return model, info, bad


@torch.no_grad()
def full_logits(model, ids):
    out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].float()


@torch.no_grad()
def hf_generate(model, prompt, n):
    """HF generate, greedy, with cache. EOS disabled so exactly n tokens come back."""
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    inp = torch.tensor([prompt], dtype=torch.long)
    out = model.generate(input_ids=inp, attention_mask=torch.ones_like(inp), max_new_tokens=n, do_sample=False,
                         use_cache=True, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


@torch.no_grad()
def manual_cached_greedy(model, prompt, n):
    """Greedy with HF's cache, one token per forward (the decode path our engine mirrors)."""
    out = model(input_ids=torch.tensor([prompt], dtype=torch.long), use_cache=True)
    pkv, new = out.past_key_values, []
    nxt = int(out.logits[0, -1].float().argmax())
    for _ in range(n):
        new.append(nxt)
        out = model(input_ids=torch.tensor([[nxt]], dtype=torch.long), past_key_values=pkv, use_cache=True)
        pkv = out.past_key_values
        nxt = int(out.logits[0, -1].float().argmax())
    return new


def _arg(args, kwargs, i, name):
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else None


@torch.no_grad()
def routing_and_index_margins(model, family, ids, prompt_len):
    """Full forward over ids with hooks on every router and indexer. Recomputes router / indexer scores in float64
    from the captured module inputs (HF's math, exact arithmetic) and measures how far each discrete choice is from a
    tie; also checks HF's choice equals the float64 choice.

    Returns dict with, split by prompt rows (t < prompt_len) and decode rows:
      idx_rel_margin: min over rows with > topk candidates of (s_k - s_{k+1}) / max|s| (k-th vs (k+1)-th index score)
      router_margin:  min over tokens of the k-th vs (k+1)-th expert score gap (and group-score gap) (absolute)
    """
    caps = []
    hooks = []
    for name, mod in model.named_modules():
        cls = type(mod).__name__
        if cls.endswith("Indexer") or cls.endswith("TopkRouter"):
            hooks.append(mod.register_forward_hook(
                lambda m, a, k, o, name=name: caps.append((name, m, a, k, o)), with_kwargs=True))
    try:
        model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
    finally:
        for h in hooks:
            h.remove()

    res = {"idx_rel_margin_prompt": None, "idx_rel_margin_decode": None, "idx_rows_over_k_prompt": 0,
           "idx_rows_over_k_decode": 0, "idx_mismatch_rows": 0, "router_margin_prompt": None,
           "router_margin_decode": None, "router_mismatch_tokens": 0, "idx_worst": None,
           "idx_mismatches": [], "router_mismatches": []}

    def upd(key, v):
        res[key] = v if res[key] is None else min(res[key], v)

    S = len(ids)
    for name, m, a, kw, o in caps:
        cls = type(m).__name__
        if cls.endswith("Indexer"):
            x = _arg(a, kw, 0, "hidden_states")[0].double()
            qr = _arg(a, kw, 1, "q_resid")[0].double()
            cos, sin = _arg(a, kw, 2, "position_embeddings")
            cos, sin = cos[0].double(), sin[0].double()
            H, D, R, K = m.n_heads, m.head_dim, m.qk_rope_head_dim, m.index_topk
            q = (qr @ m.wq_b.weight.double().T).view(S, H, D)
            k = F.layer_norm(x @ m.wk.weight.double().T, (D,), m.k_norm.weight.double(), m.k_norm.bias.double(),
                             m.k_norm.eps)

            def rope(t, c, s_):  # NON-interleaved (half split), on the first R dims ([rope | nope] layout)
                t1, t2 = t[..., : R // 2], t[..., R // 2: R]
                rot = torch.cat([-t2, t1], -1)
                return torch.cat([t[..., :R] * c + rot * s_, t[..., R:]], -1)

            q = rope(q, cos[:, None, :], sin[:, None, :])
            k = rope(k, cos, sin)
            sc = torch.relu(torch.einsum("shd,td->sht", q, k) * D ** -0.5)
            w = (x @ m.weights_proj.weight.double().T) * H ** -0.5
            I = torch.einsum("sh,sht->st", w, sc)
            hf_idx = o[0].long()  # [S, topk]
            for t in range(S):
                cand = t + 1
                sel = set(hf_idx[t].tolist())
                if cand <= K:
                    if not set(range(cand)).issubset(sel):
                        res["idx_mismatch_rows"] += 1
                    continue
                row = I[t, :cand]
                vals, order = torch.sort(row, descending=True)
                scale = float(row.abs().max().clamp_min(1e-30))
                rel = float(vals[K - 1] - vals[K]) / scale
                mine = set(order[:K].tolist())
                key = "prompt" if t < prompt_len else "decode"
                if mine != sel:
                    res["idx_mismatch_rows"] += 1
                    res["idx_mismatches"].append((rel, key, name, t))
                res[f"idx_rows_over_k_{key}"] += 1
                upd(f"idx_rel_margin_{key}", rel)
                if res["idx_worst"] is None or rel < res["idx_worst"][0]:
                    res["idx_worst"] = (rel, name, t)
        else:  # router
            x = _arg(a, kw, 0, "hidden_states").reshape(-1, m.hidden_dim).double()
            logits = x @ m.weight.double().T
            kk = m.top_k
            hf_sel = o[2].long()
            for t in range(x.shape[0]):
                key = "prompt" if t < prompt_len else "decode"
                if family == "v2":
                    sc = torch.softmax(logits[t], -1)
                    gaps = []
                    if m.topk_method != "greedy":
                        raise NotImplementedError("margin check implemented for v2 greedy only")
                    allowed = sc
                else:
                    s = torch.sigmoid(logits[t])
                    c = s + m.e_score_correction_bias.double()
                    G, TG = m.num_group, m.topk_group
                    gaps = []
                    if G > TG:
                        gs = c.view(G, -1).topk(2, -1)[0].sum(-1)
                        gv, go = torch.sort(gs, descending=True)
                        gaps.append(float(gv[TG - 1] - gv[TG]))
                        keep = torch.zeros(G, dtype=torch.bool)
                        keep[go[:TG]] = True
                        allowed = c.masked_fill(~keep.repeat_interleave(c.numel() // G), float("-inf"))
                    else:
                        allowed = c
                av, ao = torch.sort(allowed, descending=True)
                if torch.isfinite(av[kk]):
                    gaps.append(float(av[kk - 1] - av[kk]))
                if set(ao[:kk].tolist()) != set(hf_sel[t].tolist()):
                    res["router_mismatch_tokens"] += 1
                    res["router_mismatches"].append((min(gaps) if gaps else 0.0, key, name, t))
                if gaps:
                    upd(f"router_margin_{key}", min(gaps))
    return res


@torch.no_grad()
def discrete_choices(model, ids):
    """{module name: [set per row]} of the indexer top-k (valid causal positions only) and router expert choices
    of a full forward."""
    out = {}
    hooks = [mod.register_forward_hook(lambda m, a, o, n=n: out.__setitem__(n, o))
             for n, mod in model.named_modules() if type(mod).__name__.endswith(("Indexer", "TopkRouter"))]
    try:
        lg = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0].float()
    finally:
        for h in hooks:
            h.remove()
    ch = {}
    for n, o in out.items():
        if n.endswith("indexer"):
            ch[n] = [frozenset(x for x in row.tolist() if x <= t) for t, row in enumerate(o[0])]
        else:
            ch[n] = [frozenset(row.tolist()) for row in o[2]]
    return ch, lg


def greedy_margins(logits_rows):
    """top1 - top2 logit gap per row."""
    top2 = logits_rows.topk(2, -1).values
    return (top2[:, 0] - top2[:, 1]).tolist()


def b64_f32(t):
    return base64.b64encode(np.ascontiguousarray(t.detach().cpu().numpy().astype("<f4")).tobytes()).decode("ascii")


def dir_size(d):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(d, "*")) if os.path.isfile(p))


# ----------------------------------------------------------------------------------------------------
# One variant: seed search + write + verify
# ----------------------------------------------------------------------------------------------------

class Spec:
    def __init__(self, name, family, policy, seed, tol, prompt_len, thresholds, shards=1, style="hf",
                 cfg_over=None, notes="", bias_scale=0.1, min_tries=0):
        self.name, self.family, self.policy, self.seed, self.tol = name, family, policy, seed, tol
        self.prompt_len, self.thresholds, self.shards, self.style = prompt_len, thresholds, shards, style
        self.cfg_over, self.notes, self.bias_scale = cfg_over or {}, notes, bias_scale
        self.min_tries = min_tries
        self.want_rank = 0  # bf16: wanted robust greedy prefix length


FP32_THR = dict(idx_prompt=1e-4, idx_decode=1e-4, router_prompt=1e-5, router_decode=1e-5, greedy=1e-3)
# bf16: decode-row margins are reported only (too many rows to demand a large bf16-safe margin everywhere)
BF16_THR = dict(idx_prompt=5e-3, idx_decode=None, router_prompt=1e-3, router_decode=None, greedy=1.5e-2)
N_NEW = 12


def evaluate(spec, ref, family, ids, cfg):
    """All checks on the reference model. Returns (checks dict, list of failed criteria, new_ids)."""
    checks, failed = {}, []
    gen = hf_generate(ref, ids, N_NEW)
    man = manual_cached_greedy(ref, ids, N_NEW)
    full = ids + gen
    lg = full_logits(ref, full[:-1])
    reprefill = lg[len(ids) - 1:].argmax(-1).tolist()
    gm = greedy_margins(lg[len(ids) - 1:])
    checks["generate_new_ids"] = gen
    checks["manual_cached_greedy_equal"] = man == gen
    checks["reprefill_argmax_equal"] = reprefill == gen
    checks["greedy_min_top2_gap"] = min(gm)
    checks["eos_in_new_ids"] = (cfg.eos_token_id in gen) if cfg.eos_token_id is not None else False
    if not checks["reprefill_argmax_equal"]:
        failed.append(f"incremental decode != re-prefill argmax ({gen} vs {reprefill})")
    if not checks["manual_cached_greedy_equal"]:
        failed.append(f"generate != manual cached greedy ({gen} vs {man})")
    thr = spec.thresholds
    if thr.get("greedy") is not None and min(gm) < thr["greedy"]:
        failed.append(f"greedy top1-top2 gap {min(gm):.3g} < {thr['greedy']}")
    mr = routing_and_index_margins(ref, family, full, len(ids))
    checks.update({k: v for k, v in mr.items() if k not in ("idx_worst", "idx_mismatches", "router_mismatches")})
    if mr["idx_worst"] is not None:
        checks["idx_worst_row"] = {"rel_margin": mr["idx_worst"][0], "module": mr["idx_worst"][1], "t": mr["idx_worst"][2]}
    if family == "v32":
        if mr["idx_rows_over_k_prompt"] == 0:
            failed.append("no prompt row has more than index_topk candidates")
        for key in ("prompt", "decode"):
            t = thr.get(f"idx_{key}")
            v = mr[f"idx_rel_margin_{key}"]
            if t is not None and v is not None and v < t:
                failed.append(f"indexer rel margin ({key}) {v:.3g} < {t}")
        # A mismatch on a row whose margin is above the threshold would be a real semantic difference (bug in
        # this script's recompute or in HF); below-threshold rows already fail through the margin criterion.
        real = [mm for mm in mr["idx_mismatches"] if thr.get(f"idx_{mm[1]}") is not None and mm[0] >= thr[f"idx_{mm[1]}"]]
        if real:
            failed.append(f"indexer rows where HF's top-k != float64 top-k despite margin: {real[:5]}")
    for key in ("prompt", "decode"):
        t = thr.get(f"router_{key}")
        v = mr[f"router_margin_{key}"]
        if t is not None and v is not None and v < t:
            failed.append(f"router margin ({key}) {v:.3g} < {t}")
    real = [mm for mm in mr["router_mismatches"]
            if thr.get(f"router_{mm[1]}") is not None and mm[0] >= thr[f"router_{mm[1]}"]]
    if real:
        failed.append(f"tokens where HF's expert choice != float64 choice despite margin: {real[:5]}")
    return checks, failed, gen


def _trial(spec, seed):
    tmp = tempfile.mkdtemp(prefix=f"golden_{spec.name}_")
    try:
        res = build_and_check(spec, seed, tmp)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    res["tmp"] = tmp
    return res


def _discard(res):
    if res:
        shutil.rmtree(res["tmp"], ignore_errors=True)
        _discard(res.get("companion"))


def _finalize(spec, res, out_dir):
    dest = os.path.join(out_dir, spec.name)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    shutil.move(res["tmp"], dest)
    with open(os.path.join(dest, "expected.json"), "w") as f:
        json.dump(res["expected"], f, indent=1)
    log(f"[{spec.name}] wrote {dest} ({dir_size(dest) / 1e6:.3f} MB), seed {res['seed']}, "
        f"failed criteria: {res['expected']['failed_criteria'] or 'none'}")


def make_variant(spec, out_dir, tries, fixed_seed=None, companion=None):
    """Seed search; writes out_dir/<name>/ (and out_dir/<companion.name>/ built from the SAME seed, the seed being
    accepted only when both pass). Returns {name: (ok, result)}."""
    best = None
    seeds = [fixed_seed] if fixed_seed is not None else [spec.seed + i for i in range(max(tries, spec.min_tries))]
    for seed in seeds:
        log(f"[{spec.name}] trial seed={seed}")
        res = _trial(spec, seed)
        res["own_failed"] = list(res["failed"])
        if companion is not None and not res["failed"]:
            log(f"[{spec.name}]   own checks pass; trying companion {companion.name} with the same seed")
            c = _trial(companion, seed)
            res["companion"] = c
            res["failed"] = res["failed"] + [f"[{companion.name}] {x}" for x in c["failed"]]
        log(f"[{spec.name}]   failed criteria: {res['failed'] or 'none'}")
        if best is None or (len(res["failed"]), -res["rank"]) < (len(best["failed"]), -best["rank"]):
            _discard(best)
            best = res
        else:
            _discard(res)
        if not best["failed"] and best["rank"] >= spec.want_rank:
            break
    c = best.pop("companion", None)
    _finalize(spec, best, out_dir)
    out = {spec.name: (not best["own_failed"], best)}
    if companion is not None:
        if c is None:  # the main variant never passed; still write the companion from the same seed
            c = _trial(companion, best["seed"])
        _finalize(companion, c, out_dir)
        out[companion.name] = (not c["failed"], c)
    return out


def build_and_check(spec, seed, tmp, trained_model=None, prompt_ids=None, extra_expected=None):
    import transformers as tf
    family = spec.family
    cfg = make_config(family, **spec.cfg_over)
    model = trained_model if trained_model is not None else build_model(family, cfg, seed, spec.bias_scale)
    V = cfg.vocab_size
    g = torch.Generator().manual_seed(seed + 1000)
    ids = prompt_ids if prompt_ids is not None else torch.randint(2, V, (spec.prompt_len,), generator=g).tolist()
    notes = [spec.notes]
    checks = {}

    if spec.policy == "bf16":
        # Make the fp32 master copy exactly bf16-representable (bias stays fp32, as DeepSeek stores it)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(p.to(torch.bfloat16).float())
    ck = to_checkpoint(model.state_dict(), spec.policy)
    if spec.policy == "fp8":
        # The in-memory reference becomes the DEQUANTISED weights (what our engine multiplies with, in fp32)
        deq = from_checkpoint(ck)
        missing, unexpected = model.load_state_dict(deq, strict=False)
        if [m for m in missing if "rotary" not in m] or unexpected:
            raise RuntimeError(f"dequantised state dict mismatch: missing={missing} unexpected={unexpected}")
        n8 = sum(1 for t in ck.values() if t.dtype == torch.float8_e4m3fn)
        notes.append(f"{n8} tensors stored as float8_e4m3fn with 128x128-block fp32 weight_scale_inv")
    quant = None
    dtype_str = {"fp32": "float32", "bf16": "bfloat16", "fp8": "float32"}[spec.policy]
    if spec.policy == "fp8":
        quant = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [BLOCK, BLOCK]}
    cfg_dict = config_json(cfg, family, dtype_str, style=spec.style, quant=quant)
    files = write_checkpoint(tmp, ck, cfg_dict, shards=spec.shards)
    log(f"[{spec.name}]   wrote {files} ({sum(t.numel() for t in ck.values())} values, {len(ck)} tensors)")

    # Read back what was written with our own reader -> same fp32 values as the in-memory model
    back = from_checkpoint(read_checkpoint(tmp))
    msd = model.state_dict()
    worst = 0.0
    for n, t in back.items():
        ref_t = msd[n].float()
        if spec.policy == "bf16" and not n.endswith("e_score_correction_bias"):
            ref_t = ref_t.to(torch.bfloat16).float()
        worst = max(worst, float((ref_t - t).abs().max()))
    checks["readback_max_abs_diff"] = worst
    if worst > 0:
        raise RuntimeError(f"read-back of written checkpoint differs from model by {worst}")

    # Reference model (the one the expected outputs come from) + from_pretrained proof
    if spec.policy == "fp32":
        loaded, info, bad = hf_load(family, tmp, torch.float32)
        if bad:
            raise RuntimeError(f"from_pretrained loading info not clean: {bad}")
        a = full_logits(model, ids)
        b = full_logits(loaded, ids)
        d = float((a - b).abs().max())
        checks["from_pretrained_vs_inmemory_max_abs_diff"] = d
        log(f"[{spec.name}]   from_pretrained vs in-memory logits max|diff| = {d:.3g}")
        if d > 1e-6:
            raise RuntimeError(f"from_pretrained logits differ from in-memory model by {d}")
        ref = loaded
    elif spec.policy == "bf16":
        loaded, info, bad = hf_load(family, tmp, torch.bfloat16)
        if bad:
            raise RuntimeError(f"from_pretrained loading info not clean: {bad}")
        wp = sorted({str(p.dtype) for n, p in loaded.named_parameters() if "weights_proj" in n})
        eb = sorted({str(b.dtype) for n, b in loaded.named_buffers() if "e_score_correction_bias" in n})
        checks["hf_stock_bf16_dtypes"] = {"indexer.weights_proj": wp, "e_score_correction_bias": eb}
        # transformers 5.17 honours `_keep_in_fp32_modules` (["indexer.weights_proj"]) only for fp16, so a stock
        # from_pretrained(dtype=bf16) runs weights_proj in bf16. DeepSeek's reference (and our engine) run it in fp32:
        # upcast that one module after loading (the stored values are bf16, so this is exact).
        stock = full_logits(loaded, ids)
        for n, mod in loaded.named_modules():
            if n.endswith("indexer.weights_proj"):
                mod.float()
        up = full_logits(loaded, ids)
        checks["hf_stock_bf16_weights_proj_vs_fp32_weights_proj_logits_max_abs_diff"] = float((stock - up).abs().max())
        notes.append(f"reference = HF from_pretrained(dtype=bfloat16) with indexer.weights_proj upcast to fp32 after "
                     f"loading (stock transformers {tf.__version__} loads it as {wp} in bf16 mode, since "
                     f"_keep_in_fp32_modules is applied only for fp16; e_score_correction_bias loads as {eb}); "
                     f"stock-vs-upcast logits differ by "
                     f"{checks['hf_stock_bf16_weights_proj_vs_fp32_weights_proj_logits_max_abs_diff']:.3g}")
        # in-memory model converted the same way HF does it (bf16 except weights_proj + bias in fp32)
        mem = copy.deepcopy(model).to(torch.bfloat16)
        src_bufs = dict(model.named_buffers())
        for bn, _ in list(mem.named_buffers()):
            if "inv_freq" in bn:  # rotary buffers are computed in fp32 at init; .to(bf16) would round them
                modname, attr = bn.rsplit(".", 1)
                mem.get_submodule(modname)._buffers[attr] = src_bufs[bn].clone()
        for n, mod in mem.named_modules():
            if n.endswith("indexer.weights_proj"):
                mod.float()
            if hasattr(mod, "e_score_correction_bias"):
                mod.e_score_correction_bias.data = model.get_submodule(n).e_score_correction_bias.data.float().clone()
        a = full_logits(mem, ids)
        b = full_logits(loaded, ids)
        d = float((a - b).abs().max())
        checks["from_pretrained_vs_inmemory_max_abs_diff"] = d
        log(f"[{spec.name}]   from_pretrained(bf16) vs in-memory bf16 logits max|diff| = {d:.3g}")
        if d > 1e-3:
            # Not fatal (the expected outputs come from the from_pretrained model anyway): explain the difference
            ld = {n: t for n, t in list(loaded.named_parameters()) + list(loaded.named_buffers())}
            md = {n: t for n, t in list(mem.named_parameters()) + list(mem.named_buffers())}
            for n in sorted(set(ld) | set(md)):
                a_, b_ = md.get(n), ld.get(n)
                if a_ is None or b_ is None:
                    log(f"    only in {'loaded' if a_ is None else 'in-memory'}: {n}")
                elif a_.dtype != b_.dtype or a_.shape != b_.shape or not torch.equal(a_.float(), b_.float()):
                    log(f"    differs: {n} mem {a_.dtype} {tuple(a_.shape)} vs loaded {b_.dtype} {tuple(b_.shape)} "
                        f"max|diff| {float((a_.detach().float() - b_.detach().float()).abs().max()) if a_.shape == b_.shape else 'n/a'}")
            notes.append(f"WARNING: from_pretrained(bf16) and an in-memory bf16 copy differ by {d:.3g} (see log)")
            raise_later = f"from_pretrained(bf16) vs in-memory bf16 copy differ by {d:.3g}"
            checks["bf16_inmemory_mismatch"] = raise_later
        notes.append("tolerance = 3x the max |HF bf16 - fp32 math on the same bf16 weights| logit difference "
                     "(checks.bf16_vs_fp32math_same_weights_max_abs_diff), at least 1e-2: a bf16 engine with other "
                     "summation orders cannot be expected to match HF bf16 much tighter than fp32 math does; seeds "
                     "are accepted only if fp32 math makes the same indexer/router/greedy choices as HF bf16")
        ref = loaded
    else:  # fp8
        ref = model
        # Informational: does HF's own FP8 loader (dequantize=True) give the same model?
        try:
            qc = tf.FineGrainedFP8Config(dequantize=True)
            loaded, info, bad = hf_load(family, tmp, torch.float32, quantization_config=qc)
            b = full_logits(loaded, ids)
            d = float((full_logits(model, ids) - b).abs().max())
            checks["hf_fp8_dequantize_load_max_abs_diff"] = d
            checks["hf_fp8_dequantize_load_info"] = {k: list(v) for k, v in bad.items()}
            log(f"[{spec.name}]   HF from_pretrained(FineGrainedFP8Config(dequantize=True)) vs our dequant: {d:.3g}")
            try:  # is the difference only HF's block-size convention on partial multi-block dims?
                conv = copy.deepcopy(model)
                conv.load_state_dict(from_checkpoint(ck, hf_blocks=True), strict=False)
                d2 = float((full_logits(conv, ids) - b).abs().max())
                checks["hf_fp8_dequantize_vs_rows_div_scale_rows_convention_max_abs_diff"] = d2
                log(f"[{spec.name}]   ... vs our dequant with HF's block = rows // scale_rows convention: {d2:.3g}")
                if d > 1e-5 and d2 <= 1e-5:
                    notes.append("transformers' Fp8Dequantize (dequantize=True) takes block = rows // scale_rows, which "
                                 "is wrong for dims that are not multiples of 128 with >1 block (here the 160-wide dense "
                                 "MLP); it is NOT the DeepSeek convention this fixture follows")
            except Exception as e:  # noqa: BLE001
                checks["hf_fp8_convention_check_error"] = repr(e)[:300]
        except Exception as e:  # noqa: BLE001
            checks["hf_fp8_dequantize_load_error"] = repr(e)[:500]
            log(f"[{spec.name}]   HF FP8 dequantize load failed (informational): {e!r}"[:600])
        # Proof that the per-expert names load: the same tensors dequantised by us, saved fp32, via from_pretrained
        tmp2 = tempfile.mkdtemp(prefix="golden_fp8_deq_")
        try:
            ck32 = to_checkpoint(model.state_dict(), "fp32")
            write_checkpoint(tmp2, ck32, config_json(cfg, family, "float32", style=spec.style), shards=spec.shards)
            loaded, info, bad = hf_load(family, tmp2, torch.float32)
            if bad:
                raise RuntimeError(f"from_pretrained loading info not clean: {bad}")
            d = float((full_logits(model, ids) - full_logits(loaded, ids)).abs().max())
            checks["from_pretrained_dequantised_fp32_copy_max_abs_diff"] = d
            log(f"[{spec.name}]   from_pretrained(dequantised fp32 copy, same names/shards/config style): {d:.3g}")
            if d > 1e-6:
                raise RuntimeError(f"from_pretrained of dequantised copy differs by {d}")
        finally:
            shutil.rmtree(tmp2, ignore_errors=True)

    lg = full_logits(ref, ids)
    c, failed, gen = evaluate(spec, ref, family, ids, cfg)
    if "bf16_inmemory_mismatch" in checks:
        failed.append(checks["bf16_inmemory_mismatch"])
    checks.update(c)
    if spec.policy == "bf16":
        # Robustness of every discrete choice to bf16-level noise: fp32 math on the same (bf16-valued) weights must
        # pick the same indexer top-k sets, the same experts and the same greedy tokens as HF in bf16. (An engine
        # computing in bf16 differs from HF bf16 by noise of that order.)
        full = ids + gen
        c32, lg32 = discrete_choices(model, full)
        c16, lg16 = discrete_choices(ref, full)
        flips = {n: [t for t, (x, y) in enumerate(zip(c32[n], c16[n])) if x != y] for n in c32}
        flips = {n: v for n, v in flips.items() if v}
        pflips = {n: [t for t in v if t < len(ids)] for n, v in flips.items()}
        pflips = {n: v for n, v in pflips.items() if v}
        g32 = lg32[len(ids) - 1:len(ids) - 1 + len(gen)].argmax(-1).tolist()  # teacher-forced on bf16's tokens
        checks["bf16_vs_fp32math_choice_flips"] = flips  # decode-row flips are tolerated if greedy tokens agree
        checks["bf16_vs_fp32math_greedy_equal"] = g32 == gen
        dl = float((lg32[:len(ids)] - lg16[:len(ids)]).abs().max())
        checks["bf16_vs_fp32math_same_weights_max_abs_diff"] = dl
        # fp32 math on the same bf16-valued weights: what an engine computing in fp32 must reproduce exactly
        lg_f32math = lg32[:len(ids)]
        if pflips:
            failed.append(f"fp32 math and bf16 make different discrete choices on prompt rows: {pflips}")
        prefix = next((i for i, (x, y) in enumerate(zip(g32, gen)) if x != y), len(gen))
        checks["bf16_greedy_robust_prefix"] = prefix
        rank = prefix  # seeds with a longer robust greedy prefix are preferred (a full 12 is rare in bf16)
        # tolerance: 3x the bf16-vs-fp32 logit difference, at least 1e-2 (2 significant digits, rounded up)
        tol = max(1e-2, 3 * dl)
        e = math.floor(math.log10(tol)) - 1
        spec_tol = math.ceil(tol / 10 ** e) * 10 ** e
        checks["tolerance_rule"] = "max(1e-2, 3 * bf16_vs_fp32math_same_weights_max_abs_diff), rounded up"
    else:
        spec_tol = spec.tol
        rank = 0
    checks["logits_abs_max"] = float(lg.abs().max())
    checks["logits_std"] = float(lg.std())
    if family == "v32":
        notes.append(f"index_topk={cfg.index_topk}, prompt length {len(ids)}: rows t >= {cfg.index_topk} really select; "
                     f"min relative top-k margin prompt={c['idx_rel_margin_prompt']}, decode={c['idx_rel_margin_decode']} "
                     f"(gap between k-th and (k+1)-th index score / max|score| of the row, float64 recompute)")
    notes.append(f"min router margin prompt={c['router_margin_prompt']}, decode={c['router_margin_decode']}; "
                 f"min greedy top1-top2 logit gap {c['greedy_min_top2_gap']:.4g}; generate==re-prefill argmax: "
                 f"{c['reprefill_argmax_equal']}")
    expected = {
        **({"logits_f32math_b64": b64_f32(lg_f32math)} if spec.policy == "bf16" else {}),
        "name": spec.name,
        "model_type": cfg.model_type,
        "ids": ids,
        "logits_f32_b64": b64_f32(lg),
        "logits_shape": list(lg.shape),
        "greedy": {"prompt_ids": ids, "new_ids": gen},
        "dtype": {"fp32": "float32", "bf16": "bfloat16",
                  "fp8": "float8_e4m3fn weights (128x128 blocks, weight_scale_inv), expected = fp32 math on dequantised weights"}[spec.policy],
        "tolerance": float(f"{spec_tol:.3g}"),
        "seed": seed,
        "notes": " | ".join(n for n in notes if n),
        "checks": checks,
        "failed_criteria": failed,
        "generator": {"script": "training/golden/make_golden.py", "transformers": tf.__version__, "torch": torch.__version__,
                      "attn_implementation": "eager", "experts_implementation": "eager", "device": "cpu"},
    }
    # How many new_ids an engine should compare: all for fp32 fixtures; for bf16 the prefix that survives bf16-level
    # numeric noise (fp32 math on the same weights reproduces it)
    expected["greedy"]["compare_first_n"] = rank if spec.policy == "bf16" else len(gen)
    if extra_expected:
        expected.update(extra_expected)
    return {"seed": seed, "failed": failed, "expected": expected, "rank": rank}


# ----------------------------------------------------------------------------------------------------
# Variant (f): tokenizer + briefly trained tiny model
# ----------------------------------------------------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
TOK_PROMPTS = [
    'def parse_header(line):\n    """Parse a Content-type like header.\n\n    Return the main content-type and a dictionary of\n    options.\n    """\n    parts = ',
    'class Message:\n    """Basic message object.\n\n    A message object is defined as something that has a bunch of RFC 2822\n    headers and a payload.\n    """\n\n    def __init__(self',
    'import re\n\ndef decode(self, s, _w=WHITESPACE.match):\n    """Return the Python representation of ``s`` (a ``str`` instance\n    containing a JSON document).\n    """\n    obj, end = ',
    'def _splitparam(param):\n    # Split header parameters.  BAW: this may be too simple.  It isn\'t\n    # strictly RFC 2045 (section 5.1) compliant, but it catches most headers\n    a, sep, b = ',
]


def corpus_texts(max_bytes):
    import email
    import json as json_mod
    files = []
    for pkg in (email, json_mod):
        d = os.path.dirname(pkg.__file__)
        files += sorted(glob.glob(os.path.join(d, "**", "*.py"), recursive=True))
    texts, total = [], 0
    for fn in files:
        try:
            with open(fn, encoding="utf-8") as f:
                t = f.read()
        except Exception as e:  # noqa: BLE001
            log("  skip", fn, repr(e))
            continue
        texts.append(t)
        total += len(t.encode("utf-8"))
        if total >= max_bytes:
            break
    log(f"[v32_tok] corpus: {len(texts)} files, {total / 1e3:.0f} KB from {[os.path.dirname(p.__file__) for p in (email, json_mod)]}")
    return texts


def train_tokenizer(texts, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    log(f"[v32_tok] tokenizer vocab {tok.get_vocab_size()} ; specials -> {[tok.token_to_id(s) for s in SPECIALS]}")
    return tok


def make_tok_variant(out_dir, steps, device, tries):
    name = "v32_tok"
    spec = Spec(name, "v32", "fp32", seed=600, tol=1e-4, prompt_len=None, thresholds=dict(FP32_THR),
                cfg_over=dict(index_topk=24, intermediate_size=96, num_hidden_layers=2, bos_token_id=0, eos_token_id=0),
                notes="deepseek_v32 fp32 with a byte-level BPE tokenizer (vocab 512), trained briefly on Python "
                      "stdlib sources (email, json) so greedy output looks like code; 2 layers (dense + MoE), index_topk 24, "
                      "bos = eos = <|endoftext|> (id 0)")
    texts = corpus_texts(400_000)
    tok = train_tokenizer(texts, 512)
    eot = tok.token_to_id("<|endoftext|>")
    stream = []
    for t in texts:
        stream += tok.encode(t).ids + [eot]
    data = torch.tensor(stream, dtype=torch.long)
    log(f"[v32_tok] {len(stream)} training tokens ({sum(len(t) for t in texts) / len(stream):.2f} chars/token)")

    cfg = make_config("v32", **spec.cfg_over)
    model = build_model("v32", cfg, spec.seed, bias_scale=0.02)
    # A trainable init: keep the random-but-reasonable scales, but start the output small
    with torch.no_grad():
        model.lm_head.weight.mul_(0.1)
    dev = torch.device(device)
    model.to(dev).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, betas=(0.9, 0.95),
                            weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    B, L = 32, 64
    n_hold = max(L + 1, len(stream) // 20)
    train_d, hold_d = data[:-n_hold], data[-n_hold:]
    for step in range(steps):
        lr = 3e-3 * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for pg in opt.param_groups:
            pg["lr"] = lr
        starts = torch.randint(0, len(train_d) - L - 1, (B,), generator=g)
        x = torch.stack([train_d[s:s + L + 1] for s in starts.tolist()]).to(dev)
        logits = model(input_ids=x[:, :-1], use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"[v32_tok] step {step:4d} loss {loss.item():.3f} lr {lr:.2e}")
    model.eval()
    with torch.no_grad():
        hs = torch.arange(0, len(hold_d) - L - 1, L)[:16]
        xh = torch.stack([hold_d[s:s + L + 1] for s in hs.tolist()]).to(dev)
        hl = F.cross_entropy(model(input_ids=xh[:, :-1], use_cache=False).logits.float().reshape(-1, cfg.vocab_size),
                             xh[:, 1:].reshape(-1)).item()
    log(f"[v32_tok] held-out loss {hl:.3f}")
    model = model.to("cpu").float().eval()

    best = None
    for i, ptext in enumerate(TOK_PROMPTS[:max(1, tries)]):
        ids = tok.encode(ptext).ids
        log(f"[v32_tok] prompt {i}: {len(ids)} tokens")
        if len(ids) <= cfg.index_topk:
            log(f"[v32_tok]   prompt too short for index_topk {cfg.index_topk}, skipping")
            continue
        tmp = tempfile.mkdtemp(prefix="golden_tok_")
        res = build_and_check(spec, spec.seed, tmp, trained_model=model, prompt_ids=ids)
        new = res["expected"]["greedy"]["new_ids"]
        res["expected"]["prompt_text"] = ptext
        res["expected"]["greedy_text"] = tok.decode(new, skip_special_tokens=False)
        res["expected"]["tokenizer_check"] = {"prompt_roundtrip": tok.decode(ids) == ptext}
        res["expected"]["checks"]["train"] = {"steps": steps, "final_train_loss": float(loss.item()),
                                              "heldout_loss": hl, "device": str(dev)}
        log(f"[v32_tok]   greedy_text={res['expected']['greedy_text']!r} failed={res['failed'] or 'none'}")
        if best is None or len(res["failed"]) < len(best["failed"]):
            if best is not None:
                shutil.rmtree(best["tmp"], ignore_errors=True)
            best = res
            best["tmp"] = tmp
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        if not best["failed"]:
            break
    if best is None:
        raise RuntimeError("no usable prompt")
    tmp = best["tmp"]
    tok.save(os.path.join(tmp, "tokenizer.json"))
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "model_max_length": 256,
            "add_prefix_space": False, "clean_up_tokenization_spaces": False,
            "additional_special_tokens": SPECIALS[1:]}
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump(tcfg, f, indent=2)
    # AutoTokenizer must agree with the raw tokenizers library
    try:
        from transformers import AutoTokenizer
        at = AutoTokenizer.from_pretrained(tmp)
        ptext = best["expected"]["prompt_text"]
        a_ids = at(ptext, add_special_tokens=True)["input_ids"]
        ok = a_ids == best["expected"]["ids"]
        best["expected"]["tokenizer_check"]["autotokenizer_equal"] = ok
        best["expected"]["tokenizer_check"]["autotokenizer_class"] = type(at).__name__
        log(f"[v32_tok] AutoTokenizer ({type(at).__name__}) ids equal: {ok}")
        if not ok:
            best["failed"].append("AutoTokenizer ids differ from tokenizers ids")
            best["expected"]["failed_criteria"] = best["failed"]
    except Exception as e:  # noqa: BLE001
        best["expected"]["tokenizer_check"]["autotokenizer_error"] = repr(e)[:300]
        log("[v32_tok] AutoTokenizer load failed:", repr(e))
    dest = os.path.join(out_dir, name)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    shutil.move(tmp, dest)
    with open(os.path.join(dest, "expected.json"), "w") as f:
        json.dump(best["expected"], f, indent=1)
    log(f"[v32_tok] wrote {dest} ({dir_size(dest) / 1e6:.3f} MB), failed: {best['failed'] or 'none'}")
    return (not best["failed"]), best


# ----------------------------------------------------------------------------------------------------

def specs():
    sp = {
        "v32_fp32": Spec("v32_fp32", "v32", "fp32", seed=100, tol=1e-4, prompt_len=48, thresholds=dict(FP32_THR),
                         notes="deepseek_v32 fp32: q_lora, MLA (interleaved rope, [nope|rope]), lightning indexer "
                               "(non-interleaved rope, [rope|nope], LayerNorm k_norm, fp32 weights_proj), index_topk 16, "
                               "YaRN factor 4 (orig 64, mscale=mscale_all_dim=1 -> softmax scale *(0.1 ln4+1)^2, "
                               "cos/sin factor 1), MoE sigmoid + non-zero e_score_correction_bias (selection only), "
                               "n_group 2 / topk_group 1, 8 experts top-2, routed_scaling 2.5, 1 shared expert, layer 0 dense"),
        "v32_bf16": Spec("v32_bf16", "v32", "bf16", seed=200, tol=1e-2, prompt_len=20, thresholds=dict(BF16_THR),
                         min_tries=150,
                         notes="same architecture as v32_fp32, different seed; weights stored bf16 (bias fp32); expected "
                               "logits from HF in torch.bfloat16 with indexer.weights_proj in fp32 (e_score_correction_bias fp32); "
                               "prompt 20 tokens (rows 16..19 select) so few indexer rows need a bf16-safe margin "
                               "(relative >= 5e-3); greedy steps need a top1-top2 gap >= 1.5e-2 (no bf16 ties); "
                               "checks.bf16_greedy_robust_prefix = how many leading greedy tokens fp32 math on the same "
                               "weights reproduces (teacher-forced): compare only that many new_ids in a bf16 engine"),
        "v32_fp8": Spec("v32_fp8", "v32", "fp8", seed=100, tol=1e-4, prompt_len=48, thresholds=dict(FP32_THR), shards=2,
                        style="deepseek",
                        notes="FP8 block-quantised copy of v32_fp32's weights (same seed, hence same prompt): every 2-D Linear weight except "
                              "embed/lm_head/router gate/indexer weights_proj is float8_e4m3fn + <name>_scale_inv fp32 "
                              "[ceil(r/128), ceil(c/128)], scale_inv = amax/448, w = fp8*scale_inv; 2 shards + index.json; "
                              "config.json in DeepSeek release style (rope_theta + rope_scaling{type: yarn}, torch_dtype, "
                              "no layer_types); expected = fp32 HF on the dequantised weights"),
        "v3_fp32_noqlora": Spec("v3_fp32_noqlora", "v3", "fp32", seed=300, tol=1e-4, prompt_len=48,
                                thresholds=dict(FP32_THR), cfg_over=dict(vocab_size=256, intermediate_size=96),
                                notes="deepseek_v3 fp32: q_lora_rank null (q_proj), n_group 1, default rope (no scaling), "
                                      "dense attention, sigmoid + e_score_correction_bias, routed_scaling 2.5, vocab 256"),
        "v2_fp32_softmax": Spec("v2_fp32_softmax", "v2", "fp32", seed=400, tol=1e-4, prompt_len=48,
                                thresholds=dict(FP32_THR), cfg_over=dict(vocab_size=256, intermediate_size=96),
                                notes="deepseek_v2 fp32: softmax scoring, topk_method greedy, norm_topk_prob false (HF v2 "
                                      "never renormalises), routed_scaling_factor 1.5 (HF v2 multiplies it in), "
                                      "2 shared experts (shared inter = 2*moe_inter), q_lora null, no "
                                      "e_score_correction_bias, YaRN factor 4 with mscale=mscale_all_dim=0.707 (V2-Lite "
                                      "style), rope interleaved via complex pairs; same tensor names as v3; vocab 256"),
    }
    sp["v32_bf16"].want_rank = N_NEW
    return sp


ALL = ["v32_fp32", "v32_bf16", "v32_fp8", "v3_fp32_noqlora", "v2_fp32_softmax", "v32_tok"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="test/fixtures/golden")
    ap.add_argument("--only", nargs="*", default=None, choices=ALL)
    ap.add_argument("--tries", type=int, default=40, help="max seeds per variant for the margin checks")
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--device", default=None, help="training device for v32_tok (default cuda if available)")
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()

    import transformers as tf
    torch.set_num_threads(args.threads)
    log(f"python {sys.version.split()[0]} torch {torch.__version__} transformers {tf.__version__} "
        f"cuda {torch.cuda.is_available()}")
    os.makedirs(args.out, exist_ok=True)
    names = args.only or ALL
    sp = specs()
    results = {}
    for name in names:
        if name in results:
            continue
        log(f"===== {name} =====")
        try:
            if name == "v32_tok":
                dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
                ok, info = make_tok_variant(args.out, args.train_steps, dev, tries=len(TOK_PROMPTS))
                results[name] = "ok" if ok else "CHECKS FAILED: " + "; ".join(info["failed"])
                continue
            companion = None
            if name == "v32_fp32" and "v32_fp8" in names:
                companion = sp["v32_fp8"]  # v32_fp8 = FP8 copy of v32_fp32's weights: search seeds jointly
            if name == "v32_fp8":  # alone: still derive it from v32_fp32's seed search
                out = make_variant(sp["v32_fp32"], tempfile.mkdtemp(prefix="golden_unused_"), args.tries,
                                   companion=sp["v32_fp8"])
                out = {"v32_fp8": out["v32_fp8"]}
            else:
                out = make_variant(sp[name], args.out, args.tries, companion=companion)
            for n, (ok, info) in out.items():
                results[n] = "ok" if ok else "CHECKS FAILED: " + "; ".join(info["expected"]["failed_criteria"])
        except Exception:
            traceback.print_exc()
            sys.stdout.flush()
            results[name] = "ERROR (see traceback above)"
    total = 0
    log("===== summary =====")
    for name in names:
        d = os.path.join(args.out, name)
        sz = dir_size(d) if os.path.isdir(d) else 0
        total += sz
        log(f"{name:18s} {sz / 1e6:6.3f} MB  {results.get(name)}")
        if sz > 1.5e6:
            log(f"WARNING: {name} is larger than 1.5 MB")
    log(f"total {total / 1e6:.3f} MB" + ("  WARNING: > 6 MB" if total > 6e6 else ""))
    bad = [n for n in names if results.get(n) != "ok"]
    if bad:
        log("FAILED variants:", bad)
        sys.exit(1)
    log("all variants ok")


if __name__ == "__main__":
    main()
