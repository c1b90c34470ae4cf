#!/usr/bin/env python3
"""Train Glance's default model (DeepSeek-V3.2 architecture) with DeepSeek's recipe, one command per stage.

    python3 training/train.py --stage {dense,indexer,sparse} --config training/configs/glance-tiny.json \\
        --data training/data/shards --out DIR [--resume CKPT] [--max-minutes M] [--steps N] [options]

Stages (DeepSeek-V3.2 paper; shared/reference/dsa-anchors.md a.0):
  dense    stage 0: dense attention, next-token loss on repository-level sequences (FIM on half of the pieces).
  indexer  stage 1, dense warm-up: main model frozen, only the lightning indexers trained by
           KL(p_attn || softmax(I)), p_attn = head-summed, L1-normalised dense attention; indexer input detached.
  sparse   stage 2: top-k (config index_topk) on; every parameter trained at low LR, the main model by the LM loss,
           the indexer by its KL restricted to the selected set.

Checkpoints: DIR/ckpt.pt (model + optimizer + step + data position + RNG), written every --ckpt-minutes and at the
end. Same stage in DIR (or --resume with a checkpoint of the same stage): the run continues exactly. A checkpoint
of another stage (--resume ../dense/ckpt.pt): its weights start the new stage. --resume may also name a Hugging Face
model directory (bf16 or FP8 export) to start from. --max-minutes stops cleanly (checkpoint written) before that
wall-clock time from process start. Logs: DIR/log.jsonl (one JSON object per step, plus eval records), progress on
stderr (tqdm), a plain line every --log-every steps on stdout, DIR/summary.json at exit.

Data parallel: `torchrun --nproc-per-node N training/train.py ...` (one process per GPU). Every rank holds the whole
model (it is small); after the backward pass the gradients are averaged with one flat all-reduce and the MoE expert
loads summed, so all ranks take identical optimizer steps. --batch is per rank (an optimizer step sees
batch x accum x N sequences); rank r takes every N-th sequence of the one global order; rank 0 alone evaluates,
logs and writes checkpoints.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time

T_START = time.time()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import glance_data as gd  # noqa: E402
from glance_model.model import (GROWABLE_FIELDS, MLP, GlanceConfig, GlanceForCausalLM,  # noqa: E402
                                count_parameters, grow_from, load_hf)

STAGE_DEFAULTS = {
    # lr: main model peak LR; indexer_lr: indexer peak LR; batch x accum sequences of seq_len per optimizer step.
    # Measured on one H100 at seq 8192 (training/README.md): dense ~0.31 s/step compiled (B=8, 37 GB), indexer
    # ~1.0 s/step (B=4, 26 GB), sparse ~2.4 s/step (B=4 x 2, 47 GB).
    "dense": dict(lr=1.5e-3, indexer_lr=0.0, min_lr_ratio=0.1, warmup=200, total_steps=2400, batch=8, accum=1,
                  fim_rate=0.5, eval_every=250, bias_gamma=1e-3, weight_decay=0.1, compile=True),
    "indexer": dict(lr=0.0, indexer_lr=1e-3, min_lr_ratio=0.1, warmup=20, total_steps=200, batch=4, accum=1,
                    fim_rate=0.5, eval_every=50, bias_gamma=0.0, weight_decay=0.0, compile=False),
    "sparse": dict(lr=1e-4, indexer_lr=1e-4, min_lr_ratio=0.1, warmup=10, total_steps=100, batch=4, accum=2,
                   fim_rate=0.5, eval_every=50, bias_gamma=1e-4, weight_decay=0.1, compile=False),
}


RANK = int(os.environ.get("RANK", "0"))
WORLD = int(os.environ.get("WORLD_SIZE", "1"))
LOCAL_RANK = int(os.environ.get("LOCAL_RANK", "0"))


def log(*a, all_ranks: bool = False):
    if RANK == 0 or all_ranks:
        tag = f"train {time.time() - T_START:7.1f}s" + (f" r{RANK}" if WORLD > 1 else "")
        print(f"[{tag}]", *a, flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", required=True, choices=list(STAGE_DEFAULTS))
    ap.add_argument("--config", required=True, help="HF deepseek_v32 config.json of the model")
    ap.add_argument("--data", required=True, help="token shard folder (index.json + *.npy.xz)")
    ap.add_argument("--out", required=True, help="run folder: ckpt.pt, log.jsonl, summary.json")
    ap.add_argument("--tokenizer", default=None, help="tokenizer.json or its folder (default: DATA/../tokenizer)")
    ap.add_argument("--resume", default=None, help="ckpt.pt (same stage: continue; other stage: init) or HF dir")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) before this time")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps to run in this call at most")
    ap.add_argument("--total-steps", type=int, default=None, help="length of the LR schedule (stage default)")
    ap.add_argument("--fit-schedule", action="store_true",
                    help=f"after {FIT_SCHEDULE_AT[0]} steps (and again at {FIT_SCHEDULE_AT[1:]} while early), set "
                         "--total-steps so that the schedule ends inside --max-minutes")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--indexer-lr", type=float, default=None)
    ap.add_argument("--min-lr-ratio", type=float, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--weight-decay", type=float, default=None)
    ap.add_argument("--batch", type=int, default=None, help="sequences per micro-batch (halved on OOM)")
    ap.add_argument("--accum", type=int, default=None, help="micro-batches per optimizer step")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (8192)")
    ap.add_argument("--fim-rate", type=float, default=None)
    ap.add_argument("--fim-per-piece", type=int, default=1, help="files per repository piece that may become FIM examples")
    ap.add_argument("--spm-rate", type=float, default=0.0,
                    help="share of FIM examples in suffix-prefix-middle order (the rest prefix-suffix-middle)")
    ap.add_argument("--bias-gamma", type=float, default=None, help="aux-loss-free balancing bias step")
    ap.add_argument("--eval-every", type=int, default=None)
    ap.add_argument("--eval-seqs", type=int, default=16, help="held-out sequences per periodic eval")
    ap.add_argument("--eval-batch", type=int, default=4)
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-workers", type=int, default=6, help="processes building sequences (FIM) ahead")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                    help="torch.compile attention/norm/dense-MLP modules (auto: dense stage only)")
    ap.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing per layer")
    ap.add_argument("--no-ckpt", action="store_true", help="write no checkpoint (benchmarks)")
    ap.add_argument("--init-std", type=float, default=None, help="override initializer_range for a fresh model")
    ap.add_argument("--device", default=None, help="default cuda (cpu only for tests)")
    ap.add_argument("--profile-step", type=int, default=None,
                    help="profile the N-th step of this call (torch.profiler) and print the top kernels")
    a = ap.parse_args(argv)
    d = STAGE_DEFAULTS[a.stage]
    a.explicit = sorted(k for k in list(d) + ["seq_len"] if k != "compile" and getattr(a, k, None) is not None)
    if a.seq_len is None:
        a.seq_len = 8192
    for k, v in d.items():
        if k == "compile":
            continue
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    a.compile = d["compile"] if a.compile == "auto" else a.compile == "on"
    if a.tokenizer is None:
        a.tokenizer = os.path.join(os.path.dirname(os.path.abspath(a.data)), "tokenizer")
    return a


# ---------------------------------------------------------------------------------------------------------------
# Model setup
# ---------------------------------------------------------------------------------------------------------------

def build_model(args, hf_cfg: dict) -> GlanceForCausalLM:
    over = dict(gradient_checkpointing=bool(args.grad_ckpt))
    if args.init_std is not None:
        over["initializer_range"] = args.init_std
    cfg = GlanceConfig.from_hf_dict(hf_cfg, **over)
    torch.manual_seed(args.seed)
    return GlanceForCausalLM(cfg)


def grow_model(small: GlanceForCausalLM, big: GlanceForCausalLM) -> GlanceForCausalLM:
    """--config wider than the --resume model: grow it (grow_from) and check that the function is unchanged."""
    sizes = ", ".join(f"{k} {getattr(small.config, k)} -> {getattr(big.config, k)}" for k in GROWABLE_FIELDS)
    try:
        grown = grow_from(small, big)
    except ValueError as e:
        raise SystemExit(f"--resume model cannot become --config: {e}")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, small.config.vocab_size, (2, 256), generator=g)
    with torch.no_grad():
        a, b = small(ids, sparse=False).logits, big(ids, sparse=False).logits
    diff = float((a - b).abs().max())
    log(f"grew the model ({sizes}; {len(grown)} tensors): params {count_parameters(small)['total'] / 1e6:.2f}M -> "
        f"{count_parameters(big)['total'] / 1e6:.2f}M, max |logit difference| on random ids {diff:.2e}")
    if diff > 1e-3 * max(1.0, float(a.abs().max())):
        raise SystemExit(f"growing changed the model's function (max |logit difference| {diff:.3e})")
    return big


def set_trainable(model: GlanceForCausalLM, stage: str):
    for n, p in model.named_parameters():
        is_idx = ".indexer." in n
        p.requires_grad_({"dense": not is_idx, "indexer": is_idx, "sparse": True}[stage])


def make_optimizer(model: GlanceForCausalLM, args) -> torch.optim.Optimizer:
    groups = {"main_decay": [], "main_nodecay": [], "indexer_decay": [], "indexer_nodecay": []}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kind = "indexer" if ".indexer." in n else "main"
        groups[f"{kind}_{'decay' if p.dim() >= 2 else 'nodecay'}"].append(p)
    out = []
    for name, ps in groups.items():
        if not ps:
            continue
        base = args.indexer_lr if name.startswith("indexer") else args.lr
        if base <= 0:
            continue
        out.append(dict(params=ps, lr=base, base_lr=base, name=name,
                        weight_decay=args.weight_decay if name.endswith("_decay") else 0.0))
    if not out:
        raise ValueError("no trainable parameters with a positive learning rate")
    kw = dict(betas=(0.9, 0.95), eps=1e-8)
    try:
        return torch.optim.AdamW(out, fused=True, **kw)
    except Exception as e:  # pragma: no cover
        log(f"fused AdamW unavailable ({e}); using foreach")
        return torch.optim.AdamW(out, foreach=True, **kw)


# --fit-schedule: after these many steps of a call (torch.compile done, step time steady), the cosine's length is set
# so that it ends just inside --max-minutes, whatever the model size and GPU make of the step time. Refitted later
# while the schedule is still early (the cosine is flat there, so the LR barely moves): v0.6's only fit, at step 40,
# measured steps slowed by the miniature pipeline sharing the GPUs and ended stage 0 5.6 minutes early.
FIT_SCHEDULE_AT = (40, 500, 1000)
FIT_SCHEDULE_BEFORE = 0.4   # refit only while step < this share of the current schedule


def fit_total_steps(args, step: int, step_times: list[float], elapsed_s: float, eval_s: float, ckpt_s: float) -> int:
    """The step at which the time box ends, from the median of the recent step times, less the evals and
    checkpoints still to come and a margin (rank 0 decides; train() broadcasts it)."""
    per_step = statistics.median(step_times[-20:])
    left = args.max_minutes * 60 - elapsed_s - 30.0
    steps_left = left / per_step
    left -= (steps_left / args.eval_every) * eval_s + (left / 60 / args.ckpt_minutes + 1) * ckpt_s
    return max(step + 1, step + int(0.98 * left / per_step))


def lr_factor(step: int, args) -> float:
    """Linear warm-up, then cosine from 1 to min_lr_ratio at total_steps (flat after)."""
    if step < args.warmup:
        return (step + 1) / max(1, args.warmup)
    t = min(1.0, (step - args.warmup) / max(1, args.total_steps - args.warmup))
    return args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def compile_targets(model: GlanceForCausalLM) -> list[nn.Module]:
    """Static-shape pieces that torch.compile fuses well; the MoE expert loop (data-dependent) stays eager."""
    t = []
    for layer in model.model.layers:
        t += [layer.self_attn, layer.input_layernorm, layer.post_attention_layernorm]
        t.append(layer.mlp if isinstance(layer.mlp, MLP) else layer.mlp.shared_experts)
    t.append(model.model.norm)
    return t


def apply_compile(mods: list[nn.Module]):
    import torch._dynamo
    torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):
        torch._dynamo.config.accumulated_cache_size_limit = max(512, torch._dynamo.config.accumulated_cache_size_limit)
    for m in mods:
        m.compile()   # in place: state_dict names unchanged


def undo_compile(mods: list[nn.Module]):
    for m in mods:
        m._compiled_call_impl = None
    try:
        torch._dynamo.reset()
    except Exception:
        pass


# ---------------------------------------------------------------------------------------------------------------
# Data prefetch (thread: numpy + tokenizers release the GIL enough to hide FIM re-encoding)
# ---------------------------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------------------------
# Held-out evaluation
# ---------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: GlanceForCausalLM, seqs: list, batch: int, modes: tuple[str, ...]) -> dict:
    """Token-weighted held-out loss with dense and/or sparse attention (+ indexer KL for sparse)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    res = {}
    for mode in modes:
        sparse = mode == "sparse"
        tot, n, kl, nb = 0.0, 0, 0.0, 0
        for i in range(0, len(seqs), batch):
            ids = torch.from_numpy(np.stack([s[0] for s in seqs[i:i + batch]])).to(dev)
            lab = torch.from_numpy(np.stack([s[1] for s in seqs[i:i + batch]])).to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                out = model(ids, labels=lab, sparse=sparse, indexer_loss=sparse)
            k = int((lab[:, 1:] != -100).sum())
            tot += float(out.loss) * k
            n += k
            if sparse:
                kl += float(out.indexer_loss)
                nb += 1
        res[f"{mode}_loss"] = tot / max(1, n)
        if sparse:
            res["indexer_kl_topk"] = kl / max(1, nb)
    if "dense_loss" in res and "sparse_loss" in res:
        res["sparse_over_dense"] = res["sparse_loss"] / res["dense_loss"]
    res["eval_tokens"] = n
    model.train(was)
    return res


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------

def save_ckpt(path: str, state: dict):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def rng_state() -> dict:
    return dict(torch=torch.get_rng_state(), cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                numpy=np.random.get_state(), python=random.getstate())


def set_rng_state(s: dict):
    torch.set_rng_state(s["torch"])
    if torch.cuda.is_available() and s.get("cuda"):
        torch.cuda.set_rng_state_all(s["cuda"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    dist = None
    if WORLD > 1:
        import datetime
        import torch.distributed as dist
        if torch.cuda.is_available():
            torch.cuda.set_device(LOCAL_RANK)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                timeout=datetime.timedelta(minutes=10))
        log(f"data parallel: {WORLD} ranks")
    dev = torch.device(args.device or (f"cuda:{LOCAL_RANK}" if torch.cuda.is_available() else "cpu"))
    if dev.type != "cuda":
        log(f"WARNING: running on {dev} (tests only)")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    is_cuda = dev.type == "cuda"

    def max_mem():
        return torch.cuda.max_memory_allocated() / 2**30 if is_cuda else 0.0
    with open(args.config) as f:
        hf_cfg = json.load(f)

    # ---- resume / init ------------------------------------------------------------------------------------------
    ckpt_path = os.path.join(args.out, "ckpt.pt")
    resume = args.resume
    if resume is None and os.path.exists(ckpt_path):
        resume = ckpt_path
    ck, full_resume, history = None, False, []
    model = None
    if resume is not None:
        if os.path.isdir(resume):
            log(f"initialising from HF model dir {resume}")
            model = load_hf(resume)
            model.config.gradient_checkpointing = bool(args.grad_ckpt)
            if any(hf_cfg.get(k) is not None and hf_cfg[k] != getattr(model.config, k) for k in GROWABLE_FIELDS):
                model = grow_model(model, build_model(args, hf_cfg))
        else:
            ck = torch.load(resume, map_location="cpu", weights_only=False)
            full_resume = ck["stage"] == args.stage
            if resume == ckpt_path and not full_resume:
                raise SystemExit(f"{ckpt_path} belongs to stage {ck['stage']}; use another --out for {args.stage}")
            history = list(ck.get("history", []))
            if full_resume:   # a continued run keeps its schedule, batch and data layout unless told otherwise
                kept = {k: ck["args"][k] for k in list(STAGE_DEFAULTS[args.stage]) + ["seq_len"]
                        if k != "compile" and k not in args.explicit and k in ck.get("args", {})}
                for k, v in kept.items():
                    setattr(args, k, v)
                log(f"continuing with the checkpoint's settings: {kept}")
            if not full_resume:
                history.append(dict(stage=ck["stage"], steps=ck["step"], tokens=ck["tokens"],
                                    tokens_nonpad=ck.get("tokens_nonpad", ck["tokens"]), ckpt=os.path.abspath(resume)))
            if ck.get("hf_config") and ck["hf_config"] != hf_cfg:
                diff = sorted(k for k in set(ck["hf_config"]) | set(hf_cfg) if ck["hf_config"].get(k) != hf_cfg.get(k))
                log(f"WARNING: --config differs from the checkpoint's config in {diff}; using the checkpoint's")
                hf_cfg = ck["hf_config"]
    if model is None:
        model = build_model(args, hf_cfg)
        if ck is not None:
            model.load_state_dict(ck["model"], strict=True)
    cfg = model.config
    model.to(dev)
    if dist is not None:   # identical start on every rank, whatever the init path did
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, 0)
    set_trainable(model, args.stage)
    model.train()
    pc = count_parameters(model)
    log(f"stage {args.stage}: params total {pc['total'] / 1e6:.2f}M, active {pc['active'] / 1e6:.2f}M, "
        f"indexer {pc['indexer'] / 1e6:.3f}M, trainable "
        f"{sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f}M; "
        f"{'resuming' if full_resume else ('init from ' + resume if resume else 'fresh init')}")

    opt = make_optimizer(model, args)
    step, tokens, tokens_nonpad, epoch, idx = 0, 0, 0, 0, 0
    micro = args.batch
    if full_resume:
        fresh = [(g["name"], g["base_lr"], g["weight_decay"]) for g in opt.param_groups]
        opt.load_state_dict(ck["optimizer"])
        for g, (name, base, wd) in zip(opt.param_groups, fresh):   # this call's --lr / --weight-decay win
            g.update(name=name, base_lr=base, weight_decay=wd)
        step, tokens = ck["step"], ck["tokens"]
        tokens_nonpad = ck.get("tokens_nonpad", tokens)
        epoch, idx = ck["data_pos"]["epoch"], ck["data_pos"]["idx"]
        micro = min(micro, ck.get("micro_batch", micro))
        if ck.get("world", 1) != WORLD:
            log(f"WARNING: checkpoint written with {ck.get('world', 1)} ranks, continuing with {WORLD} "
                f"(same data position, different batch per step)")
        set_rng_state(ck["rng"])
        log(f"resumed at step {step}, {tokens / 1e6:.1f}M tokens, data position epoch {epoch} index {idx}")
    del ck

    # ---- data ---------------------------------------------------------------------------------------------------
    tok = gd.load_tokenizer(args.tokenizer) if args.fim_rate > 0 else None
    train_c = gd.Corpus(args.data, "train", args.seq_len)
    stream = gd.SequenceStream(train_c, seed=args.seed, fim_rate=args.fim_rate, tokenizer=tok, shuffle=True,
                               fim_per_piece=args.fim_per_piece, spm_rate=args.spm_rate)
    held_c = gd.Corpus(args.data, "heldout", args.seq_len)
    held = gd.SequenceStream(held_c, shuffle=False)
    n_eval = min(args.eval_seqs, held.epoch_len(0))
    eval_seqs = [held.sequence(0, i)[:2] for i in range(n_eval)]
    seqs_per_step = args.batch * args.accum
    log(f"data: {train_c.n_tokens / 1e6:.1f}M train tokens, {stream.epoch_len(0)} sequences of {args.seq_len} per "
        f"epoch; {n_eval} held-out sequences for periodic eval; {seqs_per_step * WORLD} sequences "
        f"({seqs_per_step * WORLD * args.seq_len} tokens) per step over {WORLD} rank(s); FIM rate {args.fim_rate}, "
        f"SPM share {args.spm_rate}")
    pf = gd.Prefetcher(stream, epoch, idx, workers=args.data_workers, rank=RANK, world=WORLD)

    eval_modes = ("dense",) if args.stage == "dense" else ("dense", "sparse")
    sparse = args.stage == "sparse"
    want_kl = args.stage != "dense"
    trainable = [p for p in model.parameters() if p.requires_grad]
    targets = compile_targets(model) if args.compile else []
    if targets:
        apply_compile(targets)
        log(f"torch.compile on {len(targets)} modules (attention, norms, dense/shared MLPs)")

    # ---- log files ----------------------------------------------------------------------------------------------
    logf = open(os.path.join(args.out, "log.jsonl"), "a") if RANK == 0 else None

    def write(rec):
        if logf is not None:
            logf.write(json.dumps(rec) + "\n")
            logf.flush()

    write(dict(event="start", stage=args.stage, step=step, args=vars(args), params=pc, resumed=full_resume,
               time=time.time()))

    try:
        from tqdm import tqdm
        bar = tqdm(total=args.total_steps, initial=step, desc=args.stage, mininterval=5, file=sys.stderr,
                   dynamic_ncols=False, ncols=110, disable=None if RANK == 0 else True)   # off when not a terminal
    except Exception:  # pragma: no cover
        bar = None

    def checkpoint(final: bool = False):
        if args.no_ckpt or RANK != 0:
            return 0.0
        t0 = time.time()
        state = dict(version=1, stage=args.stage, step=step, tokens=tokens, tokens_nonpad=tokens_nonpad,
                     model=model.state_dict(), optimizer=opt.state_dict(), data_pos=dict(epoch=epoch, idx=idx),
                     rng=rng_state(), hf_config=hf_cfg, args=vars(args), history=history, micro_batch=micro, world=WORLD,
                     final=final, time=time.time())
        save_ckpt(ckpt_path, state)
        dt = time.time() - t0
        log(f"checkpoint step {step} -> {ckpt_path} ({dt:.1f}s)")
        return dt

    last_eval = None

    def run_eval():
        nonlocal last_eval
        if RANK != 0:          # the other ranks wait at the next collective
            return
        t0 = time.time()
        r = evaluate(model, eval_seqs, args.eval_batch, eval_modes)
        r["eval_s"] = time.time() - t0
        last_eval = dict(step=step, **r)
        write(dict(event="eval", stage=args.stage, step=step, tokens=tokens, **r))
        log("eval step %d: %s" % (step, ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in r.items())))

    # ---- loop ---------------------------------------------------------------------------------------------------
    start_step = step
    last_ckpt = time.time()
    ckpt_cost = 5.0
    step_times: list[float] = []
    stop_reason = "total_steps"
    if step == 0 and not full_resume:
        run_eval()
    compiled_ok = not targets
    while step < args.total_steps:
        if args.steps is not None and step - start_step >= args.steps:
            stop_reason = "steps"
            break
        t0 = time.time()
        batch = [pf.get() for _ in range(seqs_per_step)]
        ids_all = torch.from_numpy(np.stack([b[2] for b in batch]))
        lab_all = torch.from_numpy(np.stack([b[3] for b in batch]))
        nonpad = int((lab_all != -100).sum())
        prof = None
        if args.profile_step is not None and step - start_step + 1 == args.profile_step:
            from torch.profiler import ProfilerActivity, profile
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if is_cuda else [])
            prof = profile(activities=acts)
            prof.__enter__()
        fac = lr_factor(step, args)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * fac
        while True:
            try:
                opt.zero_grad(set_to_none=True)
                lm_sum = kl_sum = 0.0
                n = ids_all.shape[0]
                for i in range(0, n, micro):
                    ids = ids_all[i:i + micro].to(dev, non_blocking=True)
                    lab = lab_all[i:i + micro].to(dev, non_blocking=True)
                    w = ids.shape[0] / n
                    with torch.autocast(dev.type, dtype=torch.bfloat16):
                        out = model(ids, labels=None if args.stage == "indexer" else lab, sparse=sparse,
                                    indexer_loss=want_kl)
                    if args.stage == "dense":
                        loss = out.loss
                    elif args.stage == "indexer":
                        loss = out.indexer_loss
                    else:
                        loss = out.loss + out.indexer_loss
                    (loss * w).backward()
                    if out.loss is not None:
                        lm_sum += float(out.loss.detach()) * w
                    if out.indexer_loss is not None:
                        kl_sum += float(out.indexer_loss.detach()) * w
                    del out, loss
                break
            except torch.OutOfMemoryError:
                opt.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                if micro == 1:
                    raise
                micro //= 2
                log(f"OOM: micro-batch -> {micro} (x{math.ceil(seqs_per_step / micro)} accumulation)")
                model.update_expert_bias(0.0)   # drop the counts of the failed try
            except Exception as e:
                if compiled_ok:
                    raise
                log(f"torch.compile failed ({type(e).__name__}: {str(e)[:300]}); continuing eager")
                undo_compile(targets)
                targets, compiled_ok = [], True
                opt.zero_grad(set_to_none=True)
                model.update_expert_bias(0.0)
        compiled_ok = True
        if dist is not None:
            # one flat all-reduce of every trainable gradient (an expert no token reached has none: zeros), so
            # that every rank clips and steps identically
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in trainable]
            flat = torch.cat([g.reshape(-1) for g in grads])   # fp32: the master weights' gradients
            dist.all_reduce(flat, op=dist.ReduceOp.AVG)
            o = 0
            for p, g in zip(trainable, grads):
                n_ = g.numel()
                p.grad = flat[o:o + n_].view_as(g)
                o += n_
            del flat, grads
            stats = torch.tensor([lm_sum, kl_sum, float(nonpad)], device=dev, dtype=torch.float64)
            dist.all_reduce(stats)
            lm_sum, kl_sum, nonpad = float(stats[0]) / WORLD, float(stats[1]) / WORLD, int(stats[2])
        gn = torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        bal = model.update_expert_bias(args.bias_gamma, all_reduce=dist.all_reduce if dist is not None else None)
        if is_cuda:
            torch.cuda.synchronize()
        dt = time.time() - t0
        if prof is not None:
            prof.__exit__(None, None, None)
            key = "cuda_time_total" if is_cuda else "cpu_time_total"
            log(f"profile of step {step + 1} ({dt:.3f}s):\n" + prof.key_averages().table(sort_by=key, row_limit=25,
                                                                                           max_name_column_width=60))
        step += 1
        tokens += ids_all.numel() * WORLD
        tokens_nonpad += nonpad
        epoch, idx = batch[-1][5]
        if dist is not None:   # the step consumed a contiguous block of the global order: resume after its end
            pos = [None] * WORLD
            dist.all_gather_object(pos, (epoch, idx))
            epoch, idx = max(pos)
        step_times.append(dt)
        rec = dict(step=step, stage=args.stage, lr=opt.param_groups[0]["lr"], grad_norm=float(gn), step_s=dt,
                   tok_per_s=ids_all.numel() * WORLD / dt, tokens=tokens, tokens_nonpad=tokens_nonpad, epoch=epoch,
                   fim=sum(b[4]["fim"] for b in batch), micro=micro,
                   mem_gb=max_mem())
        if args.stage != "indexer":
            rec["loss"] = lm_sum
        if want_kl:
            rec["indexer_kl"] = kl_sum
        if bal:
            v = list(bal.values())
            rec["max_load"] = max(v)
            rec["mean_max_load"] = sum(v) / len(v)
        write(rec)
        if bar is not None:
            bar.update(1)
            pf_ = {"loss": f"{rec.get('loss', kl_sum):.3f}", "tok/s": f"{rec['tok_per_s'] / 1e3:.0f}k"}
            bar.set_postfix(pf_, refresh=False)
        if step % args.log_every == 0 or step == start_step + 1:
            log(f"step {step}/{args.total_steps} " + " ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()
                if k not in ("stage", "step")))
        if step % args.eval_every == 0 and step < args.total_steps:
            run_eval()
        # time budget and periodic checkpoint: rank 0 decides for every rank (clocks and step times differ)
        now = time.time()
        stop = do_ckpt = False
        if args.max_minutes is not None:
            est = max(step_times[-5:]) * 1.5 + ckpt_cost + 5
            if (step + 1) % args.eval_every == 0 or step + 1 >= args.total_steps:
                est += (last_eval or {}).get("eval_s", 10.0)
            stop = now - T_START + est > args.max_minutes * 60
        do_ckpt = now - last_ckpt > args.ckpt_minutes * 60
        fitted = 0
        if (args.fit_schedule and args.max_minutes is not None and step - start_step in FIT_SCHEDULE_AT
                and (step - start_step == FIT_SCHEDULE_AT[0] or step < FIT_SCHEDULE_BEFORE * args.total_steps)):
            fitted = fit_total_steps(args, step, step_times, now - T_START, (last_eval or {}).get("eval_s", 10.0),
                                     ckpt_cost)
        if dist is not None:
            flags = torch.tensor([int(stop), int(do_ckpt), fitted], device=dev)
            dist.broadcast(flags, 0)
            stop, do_ckpt, fitted = bool(flags[0].item()), bool(flags[1].item()), int(flags[2].item())
        if fitted > 0:
            log(f"schedule fitted to the time box: total steps {args.total_steps} -> {fitted} "
                f"({statistics.median(step_times[-20:]):.3f} s/step on rank 0's clock)")
            args.total_steps = fitted
        if stop:
            stop_reason = "max_minutes"
            break
        if do_ckpt:
            ckpt_cost = max(ckpt_cost, checkpoint())
            last_ckpt = time.time()
            if dist is not None:
                dist.barrier()

    pf.close()
    if bar is not None:
        bar.close()
    done = step >= args.total_steps
    if (done or stop_reason == "steps") and (last_eval is None or last_eval["step"] != step):
        run_eval()
    checkpoint(final=done)
    timed = step_times[2:] if len(step_times) > 4 else step_times
    summary = dict(stage=args.stage, step=step, total_steps=args.total_steps, done=done, stop_reason=stop_reason,
                   tokens=tokens, tokens_nonpad=tokens_nonpad, steps_this_call=step - start_step,
                   mean_step_s=(sum(timed) / len(timed)) if timed else None,
                   tok_per_s=(seqs_per_step * WORLD * args.seq_len * len(timed) / sum(timed)) if timed else None,
                   max_mem_gb=max_mem(), micro_batch=micro, last_eval=last_eval,
                   history=history + [dict(stage=args.stage, steps=step, tokens=tokens, tokens_nonpad=tokens_nonpad)],
                   params=pc, compiled=bool(targets), wall_s=time.time() - T_START)
    summary["world"] = WORLD
    if RANK == 0:
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    write(dict(event="end", **{k: v for k, v in summary.items() if k != "history"}))
    log(f"stop ({stop_reason}) at step {step}: {json.dumps({k: summary[k] for k in ('tokens', 'tok_per_s', 'mean_step_s', 'max_mem_gb', 'done')})}")
    if logf is not None:
        logf.close()
    if dist is not None:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
