"""PyTorch references for bench/gpu.ts (run by it, on the same GPU, in the same command).

Each figure is the same math as the Glance CUDA op, written the plain PyTorch way (what a port without custom
kernels runs): FP8 keys widened to bf16 and multiplied with cuBLAS, torch.topk, gather + attention with softmax.
Inputs larger than the L2 cache are rotated between timed runs, as in our benchmark. Times are medians of
CUDA-event intervals after warm-up. Prints one JSON object on the last line of stdout.

    python3 bench/gpu_reference.py [--quick]
"""

import json
import math
import sys

import torch


def median_ms(fn, iters=30, warmup=5):
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    times = []
    for i in range(iters):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn(i)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def rotation_copies(nbytes, l2_bytes):
    return max(1, min(64, math.ceil(4 * max(l2_bytes, 50 << 20) / nbytes)))


def random_e4m3(shape, gen):
    b = torch.randint(0, 256, shape, dtype=torch.uint8, device="cuda", generator=gen)
    b = torch.where((b & 0x7F) == 0x7F, b ^ 1, b)
    return b.view(torch.float8_e4m3fn)


def copy_bandwidth_gbps(mb=1024):
    n = mb << 20
    src = torch.ones(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda i: dst.copy_(src), iters=20, warmup=3)
    return 2 * n / (ms * 1e-3) / 1e9


def indexer_topk_decode_us(S, l2, H=64, D=128, k=2048):
    gen = torch.Generator(device="cuda").manual_seed(1)
    copies = rotation_copies(S * (D + 4), l2)
    keys = [random_e4m3((S, D), gen) for _ in range(copies)]
    kscale = [torch.exp2(torch.randint(-12, -5, (S,), device="cuda", generator=gen).float()) for _ in range(copies)]
    q = random_e4m3((H, D), gen)
    w = torch.rand(H, device="cuda", generator=gen) * 0.03 - 0.01

    def step(i):
        c = i % copies
        logits = (keys[c].to(torch.bfloat16) @ q.to(torch.bfloat16).T).float()  # [S, H]
        scores = (logits.relu() * w).sum(-1) * kscale[c]
        return torch.topk(scores, min(k, S), sorted=False).indices

    return median_ms(step) * 1000


def sparse_mla_decode_us(S, H=128, L=512, R=64, k=2048):
    gen = torch.Generator(device="cuda").manual_seed(2)
    kv = torch.randn(S, L + R, device="cuda", generator=gen).to(torch.bfloat16)
    q = torch.randn(H, L + R, device="cuda", generator=gen).to(torch.bfloat16)
    sets = [torch.randint(0, S, (k,), device="cuda", generator=gen) for _ in range(16)]
    scale = 1 / math.sqrt(128 + R)

    def step(i):
        rows = kv[sets[i % 16]]  # [k, L+R]
        p = torch.softmax((q @ rows.T).float() * scale, dim=-1)
        return p.to(torch.bfloat16) @ rows[:, :L]

    return median_ms(step) * 1000


def sparse_mla_prefill_tflops(T=256, S=131072, H=128, L=512, R=64, k=2048):
    gen = torch.Generator(device="cuda").manual_seed(3)
    kv = torch.randn(S, L + R, device="cuda", generator=gen).to(torch.bfloat16)
    q = torch.randn(T, H, L + R, device="cuda", generator=gen).to(torch.bfloat16)
    idx = torch.randint(0, S, (T, k), device="cuda", generator=gen)
    scale = 1 / math.sqrt(128 + R)

    def step(i):
        rows = kv[idx]  # [T, k, L+R]
        p = torch.softmax(torch.bmm(q, rows.transpose(1, 2)).float() * scale, dim=-1)
        return torch.bmm(p.to(torch.bfloat16), rows[:, :, :L])

    ms = median_ms(step, iters=5, warmup=2)
    return 2 * T * H * k * (L + R + L) / (ms * 1e-3) / 1e12


def main():
    quick = "--quick" in sys.argv
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    out = {"device": props.name, "torch": torch.__version__}
    out["copyGbps"] = copy_bandwidth_gbps()
    out["indexerTopkDecodeUs"] = {str(S): indexer_topk_decode_us(S, l2) for S in (32768, 131072)}
    out["sparseMlaDecodeUs"] = sparse_mla_decode_us(131072)
    if not quick:
        out["sparseMlaPrefillTflops"] = sparse_mla_prefill_tflops()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
