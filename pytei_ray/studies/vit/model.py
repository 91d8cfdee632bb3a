"""A small Vision Transformer from torch's own layers, and its number-format variants.

The attention is written with two ``nn.Linear`` layers (``qkv`` and ``proj``) and
``F.scaled_dot_product_attention`` instead of ``nn.MultiheadAttention``: the latter keeps its
input projection as a bare ``in_proj_weight`` parameter that ``torch.ao`` cannot quantize, and
its output projection is a ``NonDynamicallyQuantizableLinear``; with plain Linears every matrix
of the model has an int8 version, and the parameter names are the usual ViT ones
(``blocks.0.attn.qkv.weight``), so the target sets read like timm's.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FORMATS", "TARGET_SETS", "BIT_TARGETS", "ViT", "convert", "format_bits",
           "model_dtype"]

#: Number formats a trained (fp32) model can be evaluated in, and their word widths in bits.
FORMATS: dict[str, int] = {"fp32": 32, "bf16": 16, "fp16": 16, "int8": 8}

#: Fault-injection target sets (parameter-name globs; ``None`` = every parameter). In the int8
#: model the Linear weights are quantized (``<module>.weight`` sites, int8 words); layer norms,
#: the class token and the position embedding stay float32, so ``norm`` flips fp32 words there.
TARGET_SETS: dict[str, list[str] | None] = {
    "patch": ["patch_embed.*"],
    "attention": ["blocks.*.attn.*"],
    "mlp": ["blocks.*.mlp.*"],
    "norm": ["blocks.*.norm*", "norm.*"],
    "head": ["head.*"],
    "all": None,
}

#: The weight matrices of every Linear layer: the words a bit sweep flips (int8 in every
#: layer of the int8 model, so one sweep covers one word format).
BIT_TARGETS: list[str] = ["patch_embed.proj.weight", "blocks.*.attn.qkv.weight",
                          "blocks.*.attn.proj.weight", "blocks.*.mlp.fc*.weight", "head.weight"]


def format_bits(fmt: str) -> int:
    """Word width of number format ``fmt`` (raises ``ValueError`` for an unknown format)."""
    if fmt not in FORMATS:
        raise ValueError(f"Expected a number format in {list(FORMATS)}, but got {fmt!r}.")
    return FORMATS[fmt]


class PatchEmbed(nn.Module):
    """Cut ``(N, 1, H, W)`` images into ``patch x patch`` squares and embed each linearly."""

    def __init__(self, patch: int, dim: int, channels: int = 1) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(channels * patch * patch, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.patch
        x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return self.proj(x.reshape(n, (h // p) * (w // p), c * p * p))


class Attention(nn.Module):
    """Multi-head self-attention: ``qkv`` Linear, scaled dot-product attention, ``proj``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    """``fc1`` -> GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A small Vision Transformer: patch embedding, class token, position embedding, pre-norm
    blocks, final norm, linear head on the class token.

    Args:
        image: image side (square images).  patch: patch side.  channels: input channels.
        dim: embedding width.  depth: blocks.  heads: attention heads.
        mlp_ratio: MLP hidden width / ``dim``.  classes: output classes.

    Example:
        >>> ViT()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, image: int = 8, patch: int = 2, channels: int = 1, dim: int = 64,
                 depth: int = 2, heads: int = 4, mlp_ratio: float = 2.0,
                 classes: int = 10) -> None:
        super().__init__()
        if image % patch or dim % heads:
            raise ValueError(f"Expected `patch` to divide `image` and `heads` to divide `dim`, "
                             f"but got image={image}, patch={patch}, dim={dim}, heads={heads}.")
        n_patches = (image // patch) ** 2
        self.patch_embed = PatchEmbed(patch, dim, channels)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n_patches + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs must have: that of the model's first floating-point parameter."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def convert(model: nn.Module, fmt: str) -> nn.Module:
    """A copy of a float32 ``model`` in number format ``fmt``.

    ``fp32``: a copy; ``bf16``/``fp16``: every parameter cast; ``int8``: ``torch.ao``'s dynamic
    quantization of the Linear layers (int8 weights, per-tensor scale; activations quantized on
    the fly), whose weights the injector reaches through their integer representation.

    Raises:
        ValueError: an unknown format, or one this torch build cannot produce.
    """
    format_bits(fmt)
    model = copy.deepcopy(model).float().eval()
    if fmt == "fp32":
        return model
    if fmt in ("bf16", "fp16"):
        return model.to(torch.bfloat16 if fmt == "bf16" else torch.float16)
    # torch.ao's quantize_dynamic stays, though torch deprecates it in favour of torchao's
    # `quantize_` (its DeprecationWarning and the quantized-tensor UserWarning are left visible:
    # nothing is silenced). torchao 0.18 installs next to this CPU torch without pulling another
    # one, but `quantize_` does not fit this model's purpose: it swaps each Linear weight for a
    # tensor subclass (Int8Tensor / AffineQuantizedTensor) that reports a float dtype and keeps
    # its int8 data and per-row scales inside, so the injector, which reaches quantized weights
    # through torch's qint8 dtype and int_repr(), would see float words or fail, and the int8
    # rows (bit positions, golden accuracy with a per-tensor scale) would change meaning.
    # Moving needs the fault core to learn torchao's tensors first.
    try:
        from torch.ao.quantization import quantize_dynamic

        with torch.no_grad():
            return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8).eval()
    except (ImportError, RuntimeError, AssertionError) as exc:  # no quantized engine here
        raise ValueError(f"Cannot convert the model to int8 on this torch build: {exc}") from exc
