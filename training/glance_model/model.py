"""Glance training model: a plain-PyTorch DeepSeek-V3.2 (MLA + DSA lightning indexer + MoE).

Parameter names are EXACTLY those of transformers' `DeepseekV32ForCausalLM` (v5 in-memory names, packed experts),
so `model.state_dict()` maps 1:1 onto HF; `export_hf()` writes the DeepSeek/HF *checkpoint* layout (per-expert
`mlp.experts.E.{gate,up,down}_proj.weight`) plus a config.json that HF loads with identical logits
(`check_hf.py` asserts it).

Semantics mirrored from transformers 5.17 `modeling_deepseek_v32.py` (and DeepSeek's reference `inference/model.py`):
  * MLA with q latent (q_a_proj -> RMSNorm -> q_b_proj) and kv latent (kv_a_proj_with_mqa -> RMSNorm -> kv_b_proj),
    q = [nope | rope], interleaved RoPE on the rope part, softmax scale qk_head_dim^-0.5 * yarn_mscale(all_dim)^2.
  * Lightning indexer per layer: q from the q latent (wq_b), k = LayerNorm(wk(x)), both [rope | nope] with
    NON-interleaved (half split) RoPE; score[t,s] = sum_h w[t,h] * relu(q[t,h].k[s] * D^-0.5),
    w = weights_proj(x) (fp32) * H^-0.5; causal; top-k.
  * MoE: sigmoid router (fp32), e_score_correction_bias used for SELECTION only, group-limited top-k
    (group score = sum of the top-2 biased scores), weights renormalised, * routed_scaling_factor, + shared expert.
    The first `first_k_dense_replace` layers use a dense MLP.
  * YaRN RoPE (cos/sin scaled by the YaRN attention factor, as HF does).

Training features:
  * bf16 autocast friendly: router and weights_proj run in fp32 with autocast disabled; norms compute in fp32.
  * Dense stage: MHA form (kv_b expanded) through F.scaled_dot_product_attention (flash / mem-efficient kernels),
    is_causal=True. Optionally pads v to the qk head dim so the flash kernel is eligible.
  * Sparse stage (`sparse=True`): the indexer's top-k (no grad) becomes a boolean mask (causal AND selected).
  * `indexer_loss=True`: per layer KL(p || softmax(I)) where p is the head-summed, L1-normalised main attention
    distribution (detached) and I the index scores; the indexer sees DETACHED inputs, so it is trained only by this
    loss and never changes the main model (DeepSeek-V3.2 paper: dense warm-up, then sparse training over the
    selected set).
  * Auxiliary-loss-free load balancing: routers count tokens per expert; `update_expert_bias(gamma)` moves
    e_score_correction_bias by gamma * sign(mean_load - load) (DeepSeek-V3).

Only torch (and safetensors for export/load) is needed.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


# ------------------------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------------------------

@dataclass
class GlanceConfig:
    vocab_size: int = 512
    hidden_size: int = 256
    intermediate_size: int = 768          # dense MLP (first_k_dense_replace layers)
    moe_intermediate_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    n_shared_experts: int = 1
    n_routed_experts: int = 16
    num_experts_per_tok: int = 2
    n_group: int = 4
    topk_group: int = 2
    routed_scaling_factor: float = 2.5
    norm_topk_prob: bool = True
    first_k_dense_replace: int = 1
    q_lora_rank: int = 192                # required (HF v3.2 attention and the indexer use the q latent)
    kv_lora_rank: int = 128
    qk_nope_head_dim: int = 64
    qk_rope_head_dim: int = 32
    v_head_dim: int = 64
    index_n_heads: int = 8
    index_head_dim: int = 64
    index_topk: int = 512
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 16384
    rope_theta: float = 10000.0
    # None for plain RoPE, else {"rope_type": "yarn", "factor", "original_max_position_embeddings", "beta_fast",
    # "beta_slow", "mscale", "mscale_all_dim"}
    rope_scaling: Optional[dict] = None
    bos_token_id: int = 0
    eos_token_id: int = 1
    pad_token_id: Optional[int] = None
    initializer_range: float = 0.02
    # DeepSeek releases keep a separate lm_head; the shipped tiny model ties it to the embedding (HF's
    # DeepseekV32ForCausalLM honours tie_word_embeddings) to stay small enough to live in the repository.
    tie_word_embeddings: bool = False
    # training-only knobs (not exported)
    index_chunk: int = 1024               # query rows per indexer / KL chunk (bounds [B, chunk, H_I, T] memory)
    pad_v_for_flash: bool = True          # pad v to qk_head_dim in the dense SDPA path so flash attention applies
    gradient_checkpointing: bool = False

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    # --- HF config.json ------------------------------------------------------------------------------------------
    def to_hf_dict(self) -> dict:
        L = self.num_hidden_layers
        n_dense = min(self.first_k_dense_replace, L)
        rope = {"rope_type": "default", "rope_theta": float(self.rope_theta)}
        if self.rope_scaling:
            rope = dict(self.rope_scaling)
            rope["rope_type"] = rope.pop("rope_type", rope.pop("type", "yarn"))
            rope["rope_theta"] = float(self.rope_theta)
        return {
            "architectures": ["DeepseekV32ForCausalLM"],
            "model_type": "deepseek_v32",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "moe_intermediate_size": self.moe_intermediate_size,
            "num_hidden_layers": L,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_attention_heads,
            "n_shared_experts": self.n_shared_experts,
            "n_routed_experts": self.n_routed_experts,
            "num_experts_per_tok": self.num_experts_per_tok,
            "n_group": self.n_group,
            "topk_group": self.topk_group,
            "routed_scaling_factor": self.routed_scaling_factor,
            "norm_topk_prob": self.norm_topk_prob,
            "first_k_dense_replace": self.first_k_dense_replace,
            "mlp_layer_types": ["dense"] * n_dense + ["sparse"] * (L - n_dense),
            "layer_types": ["deepseek_sparse_attention"] * L,
            "q_lora_rank": self.q_lora_rank,
            "kv_lora_rank": self.kv_lora_rank,
            "qk_nope_head_dim": self.qk_nope_head_dim,
            "qk_rope_head_dim": self.qk_rope_head_dim,
            "v_head_dim": self.v_head_dim,
            "head_dim": self.qk_rope_head_dim,   # what HF writes (its rotary embedding reads head_dim)
            "index_n_heads": self.index_n_heads,
            "index_head_dim": self.index_head_dim,
            "index_topk": self.index_topk,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_parameters": rope,
            "hidden_act": "silu",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "initializer_range": self.initializer_range,
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_cache": True,
            # DeepSeek release keys (HF hard-codes these per model_type; our engine reads them)
            "scoring_func": "sigmoid",
            "topk_method": "noaux_tc",
            "moe_layer_freq": 1,
        }

    @classmethod
    def from_hf_dict(cls, d: dict, **overrides) -> "GlanceConfig":
        """Accepts both v5 (`rope_parameters`) and DeepSeek release (`rope_theta` + `rope_scaling`) styles."""
        if d.get("model_type") not in (None, "deepseek_v32"):
            raise ValueError(f"expected model_type deepseek_v32, got {d.get('model_type')}")
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        rope = dict(rope)
        theta = rope.pop("rope_theta", d.get("rope_theta", 10000.0))
        rtype = rope.pop("rope_type", rope.pop("type", "default"))
        scaling = None if rtype == "default" else dict(rope, rope_type=rtype)
        names = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in names and k not in ("rope_scaling", "rope_theta")}
        kw.update(rope_theta=float(theta), rope_scaling=scaling)
        kw.update(overrides)
        cfg = cls(**kw)
        if d.get("num_key_value_heads", cfg.num_attention_heads) != cfg.num_attention_heads:
            raise ValueError("MLA needs num_key_value_heads == num_attention_heads")
        return cfg


# ------------------------------------------------------------------------------------------------------------------
# RoPE (YaRN), identical arithmetic to transformers' _compute_yarn_parameters / rotary forward
# ------------------------------------------------------------------------------------------------------------------

def _yarn_get_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_inv_freq(cfg: GlanceConfig) -> tuple[torch.Tensor, float]:
    """(inv_freq [R/2] fp32, attention_factor applied to cos/sin)."""
    dim, base = cfg.qk_rope_head_dim, cfg.rope_theta
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim)
    rs = cfg.rope_scaling
    if not rs or rs.get("rope_type", rs.get("type")) == "default":
        return 1.0 / pos_freqs, 1.0
    if rs.get("rope_type", rs.get("type")) != "yarn":
        raise NotImplementedError(f"rope type {rs}")
    factor = rs["factor"]
    orig = rs["original_max_position_embeddings"]
    mscale, mscale_all = rs.get("mscale"), rs.get("mscale_all_dim")
    attn_factor = rs.get("attention_factor")
    if attn_factor is None:
        if mscale and mscale_all:
            attn_factor = float(_yarn_get_mscale(factor, mscale) / _yarn_get_mscale(factor, mscale_all))
        else:
            attn_factor = _yarn_get_mscale(factor)
    beta_fast = rs.get("beta_fast") or 32
    beta_slow = rs.get("beta_slow") or 1

    def corr_dim(n_rot):
        return (dim * math.log(orig / (n_rot * 2 * math.pi))) / (2 * math.log(base))

    low, high = corr_dim(beta_fast), corr_dim(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrap = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrap) + (1.0 / pos_freqs) * extrap
    return inv_freq, attn_factor


def softmax_scale(cfg: GlanceConfig) -> float:
    s = cfg.qk_head_dim ** -0.5
    rs = cfg.rope_scaling
    if rs and rs.get("rope_type", rs.get("type")) not in (None, "default"):
        m_all = rs.get("mscale_all_dim", 0)
        if m_all:
            m = _yarn_get_mscale(rs["factor"], m_all)
            s = s * m * m
    return s


def rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """MLA RoPE on adjacent pairs (x0,x1),(x2,x3)...; like HF the result comes out de-interleaved ([evens | odds]),
    identically for q and k, so q.k is the same as with the interleaved layout. cos/sin: [S, R] (cat(f, f) form),
    broadcast over x [..., S, R]."""
    c = cos[..., : cos.shape[-1] // 2]
    s = sin[..., : sin.shape[-1] // 2]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Indexer RoPE: NON-interleaved (pairs (i, i + R/2))."""
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    def __init__(self, cfg: GlanceConfig):
        super().__init__()
        # Plain attribute, not a buffer: model.to(bfloat16) must not round the frequencies (HF keeps them fp32).
        self.inv_freq, self.attention_scaling = rope_inv_freq(cfg)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=positions.device.type, enabled=False):
            inv = self.inv_freq.to(device=positions.device, dtype=torch.float32)
            freqs = positions.float()[:, None] * inv[None, :]                       # [S, R/2], fp32
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling
        return cos.to(dtype), sin.to(dtype)


# ------------------------------------------------------------------------------------------------------------------
# Building blocks (names == HF)
# ------------------------------------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(dt)


class MLP(nn.Module):
    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# Routers count tokens per expert for load balancing; a checkpointed layer's recomputation must not count twice.
_COUNT_LOAD = [True]


@contextlib.contextmanager
def _load_counting(enabled: bool):
    prev = _COUNT_LOAD[0]
    _COUNT_LOAD[0] = enabled
    try:
        yield
    finally:
        _COUNT_LOAD[0] = prev


class TopkRouter(nn.Module):
    """HF `DeepseekV32TopkRouter`: params `weight` [E, H], buffer `e_score_correction_bias` [E] (fp32)."""

    def __init__(self, cfg: GlanceConfig):
        super().__init__()
        E = cfg.n_routed_experts
        if E % cfg.n_group:
            raise ValueError("n_routed_experts must be divisible by n_group")
        self.top_k, self.num_experts, self.hidden_dim = cfg.num_experts_per_tok, E, cfg.hidden_size
        self.num_group, self.topk_group = cfg.n_group, cfg.topk_group
        self.norm_topk_prob, self.routed_scaling_factor = cfg.norm_topk_prob, cfg.routed_scaling_factor
        self.weight = nn.Parameter(torch.zeros(E, cfg.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(E, dtype=torch.float32))
        # tokens routed to each expert since the last update_expert_bias (not saved)
        self.register_buffer("expert_load", torch.zeros(E, dtype=torch.float32), persistent=False)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [T, H] -> (topk_indices [T, k] int64, topk_weights [T, k] fp32, differentiable w.r.t. self.weight)."""
        with torch.autocast(device_type=h.device.type, enabled=False):
            logits = F.linear(h.float(), self.weight.float())
        scores = logits.sigmoid()
        choice = scores.detach() + self.e_score_correction_bias        # bias steers selection only
        T, E, G = choice.shape[0], self.num_experts, self.num_group
        if G > self.topk_group:
            gscore = choice.view(T, G, E // G).topk(2, dim=-1)[0].sum(-1)
            gidx = gscore.topk(self.topk_group, dim=-1, sorted=False)[1]
            gmask = torch.zeros_like(gscore).scatter_(1, gidx, 1.0)
            emask = gmask.unsqueeze(-1).expand(T, G, E // G).reshape(T, E)
            choice = choice.masked_fill(~emask.bool(), float("-inf"))
        idx = choice.topk(self.top_k, dim=-1, sorted=False)[1]
        w = scores.gather(1, idx)
        if self.norm_topk_prob:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        w = w * self.routed_scaling_factor
        if self.training and _COUNT_LOAD[0]:
            self.expert_load += torch.bincount(idx.reshape(-1), minlength=E).float()
        return idx, w


class Experts(nn.Module):
    """HF packed layout: gate_up_proj [E, 2I, H] (rows [0, I) gate, [I, 2I) up), down_proj [E, H, I]."""

    def __init__(self, cfg: GlanceConfig):
        super().__init__()
        E, I, H = cfg.n_routed_experts, cfg.moe_intermediate_size, cfg.hidden_size
        self.num_experts = E
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * I, H))
        self.down_proj = nn.Parameter(torch.empty(E, H, I))

    def forward(self, h: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        T, K = idx.shape
        flat = idx.reshape(-1)
        order = flat.argsort(stable=True)                 # group the (token, slot) pairs by expert
        tok = order // K
        counts = torch.bincount(flat, minlength=self.num_experts).tolist()
        xs = h[tok]
        outs, start = [], 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            xe = xs[start:start + n]
            gate, up = F.linear(xe, self.gate_up_proj[e]).chunk(2, dim=-1)
            outs.append(F.linear(F.silu(gate) * up, self.down_proj[e]))
            start += n
        ys = torch.cat(outs, 0).float() * w.reshape(-1)[order, None]         # combine in fp32
        out = torch.zeros(T, h.shape[-1], dtype=torch.float32, device=h.device)
        return out.index_add_(0, tok, ys)


class MoE(nn.Module):
    def __init__(self, cfg: GlanceConfig):
        super().__init__()
        self.experts = Experts(cfg)
        self.gate = TopkRouter(cfg)
        self.shared_experts = MLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        h = x.reshape(-1, shape[-1])
        idx, w = self.gate(h)
        y = self.experts(h, idx, w).view(shape).to(x.dtype)
        return y + self.shared_experts(x)


# ------------------------------------------------------------------------------------------------------------------
# Lightning indexer
# ------------------------------------------------------------------------------------------------------------------

def _index_chunk(q: torch.Tensor, k: torch.Tensor, w: torch.Tensor, scale: float) -> torch.Tensor:
    """q [B, c, H, D] fp32, k [B, T, D] fp32, w [B, c, H] fp32 -> [B, c, T]; same op order as HF. The c*H query rows
    go through one bmm against k: a matmul broadcasting k over c would materialise it c times (and its gradient)."""
    B, c, H, D = q.shape
    s = torch.bmm(q.reshape(B, c * H, D), k.transpose(1, 2)).view(B, c, H, k.shape[1]) * scale   # [B, c, H, T]
    s = F.relu(s)
    return torch.matmul(w.unsqueeze(-2), s).squeeze(-2)                      # [B, c, T]


class Indexer(nn.Module):
    """HF `DeepseekV32Indexer`: wq_b, wk, k_norm (LayerNorm with bias), weights_proj (fp32)."""

    def __init__(self, cfg: GlanceConfig):
        super().__init__()
        self.n_heads, self.head_dim, self.rope_dim = cfg.index_n_heads, cfg.index_head_dim, cfg.qk_rope_head_dim
        self.index_topk, self.chunk = cfg.index_topk, cfg.index_chunk
        self.wq_b = nn.Linear(cfg.q_lora_rank, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.hidden_size, self.head_dim, bias=False)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.weights_proj = nn.Linear(cfg.hidden_size, self.n_heads, bias=False)
        self.softmax_scale = self.head_dim ** -0.5

    def forward(self, x: torch.Tensor, q_resid: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Causal index scores [B, S, S] fp32 (-inf above the diagonal). Callers pass DETACHED x / q_resid."""
        B, S, _ = x.shape
        H, D, R = self.n_heads, self.head_dim, self.rope_dim
        q = self.wq_b(q_resid).view(B, S, H, D)
        q_rot, q_pass = q.split([R, D - R], dim=-1)                           # [rope | nope]
        k = self.k_norm(self.wk(x))
        k_rot, k_pass = k.split([R, D - R], dim=-1)
        q = torch.cat([rope_half(q_rot, cos[None, :, None, :], sin[None, :, None, :]), q_pass], dim=-1).float()
        k = torch.cat([rope_half(k_rot, cos[None], sin[None]), k_pass], dim=-1).float()
        with torch.autocast(device_type=x.device.type, enabled=False):       # fp32 weights_proj, like HF / DeepSeek
            w = F.linear(x.float(), self.weights_proj.weight.float()) * (H ** -0.5)
        rows = []
        for t0 in range(0, S, self.chunk):
            t1 = min(S, t0 + self.chunk)
            if torch.is_grad_enabled() and S > self.chunk:
                # keep only [B, c, T] per chunk for backward instead of the [B, c, H, T] intermediates
                r = checkpoint(_index_chunk, q[:, t0:t1], k, w[:, t0:t1], self.softmax_scale, use_reentrant=False)
            else:
                r = _index_chunk(q[:, t0:t1], k, w[:, t0:t1], self.softmax_scale)
            rows.append(r)
        scores = torch.cat(rows, dim=1) if len(rows) > 1 else rows[0]
        causal = torch.ones(S, S, dtype=torch.bool, device=x.device).tril()
        return scores.masked_fill(~causal, float("-inf"))

    @torch.no_grad()
    def select(self, scores: torch.Tensor) -> torch.Tensor:
        """Boolean keep-mask [B, S, S]: causal AND in the row's top-k (rows with <= k candidates keep all)."""
        B, S, T = scores.shape
        k = min(self.index_topk, T)
        top = scores.topk(k, dim=-1).indices
        keep = torch.zeros(B, S, T, dtype=torch.bool, device=scores.device).scatter_(-1, top, True)
        return keep & torch.ones(S, T, dtype=torch.bool, device=scores.device).tril()


def indexer_kl(query: torch.Tensor, key: torch.Tensor, scale: float, index_scores: torch.Tensor,
               keep: torch.Tensor, chunk: int) -> torch.Tensor:
    """Mean over query rows of KL(p_t || softmax(I_t)) restricted to the keep set, where p_t is the main attention
    distribution summed over heads and L1-normalised (no grad), I_t the index scores (grad to the indexer only).
    query [B, Hq, S, Dqk], key [B, Hq, T, Dqk] (detached), index_scores [B, S, T], keep [B, S, T] bool."""
    B, Hq, S, _ = query.shape
    total = index_scores.new_zeros(())
    for t0 in range(0, S, chunk):
        t1 = min(S, t0 + chunk)
        kp = keep[:, t0:t1]
        with torch.no_grad(), torch.autocast(device_type=query.device.type, enabled=False):
            logits = torch.matmul(query[:, :, t0:t1].float(), key.float().transpose(-1, -2)) * scale  # [B,Hq,c,T]
            logits = logits.masked_fill(~kp[:, None], float("-inf"))
            p = torch.softmax(logits, dim=-1).sum(1)                        # head-summed
            p = p / p.sum(-1, keepdim=True).clamp_min(1e-30)                 # L1-normalised
        logq = torch.log_softmax(index_scores[:, t0:t1].float().masked_fill(~kp, float("-inf")), dim=-1)
        kl = torch.where(p > 0, p * (torch.log(p.clamp_min(1e-30)) - logq), torch.zeros_like(p))
        total = total + kl.sum()
    return total / (B * S)


# ------------------------------------------------------------------------------------------------------------------
# Attention (MLA + DSA), decoder layer, model
# ------------------------------------------------------------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, cfg: GlanceConfig):
        super().__init__()
        if cfg.q_lora_rank is None:
            raise ValueError("DeepSeek-V3.2 (and HF's DeepseekV32Attention) need q_lora_rank")
        self.cfg = cfg
        self.num_heads = cfg.num_attention_heads
        self.nope, self.rope, self.vdim = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        self.kv_lora = cfg.kv_lora_rank
        self.qk_head_dim = cfg.qk_head_dim
        H = self.num_heads
        self.q_a_proj = nn.Linear(cfg.hidden_size, cfg.q_lora_rank, bias=False)
        self.q_a_layernorm = RMSNorm(cfg.q_lora_rank)            # HF: default eps 1e-6
        self.q_b_proj = nn.Linear(cfg.q_lora_rank, H * self.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(cfg.hidden_size, cfg.kv_lora_rank + self.rope, bias=False)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank)
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, H * (self.nope + self.vdim), bias=False)
        self.o_proj = nn.Linear(H * self.vdim, cfg.hidden_size, bias=False)
        self.scaling = softmax_scale(cfg)
        self.indexer = Indexer(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sparse: bool,
                want_indexer_loss: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        B, S, _ = x.shape
        H = self.num_heads
        q_resid = self.q_a_layernorm(self.q_a_proj(x))
        q = self.q_b_proj(q_resid).view(B, S, H, self.qk_head_dim).transpose(1, 2)     # [B, H, S, Dqk]
        q_pass, q_rot = q.split([self.nope, self.rope], dim=-1)                       # [nope | rope]
        kv = self.kv_a_proj_with_mqa(x)
        kv_pass, k_rot = kv.split([self.kv_lora, self.rope], dim=-1)
        c_kv = self.kv_a_layernorm(kv_pass)                                           # [B, S, kv_lora] latent
        k_rot = k_rot.view(B, 1, S, self.rope)
        q_rot = rope_interleaved(q_rot, cos, sin)
        k_rot = rope_interleaved(k_rot, cos, sin)
        query = torch.cat([q_pass, q_rot], dim=-1)
        # MHA form for training: expand the latent with kv_b into per-head k_nope and v
        kvb = self.kv_b_proj(c_kv).view(B, S, H, self.nope + self.vdim).transpose(1, 2)
        k_nope, value = kvb.split([self.nope, self.vdim], dim=-1)
        key = torch.cat([k_nope, k_rot.expand(B, H, S, self.rope)], dim=-1)

        keep = scores = None
        if sparse or want_indexer_loss:
            # The indexer sees detached inputs: it never back-propagates into the main model.
            with torch.set_grad_enabled(want_indexer_loss and torch.is_grad_enabled()):
                scores = self.indexer(x.detach(), q_resid.detach(), cos, sin)
            keep = self.indexer.select(scores.detach()) if sparse else \
                torch.ones(S, S, dtype=torch.bool, device=x.device).tril().expand(B, S, S)

        if sparse and S > self.indexer.index_topk:
            mask = keep[:, None]                                                     # True = attend
            out = F.scaled_dot_product_attention(query, key, value.to(query.dtype), attn_mask=mask,
                                                 scale=self.scaling)
        else:  # dense (or sparse with every row selecting all its causal positions)
            v = value
            if self.cfg.pad_v_for_flash and self.vdim != self.qk_head_dim and query.is_cuda:
                v = F.pad(value, (0, self.qk_head_dim - self.vdim))                   # flash needs equal dims
            out = F.scaled_dot_product_attention(query, key, v.to(query.dtype), is_causal=True, scale=self.scaling)
            out = out[..., : self.vdim]
        out = self.o_proj(out.transpose(1, 2).reshape(B, S, H * self.vdim))

        loss = None
        if want_indexer_loss:
            loss = indexer_kl(query.detach(), key.detach(), self.scaling, scores, keep, self.cfg.index_chunk)
        return out, loss


class DecoderLayer(nn.Module):
    def __init__(self, cfg: GlanceConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size) if layer_idx < cfg.first_k_dense_replace else MoE(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, sparse: bool, want_indexer_loss: bool):
        a, il = self.self_attn(self.input_layernorm(x), cos, sin, sparse, want_indexer_loss)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, (il if il is not None else x.new_zeros(()))


class GlanceModel(nn.Module):
    def __init__(self, cfg: GlanceConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg)


@dataclass
class Output:
    logits: torch.Tensor
    loss: Optional[torch.Tensor] = None            # next-token cross entropy (if labels given)
    indexer_loss: Optional[torch.Tensor] = None    # mean over layers of the indexer KL (if requested)


class GlanceForCausalLM(nn.Module):
    """state_dict() names == HF DeepseekV32ForCausalLM (v5, packed experts)."""

    def __init__(self, cfg: GlanceConfig):
        super().__init__()
        self.config = cfg
        self.model = GlanceModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.init_weights()

    # --- init ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, std: Optional[float] = None):
        """HF-style init: normal(0, initializer_range) for matrices, ones for norms, zero router bias."""
        std = self.config.initializer_range if std is None else std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, std)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
            elif isinstance(m, Experts):
                nn.init.normal_(m.gate_up_proj, 0.0, std)
                nn.init.normal_(m.down_proj, 0.0, std)
            elif isinstance(m, TopkRouter):
                nn.init.normal_(m.weight, 0.0, std)
                m.e_score_correction_bias.zero_()

    # --- forward ------------------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, labels: Optional[torch.Tensor] = None, sparse: bool = False,
                indexer_loss: bool = False) -> Output:
        """input_ids [B, S] (packed, no padding). sparse: apply the indexer's top-k mask (DSA); indexer_loss: also
        return the indexer KL loss (dense warm-up: sparse=False; sparse training: sparse=True, KL over the kept set).
        labels: [B, S] targets aligned with input_ids (shifted inside, -100 ignored), like HF."""
        cfg = self.config
        B, S = input_ids.shape
        x = self.model.embed_tokens(input_ids)
        pos = torch.arange(S, device=input_ids.device)
        cos, sin = self.model.rotary_emb(pos, x.dtype)
        il_total = x.new_zeros((), dtype=torch.float32)
        for layer in self.model.layers:
            if cfg.gradient_checkpointing and self.training and torch.is_grad_enabled():
                calls = [0]

                def run(x_, layer=layer, calls=calls):
                    calls[0] += 1
                    with _load_counting(calls[0] == 1 and _COUNT_LOAD[0]):   # recomputation must not recount
                        return layer(x_, cos, sin, sparse, indexer_loss)

                x, il = checkpoint(run, x, use_reentrant=False)
            else:
                x, il = layer(x, cos, sin, sparse, indexer_loss)
            il_total = il_total + il.float()
        x = self.model.norm(x)
        logits = self.lm_head(x)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
        return Output(logits=logits, loss=loss,
                      indexer_loss=(il_total / len(self.model.layers)) if indexer_loss else None)

    def indexer_kl_loss(self, input_ids: torch.Tensor, sparse: bool = False) -> torch.Tensor:
        """The DeepSeek-V3.2 indexer training loss for a batch (stage 1: sparse=False over all causal positions;
        stage 2: sparse=True, over each row's selected set). Gradients reach only indexer parameters."""
        return self.forward(input_ids, sparse=sparse, indexer_loss=True).indexer_loss

    # --- training helpers ---------------------------------------------------------------------------------------
    def indexer_parameters(self):
        return [p for n, p in self.named_parameters() if ".indexer." in n]

    def main_parameters(self):
        return [p for n, p in self.named_parameters() if ".indexer." not in n]

    def set_indexer_warmup(self, on: bool = True):
        """Stage 1 (dense warm-up): freeze everything but the indexer."""
        for n, p in self.named_parameters():
            p.requires_grad_(".indexer." in n or not on)

    @torch.no_grad()
    def update_expert_bias(self, gamma: float, all_reduce: Optional[Callable[[torch.Tensor], None]] = None) -> dict:
        """Auxiliary-loss-free balancing (DeepSeek-V3): after each optimizer step, bias += gamma * sign(mean - load)
        per expert (overloaded experts get less likely to be selected). all_reduce: e.g. torch.distributed.all_reduce
        to sum the loads over data-parallel ranks. Returns {layer: max_load / mean_load} for logging."""
        stats = {}
        for name, m in self.named_modules():
            if isinstance(m, TopkRouter):
                load = m.expert_load.clone()
                if all_reduce is not None:
                    all_reduce(load)
                if load.sum() > 0:
                    m.e_score_correction_bias += gamma * torch.sign(load.mean() - load)
                    stats[name] = float(load.max() / load.mean().clamp_min(1e-9))
                m.expert_load.zero_()
        return stats

    @torch.no_grad()
    def generate_greedy(self, input_ids: torch.Tensor, max_new_tokens: int, sparse: bool = True) -> torch.Tensor:
        """Tiny re-prefill greedy decoder for sanity checks (no KV cache)."""
        ids = input_ids
        for _ in range(max_new_tokens):
            nxt = self.forward(ids, sparse=sparse).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
        return ids[:, input_ids.shape[1]:]


# ------------------------------------------------------------------------------------------------------------------
# Export / import in DeepSeek/HF checkpoint layout
# ------------------------------------------------------------------------------------------------------------------

_EXPERT_RE = re.compile(r"^(.*\.mlp\.experts)\.(gate_up_proj|down_proj)$")
_PER_EXPERT_RE = re.compile(r"^(.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def checkpoint_tensors(model: GlanceForCausalLM, dtype: torch.dtype = torch.bfloat16) -> dict:
    """state_dict -> checkpoint names (per-expert) in `dtype`; e_score_correction_bias stays fp32 (as DeepSeek and
    HF keep it)."""
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue  # tied: the checkpoint holds only model.embed_tokens.weight, as HF writes it
        t = t.detach().to("cpu")
        m = _EXPERT_RE.match(name)
        if m:
            prefix, kind = m.groups()
            if kind == "gate_up_proj":
                I = t.shape[1] // 2
                for e in range(t.shape[0]):
                    out[f"{prefix}.{e}.gate_proj.weight"] = t[e, :I].clone().to(dtype).contiguous()
                    out[f"{prefix}.{e}.up_proj.weight"] = t[e, I:].clone().to(dtype).contiguous()
            else:
                for e in range(t.shape[0]):
                    out[f"{prefix}.{e}.down_proj.weight"] = t[e].clone().to(dtype).contiguous()
        elif name.endswith("e_score_correction_bias"):
            out[name] = t.float().clone().contiguous()
        else:
            out[name] = t.to(dtype).clone().contiguous()
    return out


def export_hf(model: GlanceForCausalLM, out_dir: str, dtype: torch.dtype = torch.bfloat16,
              max_shard_bytes: Optional[int] = None) -> list[str]:
    """Write config.json + model.safetensors (or shards + index) loadable by HF DeepseekV32ForCausalLM and by the
    Glance engine."""
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    cfg = model.config.to_hf_dict()
    cfg["dtype"] = {torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float16: "float16"}[dtype]
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    ck = checkpoint_tensors(model, dtype)
    total = sum(t.numel() * t.element_size() for t in ck.values())
    if not max_shard_bytes or total <= max_shard_bytes:
        from safetensors.torch import save_file
        save_file({n: ck[n] for n in sorted(ck)}, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    return write_shards(ck, out_dir, max_shard_bytes)[0]


def write_shards(tensors: dict, out_dir: str, shard_bytes: int, order=None) -> tuple[list[str], int]:
    """Safetensors shards of at most shard_bytes each (tensors kept whole, in `order` or name order) plus
    model.safetensors.index.json. Returns (file names, total tensor bytes)."""
    from safetensors.torch import save_file
    names = sorted(tensors, key=order) if order else sorted(tensors)
    total = sum(tensors[n].numel() * tensors[n].element_size() for n in names)
    parts, cur, acc = [], [], 0
    for n in names:
        b = tensors[n].numel() * tensors[n].element_size()
        if b > shard_bytes:
            raise ValueError(f"tensor {n} ({b} bytes) is larger than a shard ({shard_bytes})")
        if cur and acc + b > shard_bytes:
            parts.append(cur)
            cur, acc = [], 0
        cur.append(n)
        acc += b
    parts.append(cur)
    files, wmap = [], {}
    for i, p in enumerate(parts):
        fn = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        save_file({n: tensors[n] for n in p}, os.path.join(out_dir, fn), metadata={"format": "pt"})
        files.append(fn)
        wmap.update({n: fn for n in p})
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, f, indent=2)
    return files, total


def load_hf(path: str, device: str = "cpu", **config_overrides) -> GlanceForCausalLM:
    """Load a deepseek_v32 checkpoint directory (per-expert or packed names; bf16/fp32/fp16 or DeepSeek FP8 with
    128x128 weight_scale_inv blocks) into a fp32 GlanceForCausalLM."""
    from safetensors.torch import load_file
    with open(os.path.join(path, "config.json")) as f:
        cfg = GlanceConfig.from_hf_dict(json.load(f), **config_overrides)
    ck = {}
    for fn in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        ck.update(load_file(fn))
    sd, experts = {}, {}
    for name, t in ck.items():
        if name.endswith("_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            s = ck[name + "_scale_inv"].float()
            r, c = t.shape
            t = t.float() * s.repeat_interleave(128, 0)[:r].repeat_interleave(128, 1)[:, :c]
        t = t.float()
        if name.startswith("model.layers.") and int(name.split(".")[2]) >= cfg.num_hidden_layers:
            continue  # e.g. the MTP layer of DeepSeek releases
        m = _PER_EXPERT_RE.match(name)
        if m:
            experts.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = t
        else:
            sd[name] = t
    for prefix, es in experts.items():
        n = len(es)
        sd[prefix + ".gate_up_proj"] = torch.stack([torch.cat([es[e]["gate_proj"], es[e]["up_proj"]]) for e in range(n)])
        sd[prefix + ".down_proj"] = torch.stack([es[e]["down_proj"] for e in range(n)])
    model = GlanceForCausalLM(cfg)
    if cfg.tie_word_embeddings:
        sd.setdefault("lm_head.weight", sd["model.embed_tokens.weight"])
    model.load_state_dict(sd, strict=True)
    return model.to(device)


# Config fields that grow_from() may widen; everything else must match the smaller model exactly.
GROWABLE_FIELDS = ("moe_intermediate_size", "intermediate_size")


@torch.no_grad()
def grow_from(small: GlanceForCausalLM, big: GlanceForCausalLM) -> list[str]:
    """Copy a trained model into a wider one so that the wider one computes the same function.

    Only MLP widths grow (routed and shared experts: moe_intermediate_size, dense layers: intermediate_size).
    A grown MLP keeps the old hidden units first; the new units' gate/up rows keep `big`'s random init and their
    down_proj columns are zeroed, so they add exactly nothing until training moves them (the zero columns get
    gradients at once, the gate/up rows one step later, as with LoRA's zero-initialised B). Returns the grown
    parameter names. Raises ValueError naming the first field or tensor that cannot be grown."""
    sc, bc = small.config, big.config
    for k in vars(sc):
        if k in GROWABLE_FIELDS or k == "gradient_checkpointing":
            continue
        if getattr(sc, k) != getattr(bc, k, None):
            raise ValueError(f"grow_from: config field {k!r} differs ({getattr(sc, k)!r} vs "
                             f"{getattr(bc, k, None)!r}); only {', '.join(GROWABLE_FIELDS)} may grow")
    for k in GROWABLE_FIELDS:
        if getattr(bc, k) < getattr(sc, k):
            raise ValueError(f"grow_from: {k} would shrink ({getattr(sc, k)} -> {getattr(bc, k)})")
    src = small.state_dict()
    grown = []
    for name, dst in big.state_dict().items():
        old = src[name]
        if old.shape == dst.shape:
            dst.copy_(old)
            continue
        grown.append(name)
        if name.endswith(".experts.gate_up_proj"):        # [E, 2I, H]: gate rows [0, I), up rows [I, 2I)
            i_old, i_new = old.shape[1] // 2, dst.shape[1] // 2
            dst[:, :i_old] = old[:, :i_old]
            dst[:, i_new:i_new + i_old] = old[:, i_old:]
        elif name.endswith(".experts.down_proj"):         # [E, H, I]
            dst.zero_()
            dst[:, :, :old.shape[2]] = old
        elif name.endswith((".gate_proj.weight", ".up_proj.weight")):   # [I, H]
            dst[:old.shape[0]] = old
        elif name.endswith(".down_proj.weight"):          # [H, I]
            dst.zero_()
            dst[:, :old.shape[1]] = old
        else:
            raise ValueError(f"grow_from: tensor {name} changes shape {tuple(old.shape)} -> {tuple(dst.shape)} "
                             f"and is not an MLP projection")
    return grown


def count_parameters(model: nn.Module) -> dict:
    tot = sum(p.numel() for p in model.parameters())
    idx = sum(p.numel() for n, p in model.named_parameters() if ".indexer." in n)
    exp = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    cfg = model.config
    active_exp = exp * cfg.num_experts_per_tok // max(1, cfg.n_routed_experts)
    return {"total": tot, "indexer": idx, "routed_experts": exp, "active": tot - exp + active_exp}
