"""A small byte-level decoder-only transformer (GPT) from torch's own layers.

Attention is written out (``qkv`` Linear, scores, causal mask, softmax, ``proj``) instead of
calling ``F.scaled_dot_product_attention``, for two reasons a training-fault study needs:

* the attention logits pass through a module of their own (``blocks.<i>.attn.scores``, an
  ``nn.Identity``), so forward hooks, and the activation injector, can reach them by name;
* each :class:`CausalSelfAttention` keeps the largest logit of its last forward pass as a 0-d
  tensor (:attr:`CausalSelfAttention.max_logit`, detached, no host synchronisation), and
  :attr:`GPT.max_attention_logit` is the largest over the blocks: the telemetry that
  attention-logit growth (a known precursor of loss spikes) is watched with.

Low-precision models (every parameter, gradient, optimizer moment and activation in bf16) do
their matrix products the way tensor cores do: bf16 operands, fp32 accumulation, the result
rounded to bf16 (:func:`matmul`, :class:`Linear`). Written as upcast-multiply-round, this runs at
fp32 speed on CPUs without bf16 units (torch's own bf16 CPU GEMM is 6-10x slower than fp32 on an
AVX2 machine) and gives the same numbers on every device up to the order of the accumulation.

There is no dropout: a training step is a pure function of the weights, the optimizer state and
the batch, which is what a bit-for-bit golden trajectory needs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CONFIGS", "TARGET_SETS", "VOCAB", "GPT", "GPTConfig", "Linear", "build_gpt", "matmul"]

#: Byte-level vocabulary: every token is one byte of UTF-8 text.
VOCAB = 256


@dataclass(frozen=True)
class GPTConfig:
    """Model size.

    Attributes:
        context: tokens per sequence (position embeddings).  dim: embedding width.
        depth: transformer blocks.  heads: attention heads (must divide ``dim``).
        mlp_ratio: MLP hidden width / ``dim``.
    """

    context: int = 128
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        for name in ("context", "dim", "depth", "heads", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected `{name}` to be a positive integer, but got "
                                 f"{value!r}.")
        if self.dim % self.heads:
            raise ValueError(f"Expected `heads` to divide `dim`, but got dim={self.dim}, "
                             f"heads={self.heads}.")

    def as_dict(self) -> dict[str, int]:
        """Plain fields (checkpoint keys, metadata)."""
        return asdict(self)


#: Named sizes: ``tiny`` for tests (seconds), ``small`` for a first look, ``full`` for the study.
CONFIGS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(context=32, dim=32, depth=2, heads=2, mlp_ratio=2),
    "small": GPTConfig(context=64, dim=64, depth=3, heads=4, mlp_ratio=4),
    "full": GPTConfig(context=64, dim=96, depth=4, heads=4, mlp_ratio=4),
}


_LOW = (torch.bfloat16, torch.float16)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``; bf16/fp16 operands are multiplied in fp32 and the product rounded back."""
    if a.dtype in _LOW:
        return (a.float() @ b.float()).to(a.dtype)
    return a @ b


class Linear(nn.Linear):
    """``nn.Linear`` whose bf16/fp16 product accumulates in fp32 (see :func:`matmul`); an
    ``nn.Linear`` for every type check, mitigation and target set."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in _LOW:
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self.weight.float(), bias).to(x.dtype)
        return super().forward(x)


#: Weight target sets (parameter-name globs; ``None`` = every parameter). Module names for
#: activation sites: ``blocks.<i>.attn.qkv|scores|proj``, ``blocks.<i>.mlp.fc1|act|fc2``,
#: ``blocks.<i>.ln1|ln2``, ``ln_f``, ``head``.
TARGET_SETS: dict[str, list[str] | None] = {
    "embedding": ["tok_emb.*", "pos_emb.*"],
    "attention": ["blocks.*.attn.*"],
    "mlp": ["blocks.*.mlp.*"],
    "norm": ["blocks.*.ln*", "ln_f.*"],
    "head": ["head.*"],
    "all": None,
}


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with an observable logit.

    Attributes:
        max_logit: 0-d float32 tensor, the largest attention logit (scaled ``q.k``, causal
            positions only) of the last forward pass; NaN if a logit was NaN. None before the
            first call.
    """

    def __init__(self, dim: int, heads: int, context: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = Linear(dim, 3 * dim)
        self.scores = nn.Identity()  # hook point: the (n, heads, t, t) attention logits
        self.proj = Linear(dim, dim)
        mask = torch.ones(context, context, dtype=torch.bool).tril()
        self.register_buffer("causal", mask, persistent=False)
        self.max_logit: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        att = self.scores(matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hd)))
        att = att.masked_fill(~self.causal[:t, :t], float("-inf"))
        # the diagonal is never masked, so the max is over real logits (NaN propagates)
        self.max_logit = att.detach().amax().float()
        out = matmul(torch.softmax(att, dim=-1), v)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    """``fc1`` -> GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.attn = CausalSelfAttention(cfg.dim, cfg.heads, cfg.context)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.mlp = Mlp(cfg.dim, cfg.mlp_ratio * cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Byte-level GPT: token + position embeddings, pre-LN blocks, final norm, linear head.

    The head is not tied to the token embedding, so each parameter is one fault site of its
    own (a flip in ``tok_emb.weight`` does not also change the output layer).

    Example:
        >>> model = build_gpt(CONFIGS["tiny"], seed=0)
        >>> model(torch.zeros(2, 8, dtype=torch.long)).shape
        torch.Size([2, 8, 256])
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(VOCAB, cfg.dim)
        self.pos_emb = nn.Embedding(cfg.context, cfg.dim)
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.depth)])
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.head = Linear(cfg.dim, VOCAB, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2's scheme: N(0, 0.02), residual projections scaled by 1/sqrt(2 * depth)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * self.cfg.depth) if name.endswith(
                    ("attn.proj.weight", "mlp.fc2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, t, 256)`` for byte ids ``idx`` ``(n, t)``, ``t <= context``."""
        t = idx.shape[1]
        if t > self.cfg.context:
            raise ValueError(f"Expected at most {self.cfg.context} tokens per sequence (the "
                             f"model's context), but got {t}.")
        pos = torch.arange(t, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        return self.head(self.ln_f(self.blocks(x)))

    @property
    def max_attention_logit(self) -> torch.Tensor | None:
        """The largest attention logit of the last forward pass over every block (0-d float32
        tensor; NaN if any was NaN), or None before the first forward."""
        values = [b.attn.max_logit for b in self.blocks if b.attn.max_logit is not None]
        if not values:
            return None
        return torch.stack(values).amax() if len(values) > 1 else values[0]


def build_gpt(cfg: GPTConfig, seed: int = 0) -> GPT:
    """A freshly initialised :class:`GPT`: its weights are a function of ``cfg`` and ``seed``
    only (torch's global RNG is forked, so callers' random streams are left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(cfg)
