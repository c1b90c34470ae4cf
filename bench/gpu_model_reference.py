"""HF transformers reference for bench/gpu-model.ts: greedy decode speed of DeepseekV32ForCausalLM on the same
checkpoint and GPU, measured in the same run as our engine.

The embedded model's checkpoint is DeepSeek FP8 (e4m3 + 128x128 weight_scale_inv blocks). HF would need its FP8
kernels for that, so we load a bf16 copy: every FP8 tensor dequantised (e4m3 * scale_inv), config without
quantization_config, written to a temporary directory and loaded with from_pretrained(dtype=bfloat16, eager
attention). That is the fastest configuration of the reference that runs here, and the arithmetic it does per token
is the same model's.

Prints one JSON line: {"transformers": ver, "torch": ver, "decode": {"<ctx>": {"ms_per_token": x, "prefill_s": y}}}.
usage: python3 bench/gpu_model_reference.py MODEL_DIR --contexts 1024,32000 [--steps 16] [--chunk 2048]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file
import transformers


def bf16_copy(src: str) -> str:
    out = tempfile.mkdtemp(prefix="glance-hf-bf16-")
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg.pop("quantization_config", None)
    cfg["dtype"] = "bfloat16"
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"))
    tensors = {}
    for f in sorted(os.listdir(src)):
        if f.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(src, f)))
    res = {}
    for name, t in tensors.items():
        if name.endswith("_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            s = tensors[name + "_scale_inv"].float()
            r, c = t.shape
            full = s.repeat_interleave(128, 0)[:r].repeat_interleave(128, 1)[:, :c]
            t = (t.float() * full).to(torch.bfloat16)
        elif t.dtype == torch.float32 and "weights_proj" not in name and "e_score" not in name:
            t = t.to(torch.bfloat16)
        res[name] = t.contiguous()
    save_file(res, os.path.join(out, "model.safetensors"))
    for f in ("generation_config.json",):
        if os.path.exists(os.path.join(src, f)):
            open(os.path.join(out, f), "w").write(open(os.path.join(src, f)).read())
    return out


@torch.no_grad()
def measure(model, ctx: int, steps: int, chunk: int, vocab: int) -> dict:
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(ctx)
    ids = torch.randint(1, vocab, (1, ctx), generator=g).to(dev)
    cache = transformers.DynamicCache(config=model.config)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    logits = None
    for c in range(0, ctx, chunk):
        out = model(input_ids=ids[:, c:c + chunk], past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[0, -1]
    torch.cuda.synchronize()
    prefill = time.perf_counter() - t0
    tok = int(torch.argmax(logits))
    times = []
    for i in range(steps + 2):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model(input_ids=torch.tensor([[tok]], device=dev), past_key_values=cache, use_cache=True)
        tok = int(torch.argmax(out.logits[0, -1]))
        torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    times.sort()
    return {"ms_per_token": 1000 * times[len(times) // 2], "prefill_s": prefill}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--contexts", default="1024")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=2048)
    a = ap.parse_args()
    d = bf16_copy(a.model)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16, attn_implementation="eager").cuda().eval()
    res = {"transformers": transformers.__version__, "torch": torch.__version__, "decode": {}}
    for ctx in [int(x) for x in a.contexts.split(",")]:
        try:
            res["decode"][str(ctx)] = measure(model, ctx, a.steps, a.chunk, model.config.vocab_size)
        except Exception as e:  # OOM or a missing kernel: report it, keep the other rows
            res["decode"][str(ctx)] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            torch.cuda.empty_cache()
        print(f"hf ctx {ctx}: {res['decode'][str(ctx)]}", file=sys.stderr, flush=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
