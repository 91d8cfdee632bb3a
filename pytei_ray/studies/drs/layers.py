"""Building blocks shared by the DRS models.

All categorical fields share ONE embedding table with per-field row offsets (the torchfm layout
used by the reference study): field ``f``'s local index ``i`` lives in row ``offsets[f] + i`` of
``factors``. Local index 0 of every field is its OOV/missing row. One table means one gather per
forward pass (fast) and one obvious fault target, ``embedding.factors.weight``.

Numeric (dense) features become extra "fields" with value-scaled embeddings
``e_j = x_j * numeric_factors[j] + numeric_offsets[j]`` (the offset gives a missing value, which
is preprocessed to ``x_j = 0``, its own learnable vector), so every model — FM included — sees
the numeric features through the same field interface. DLRM instead sends them through its
bottom MLP, as in its reference layout.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "CrossNetwork",
    "DotInteraction",
    "FMInteraction",
    "FieldEmbedding",
    "LogarithmicNeurons",
    "mlp",
]


class FieldEmbedding(nn.Module):
    """Embeddings of categorical (and optionally numeric) fields.

    Parameters (names as they appear under the model's ``embedding.`` prefix):
    ``factors.weight`` [sum(field_dims), D] the shared categorical table; ``linear.weight``
    [sum(field_dims), 1] first-order weights (only with ``linear=True``); ``numeric_factors`` and
    ``numeric_offsets`` [n_dense, D] (only with ``numeric=True`` and ``n_dense > 0``) and
    ``numeric_linear`` [n_dense] (also needs ``linear=True``).

    Args:
        field_dims: Rows per categorical field (index 0 = OOV/missing included).
        n_dense: Number of numeric features.
        embed_dim: Embedding size D.
        linear: Also hold first-order (per-category scalar) weights.
        numeric: Embed numeric features as extra fields.
        init_std: Standard deviation of the initial embedding vectors.
    """

    def __init__(
        self,
        field_dims: Sequence[int],
        n_dense: int,
        embed_dim: int,
        *,
        linear: bool = False,
        numeric: bool = True,
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        dims = [int(d) for d in field_dims]
        if not dims or min(dims) < 1:
            raise ValueError(f"Expected `field_dims` to be non-empty positive ints, got {dims}.")
        offsets = torch.tensor([0, *dims[:-1]], dtype=torch.long).cumsum(0)
        # Non-persistent: derived from field_dims, so checkpoints hold parameters only.
        self.register_buffer("offsets", offsets, persistent=False)
        self.factors = nn.Embedding(sum(dims), embed_dim)
        nn.init.normal_(self.factors.weight, std=init_std)
        self.linear = nn.Embedding(sum(dims), 1) if linear else None
        if self.linear is not None:
            nn.init.zeros_(self.linear.weight)
        self.n_dense = int(n_dense) if numeric else 0
        if self.n_dense:
            self.numeric_factors = nn.Parameter(torch.randn(self.n_dense, embed_dim) * init_std)
            self.numeric_offsets = nn.Parameter(torch.randn(self.n_dense, embed_dim) * init_std)
            if linear:
                self.numeric_linear = nn.Parameter(torch.zeros(self.n_dense))
        self.n_fields = len(dims) + self.n_dense

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Field embeddings ``[B, n_fields, D]`` (categorical first, then numeric)."""
        emb = self.factors(sparse + self.offsets)
        if self.n_dense:
            num = dense.unsqueeze(-1) * self.numeric_factors + self.numeric_offsets
            emb = torch.cat([emb, num], dim=1)
        return emb

    def first_order(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Sum of first-order weights ``[B]`` (requires ``linear=True``)."""
        if self.linear is None:
            raise RuntimeError("FieldEmbedding was built with linear=False.")
        out = self.linear(sparse + self.offsets).sum(dim=(1, 2))
        if self.n_dense:
            out = out + dense @ self.numeric_linear
        return out


def mlp(in_dim: int, dims: Sequence[int]) -> nn.Sequential:
    """``Linear -> ReLU`` stack with layers named ``fc0, act0, fc1, act1, ...``.

    Example:
        >>> mlp(8, (16, 16))[0]
        Linear(in_features=8, out_features=16, bias=True)
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, width in enumerate(dims):
        layers[f"fc{i}"] = nn.Linear(in_dim, int(width))
        layers[f"act{i}"] = nn.ReLU()
        in_dim = int(width)
    return nn.Sequential(layers)


class FMInteraction(nn.Module):
    """Factorization-machine second-order term with a learnable per-factor scale.

    ``y = 1/2 * sum_d w_d * ((sum_f e_fd)^2 - sum_f e_fd^2)``; ``w`` starts at 1 (plain FM).
    """

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(embed_dim))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """``[B, F, D] -> [B]``."""
        square_of_sum = emb.sum(dim=1).pow(2)
        sum_of_square = emb.pow(2).sum(dim=1)
        return 0.5 * ((square_of_sum - sum_of_square) * self.weight).sum(dim=1)


class CrossNetwork(nn.Module):
    """DCN (v1) cross layers: ``x_{l+1} = x_0 * (w_l . x_l) + b_l + x_l``.

    Args:
        in_dim: Width of ``x_0``.
        n_layers: Number of cross layers.
    """

    def __init__(self, in_dim: int, n_layers: int) -> None:
        super().__init__()
        self.weights = nn.ModuleList(nn.Linear(in_dim, 1, bias=False) for _ in range(n_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(in_dim)) for _ in range(n_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim] -> [B, in_dim]``."""
        x = x0
        for w, b in zip(self.weights, self.biases):
            x = torch.addcmul(x + b, x0, w(x))
        return x


class LogarithmicNeurons(nn.Module):
    """AFN logarithmic transformation layer.

    Each of ``n_neurons`` outputs is ``exp(sum_f w_nf * log|e_f|)``, i.e. a product of field
    embeddings raised to learned (possibly fractional) powers, computed per embedding dimension.

    Args:
        n_fields: Number of input fields.
        n_neurons: Number of logarithmic neurons.
        eps: Lower clamp of ``|e|`` before the logarithm.
    """

    def __init__(self, n_fields: int, n_neurons: int, eps: float = 1e-7) -> None:
        super().__init__()
        self.linear = nn.Linear(n_fields, n_neurons)
        self.eps = eps

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """``[B, F, D] -> [B, n_neurons * D]``."""
        log_emb = emb.abs().clamp_min(self.eps).log().transpose(1, 2)  # [B, D, F]
        return self.linear(log_emb).exp().flatten(1)


class DotInteraction(nn.Module):
    """DLRM pairwise dot-product interaction (strict lower triangle, no self products)."""

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """``[B, K, D] -> [B, K*(K-1)/2]``."""
        k = vectors.shape[1]
        gram = torch.bmm(vectors, vectors.transpose(1, 2)).flatten(1)
        rows, cols = torch.tril_indices(k, k, offset=-1, device=vectors.device)
        return gram.index_select(1, rows * k + cols)
