#!/usr/bin/env python3
"""Export a training checkpoint as Glance's shipped model: DeepSeek FP8 (e4m3, 128x128 block scales), HF layout.

    python3 training/export.py --ckpt DIR/ckpt.pt --config training/configs/glance-tiny.json \\
        --tokenizer training/data/tokenizer --out models/glance-tiny [--bf16-out DIR_BF16]

Writes to --out: config.json (+ quantization_config {quant_method fp8, fmt e4m3, activation_scheme dynamic,
weight_block_size [128, 128]}), generation_config.json, tokenizer.json, tokenizer_config.json,
special_tokens_map.json, model-0000k-of-0000n.safetensors shards (each <= --shard-mib, default 15 MiB < 16 MiB)
and model.safetensors.index.json. Every 2-D linear weight (embeddings and lm_head included) is float8_e4m3fn with
`<name>_scale_inv` fp32 [ceil(r/128), ceil(c/128)], scale_inv = amax/448 per block, w ~= fp8 * scale_inv. Kept
fp32: norms (and the indexer k_norm bias), the router `mlp.gate.weight`, `mlp.gate.e_score_correction_bias`,
`self_attn.indexer.weights_proj.weight` (DeepSeek runs it in fp32). Experts are stored per expert
(`mlp.experts.E.{gate,up,down}_proj.weight`). Asserts the whole folder is <= --max-total-mib (64 MiB).

--bf16-out also writes an unquantised bf16 copy (same names, shards <= 15 MiB) for checking with HF transformers'
DeepseekV32ForCausalLM.from_pretrained. --ckpt may also be an HF model directory (re-export).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from glance_model.model import write_shards as gm_write_shards  # noqa: E402
from glance_model.model import (GlanceConfig, GlanceForCausalLM, checkpoint_tensors, count_parameters,  # noqa: E402
                                export_hf, load_hf)

FP8_MAX = 448.0
BLOCK = 128
MIB = 1 << 20
QUANT_CONFIG = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
_KEEP = [re.compile(r"\.mlp\.gate\.weight$"), re.compile(r"\.indexer\.weights_proj\.weight$")]


KEEP_EMBEDDINGS_BF16 = False  # set by --embeddings-bf16


def quantizable(name: str, t: torch.Tensor) -> bool:
    if KEEP_EMBEDDINGS_BF16 and name in ("model.embed_tokens.weight", "lm_head.weight"):
        return False
    return t.dim() == 2 and name.endswith(".weight") and not any(r.search(name) for r in _KEEP)


def quant_fp8_block(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w fp32 [r, c] -> (float8_e4m3fn [r, c], scale_inv fp32 [ceil(r/128), ceil(c/128)]), w ~= q * scale_inv."""
    w = w.float()
    r, c = w.shape
    R, C = math.ceil(r / BLOCK), math.ceil(c / BLOCK)
    wp = F.pad(w, (0, C * BLOCK - c, 0, R * BLOCK - r))
    blocks = wp.view(R, BLOCK, C, BLOCK)
    amax = blocks.abs().amax(dim=(1, 3))
    s = (amax / FP8_MAX).clamp_min(1e-12)
    q = (blocks / s[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    q = q.view(R * BLOCK, C * BLOCK)[:r, :c].contiguous()
    return q, s.float().contiguous()


def dequant_fp8_block(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    r, c = q.shape
    return q.float() * s.repeat_interleave(BLOCK, 0)[:r].repeat_interleave(BLOCK, 1)[:, :c]


def _sort_key(name: str):
    m = re.match(r"model\.layers\.(\d+)\.(.*)$", name)
    if m:
        rest = re.sub(r"experts\.(\d+)\.", lambda x: f"experts.{int(x.group(1)):04d}.", m.group(2))
        return (1, int(m.group(1)), rest)
    return (0 if "embed" in name else 2, 0, name)


def write_shards(tensors: dict, out_dir: str, shard_bytes: int) -> tuple[list[str], int]:
    return gm_write_shards(tensors, out_dir, shard_bytes, order=_sort_key)


def copy_tokenizer(tok_dir: str, out_dir: str):
    for fn in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        src = os.path.join(tok_dir, fn)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(out_dir, fn))
        elif fn != "special_tokens_map.json":
            raise FileNotFoundError(src)


def generation_config(hf_cfg: dict) -> dict:
    return {"_from_model_config": False, "bos_token_id": hf_cfg.get("bos_token_id", 0),
            "eos_token_id": [hf_cfg.get("eos_token_id", 0), 8],   # <|endoftext|>, <|im_end|> (chat turns)
            "pad_token_id": hf_cfg.get("pad_token_id", 9), "do_sample": False, "max_new_tokens": 128}


def load_model(ckpt: str, config: str | None) -> tuple[GlanceForCausalLM, dict, dict]:
    if os.path.isdir(ckpt):
        model = load_hf(ckpt)
        with open(os.path.join(ckpt, "config.json")) as f:
            hf = json.load(f)
        hf.pop("quantization_config", None)
        return model, hf, {"source": os.path.abspath(ckpt)}
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    hf = ck.get("hf_config")
    if config:
        with open(config) as f:
            given = json.load(f)
        if hf is not None and given != hf:
            diff = sorted(k for k in set(given) | set(hf) if given.get(k) != hf.get(k))
            print(f"[export] WARNING: --config differs from the checkpoint's config in {diff}; using the checkpoint's")
        hf = hf or given
    if hf is None:
        raise SystemExit("the checkpoint holds no config; pass --config")
    model = GlanceForCausalLM(GlanceConfig.from_hf_dict(hf))
    model.load_state_dict(ck["model"], strict=True)
    info = {"source": os.path.abspath(ckpt), "stage": ck.get("stage"), "step": ck.get("step"),
            "tokens": ck.get("tokens"), "history": ck.get("history", []) + [
                {"stage": ck.get("stage"), "steps": ck.get("step"), "tokens": ck.get("tokens"),
                 "tokens_nonpad": ck.get("tokens_nonpad")}]}
    return model, hf, info


@torch.no_grad()
def check_hf_load(bf16_dir: str, fp8_dir: str) -> dict:
    """HF transformers loads the bf16 copy cleanly and gives our model's logits (fp32 math on the same bf16 weights,
    a 320-token input so the indexer's top-k selects); also how far the FP8 export is from the bf16 one."""
    import transformers as tf
    hfm, info = tf.DeepseekV32ForCausalLM.from_pretrained(bf16_dir, dtype=torch.float32, attn_implementation="eager",
                                                          experts_implementation="eager", output_loading_info=True)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    hfm.eval()
    ours = load_hf(bf16_dir).eval()
    fp8 = load_hf(fp8_dir).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, ours.config.vocab_size, (1, 320), generator=g)
    a = hfm(ids).logits[0].float()
    b = ours(ids, sparse=True).logits[0].float()
    c = fp8(ids, sparse=True).logits[0].float()
    return dict(loading_info_clean=not bad, loading_info=bad, max_abs_diff_hf_vs_ours=float((a - b).abs().max()),
                argmax_agree=float((a.argmax(-1) == b.argmax(-1)).float().mean()),
                fp8_vs_bf16_max_abs_diff=float((c - b).abs().max()),
                fp8_vs_bf16_argmax_agree=float((c.argmax(-1) == b.argmax(-1)).float().mean()),
                logit_abs_max=float(b.abs().max()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="train.py ckpt.pt (or an HF model dir)")
    ap.add_argument("--config", default=None, help="HF config.json (checked against the checkpoint's)")
    ap.add_argument("--tokenizer", required=True, help="folder with tokenizer.json + tokenizer_config.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bf16-out", default=None)
    ap.add_argument("--shard-mib", type=float, default=15.0)
    ap.add_argument("--embeddings-bf16", action="store_true",
                    help="keep embed_tokens / lm_head in bf16 (the logits are most sensitive to them)")
    ap.add_argument("--max-total-mib", type=float, default=64.0)
    ap.add_argument("--check-hf", action="store_true",
                    help="load the bf16 copy with transformers' DeepseekV32ForCausalLM and compare logits with ours")
    ap.add_argument("--info-out", default=None, help="write a JSON summary (sizes, params, tokens per stage) here")
    a = ap.parse_args(argv)
    global KEEP_EMBEDDINGS_BF16
    KEEP_EMBEDDINGS_BF16 = a.embeddings_bf16

    model, hf, info = load_model(a.ckpt, a.config)
    model.eval()
    pc = count_parameters(model)
    print(f"[export] {info.get('source')}: stage {info.get('stage')} step {info.get('step')}; params total "
          f"{pc['total'] / 1e6:.2f}M active {pc['active'] / 1e6:.2f}M", flush=True)

    ck = checkpoint_tensors(model, torch.float32)     # checkpoint names (per expert), fp32
    out_t, worst = {}, (0.0, "")
    n_q = bytes_q = 0
    for name, t in ck.items():
        if quantizable(name, t):
            q, s = quant_fp8_block(t)
            out_t[name] = q
            out_t[name + "_scale_inv"] = s
            err = (dequant_fp8_block(q, s) - t).abs().max().item() / max(t.abs().max().item(), 1e-12)
            worst = max(worst, (err, name))
            n_q += 1
            bytes_q += q.numel()
        else:
            keep_bf16 = KEEP_EMBEDDINGS_BF16 and name in ("model.embed_tokens.weight", "lm_head.weight")
            out_t[name] = (t.to(torch.bfloat16) if keep_bf16 else t.float()).contiguous()
    os.makedirs(a.out, exist_ok=True)
    for fn in os.listdir(a.out):                       # stale shards of an earlier export
        if fn.endswith(".safetensors") or fn == "model.safetensors.index.json":
            os.remove(os.path.join(a.out, fn))
    files, tensor_bytes = write_shards(out_t, a.out, int(a.shard_mib * MIB))
    cfg = dict(hf)
    cfg["quantization_config"] = dict(QUANT_CONFIG)
    cfg["dtype"] = "bfloat16"
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump(generation_config(hf), f, indent=2)
    copy_tokenizer(a.tokenizer, a.out)

    sizes = {fn: os.path.getsize(os.path.join(a.out, fn)) for fn in sorted(os.listdir(a.out))
             if os.path.isfile(os.path.join(a.out, fn))}
    total = sum(sizes.values())
    for fn, b in sizes.items():
        print(f"[export]   {fn:45s} {b / MIB:8.3f} MiB")
    print(f"[export] {n_q} FP8 tensors ({bytes_q / MIB:.2f} MiB of e4m3), {len(out_t) - 2 * n_q} kept fp32; "
          f"worst block-quantisation error {worst[0]:.4f} of max|w| ({worst[1]})")
    print(f"[export] total {total} bytes = {total / MIB:.3f} MiB in {a.out} (limit {a.max_total_mib} MiB)", flush=True)
    assert all(b <= 16 * MIB for fn, b in sizes.items() if fn.endswith(".safetensors")), "a shard is over 16 MiB"
    assert total <= a.max_total_mib * MIB, f"export is {total / MIB:.2f} MiB > {a.max_total_mib} MiB"

    if a.bf16_out:
        os.makedirs(a.bf16_out, exist_ok=True)
        export_hf(model, a.bf16_out, dtype=torch.bfloat16, max_shard_bytes=int(a.shard_mib * MIB))
        with open(os.path.join(a.bf16_out, "generation_config.json"), "w") as f:
            json.dump(generation_config(hf), f, indent=2)
        copy_tokenizer(a.tokenizer, a.bf16_out)
        b = sum(os.path.getsize(os.path.join(a.bf16_out, fn)) for fn in os.listdir(a.bf16_out))
        print(f"[export] bf16 copy: {b / MIB:.2f} MiB in {a.bf16_out}", flush=True)
    if a.check_hf:
        if not a.bf16_out:
            raise SystemExit("--check-hf needs --bf16-out")
        summary_hf = check_hf_load(a.bf16_out, a.out)
        print(f"[export] HF check: {json.dumps(summary_hf)}", flush=True)
    summary = dict(out=a.out, total_bytes=total, files=sizes, fp8_tensors=n_q, worst_quant_err=worst[0],
                   params=pc, training=info, hf_check=summary_hf if a.check_hf else None)
    if a.info_out:
        with open(a.info_out, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
