"""DRS models: FM, Wide & Deep, DCN, DeepFM, AFN and DLRM as plain ``nn.Module`` s.

Every model is ``Model(field_dims, n_dense, embed_dim=16, mlp_dims=(16, 16), ...)`` with
``forward(dense [B, n_dense] float, sparse [B, n_fields] long) -> logits [B]`` and exactly three
top-level children, so fault-injection target sets are name globs (see ``TARGET_SETS``):

* ``embedding`` — a :class:`~pytei_ray.studies.drs.layers.FieldEmbedding`: the shared categorical
  table (``embedding.factors.weight``), first-order weights (``embedding.linear.weight``) and the
  numeric feature embeddings (``embedding.numeric_*``);
* ``dense`` — an ``nn.ModuleDict`` with the middle of the network: MLPs (``dense.mlp.fc0``...),
  cross layers (``dense.cross``), the FM interaction (``dense.fm``), AFN's logarithmic neurons
  (``dense.lnn``), DLRM's bottom/top MLPs (``dense.bottom``, ``dense.top``);
* ``predictor`` — the output ``nn.Linear`` (registered last, so it is the model's last Linear).

Example:
    >>> import torch
    >>> model = build_model("deepfm", field_dims=[5, 7], n_dense=3, seed=0)
    >>> model(torch.zeros(4, 3), torch.zeros(4, 2, dtype=torch.long)).shape
    torch.Size([4])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .layers import (
    CrossNetwork,
    DotInteraction,
    FieldEmbedding,
    FMInteraction,
    LogarithmicNeurons,
    mlp,
)

__all__ = ["AFN", "DCN", "DLRM", "FM", "MODELS", "DeepFM", "WideAndDeep", "build_model"]


class _DRSModel(nn.Module):
    """Shared constructor checks and attributes."""

    def __init__(self, field_dims: Sequence[int], n_dense: int, embed_dim: int) -> None:
        super().__init__()
        if n_dense < 0:
            raise ValueError(f"Expected `n_dense` to be >= 0, but got {n_dense}.")
        if embed_dim < 1:
            raise ValueError(f"Expected `embed_dim` to be >= 1, but got {embed_dim}.")
        self.field_dims = [int(d) for d in field_dims]
        self.n_dense = int(n_dense)
        self.embed_dim = int(embed_dim)


class FM(_DRSModel):
    """Factorization machine (Rendle 2010).

    ``logit = predictor([first_order, fm_interaction])``; the predictor starts as the plain sum
    (weights 1, bias 0), and ``dense.fm.weight`` scales each factor dimension (1 at init).
    """

    def __init__(
        self,
        field_dims: Sequence[int],
        n_dense: int,
        embed_dim: int = 16,
        mlp_dims: Sequence[int] = (16, 16),
    ) -> None:
        super().__init__(field_dims, n_dense, embed_dim)
        del mlp_dims  # FM has no MLP; accepted for a uniform constructor.
        self.embedding = FieldEmbedding(field_dims, n_dense, embed_dim, linear=True)
        self.dense = nn.ModuleDict({"fm": FMInteraction(embed_dim)})
        self.predictor = nn.Linear(2, 1)
        nn.init.ones_(self.predictor.weight)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(dense, sparse)
        terms = torch.stack(
            [self.embedding.first_order(dense, sparse), self.dense["fm"](emb)], dim=1
        )
        return self.predictor(terms).squeeze(1)


class WideAndDeep(_DRSModel):
    """Wide & Deep (Cheng et al. 2016): first-order wide part + MLP over all field embeddings."""

    def __init__(
        self,
        field_dims: Sequence[int],
        n_dense: int,
        embed_dim: int = 16,
        mlp_dims: Sequence[int] = (16, 16),
    ) -> None:
        super().__init__(field_dims, n_dense, embed_dim)
        self.embedding = FieldEmbedding(field_dims, n_dense, embed_dim, linear=True)
        n_in = self.embedding.n_fields * embed_dim
        self.dense = nn.ModuleDict({"mlp": mlp(n_in, mlp_dims)})
        self.predictor = nn.Linear(mlp_dims[-1], 1)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(dense, sparse)
        deep = self.predictor(self.dense["mlp"](emb.flatten(1))).squeeze(1)
        return self.embedding.first_order(dense, sparse) + deep


class DCN(_DRSModel):
    """Deep & Cross Network (Wang et al. 2017): cross layers and an MLP in parallel.

    Args:
        n_cross: Number of cross layers.
    """

    def __init__(
        self,
        field_dims: Sequence[int],
        n_dense: int,
        embed_dim: int = 16,
        mlp_dims: Sequence[int] = (16, 16),
        n_cross: int = 3,
    ) -> None:
        super().__init__(field_dims, n_dense, embed_dim)
        self.embedding = FieldEmbedding(field_dims, n_dense, embed_dim)
        n_in = self.embedding.n_fields * embed_dim
        self.dense = nn.ModuleDict(
            {"cross": CrossNetwork(n_in, n_cross), "mlp": mlp(n_in, mlp_dims)}
        )
        self.predictor = nn.Linear(n_in + mlp_dims[-1], 1)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x0 = self.embedding(dense, sparse).flatten(1)
        h = torch.cat([self.dense["cross"](x0), self.dense["mlp"](x0)], dim=1)
        return self.predictor(h).squeeze(1)


class DeepFM(_DRSModel):
    """DeepFM (Guo et al. 2017): FM (first + second order) plus an MLP sharing the embeddings."""

    def __init__(
        self,
        field_dims: Sequence[int],
        n_dense: int,
        embed_dim: int = 16,
        mlp_dims: Sequence[int] = (16, 16),
    ) -> None:
        super().__init__(field_dims, n_dense, embed_dim)
        self.embedding = FieldEmbedding(field_dims, n_dense, embed_dim, linear=True)
        n_in = self.embedding.n_fields * embed_dim
        self.dense = nn.ModuleDict({"fm": FMInteraction(embed_dim), "mlp": mlp(n_in, mlp_dims)})
        self.predictor = nn.Linear(mlp_dims[-1], 1)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(dense, sparse)
        deep = self.predictor(self.dense["mlp"](emb.flatten(1))).squeeze(1)
        return self.embedding.first_order(dense, sparse) + self.dense["fm"](emb) + deep


class AFN(_DRSModel):
    """Adaptive Factorization Network (Cheng et al. 2020).

    Logarithmic neurons learn arbitrary-order feature crosses, an MLP reads them; a first-order
    term is added as in torchfm's AFN. A LayerNorm (``dense.norm``) stands in for torchfm's
    BatchNorm after the neurons: it tames ``exp`` and keeps no running statistics (buffers).

    Args:
        n_neurons: Number of logarithmic neurons.
    """

    def __init__(
        self,
        field_dims: Sequence[int],
        n_dense: int,
        embed_dim: int = 16,
        mlp_dims: Sequence[int] = (16, 16),
        n_neurons: int = 16,
    ) -> None:
        super().__init__(field_dims, n_dense, embed_dim)
        self.embedding = FieldEmbedding(field_dims, n_dense, embed_dim, linear=True)
        lnn = LogarithmicNeurons(self.embedding.n_fields, n_neurons)
        # Start near the identity in log space: small powers keep exp() tame early in training.
        nn.init.normal_(lnn.linear.weight, std=0.02)
        nn.init.zeros_(lnn.linear.bias)
        self.dense = nn.ModuleDict(
            {
                "lnn": lnn,
                "norm": nn.LayerNorm(n_neurons * embed_dim),
                "mlp": mlp(n_neurons * embed_dim, mlp_dims),
            }
        )
        self.predictor = nn.Linear(mlp_dims[-1], 1)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(dense, sparse)
        h = self.dense["mlp"](self.dense["norm"](self.dense["lnn"](emb)))
        return self.embedding.first_order(dense, sparse) + self.predictor(h).squeeze(1)


class DLRM(_DRSModel):
    """DLRM (Naumov et al. 2019) in its usual layout.

    Numeric features go through the bottom MLP (``n_dense -> *bottom_dims -> embed_dim``, ReLU
    after every layer), categorical fields through the embedding table; the dot interaction
    takes all pairwise dot products of these vectors, concatenated with the bottom output, into
    the top MLP and the final ``predictor`` Linear. With ``n_dense == 0`` there is no bottom MLP
    and only the embeddings interact.

    Args:
        bottom_dims: Hidden widths of the bottom MLP (its last layer is ``embed_dim`` wide).
    """

    def __init__(
        self,
        field_dims: Sequence[int],
        n_dense: int,
        embed_dim: int = 16,
        mlp_dims: Sequence[int] = (16, 16),
        bottom_dims: Sequence[int] = (16,),
    ) -> None:
        super().__init__(field_dims, n_dense, embed_dim)
        self.embedding = FieldEmbedding(field_dims, n_dense, embed_dim, numeric=False)
        n_vec = len(self.field_dims) + (1 if n_dense else 0)
        n_top = n_vec * (n_vec - 1) // 2 + (embed_dim if n_dense else 0)
        parts: dict[str, nn.Module] = {}
        if n_dense:
            parts["bottom"] = mlp(n_dense, (*bottom_dims, embed_dim))
        parts["interaction"] = DotInteraction()
        parts["top"] = mlp(n_top, mlp_dims)
        self.dense = nn.ModuleDict(parts)
        self.predictor = nn.Linear(mlp_dims[-1], 1)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(dense, sparse)
        if self.n_dense:
            bottom = self.dense["bottom"](dense)
            vectors = torch.cat([bottom.unsqueeze(1), emb], dim=1)
            top_in = torch.cat([bottom, self.dense["interaction"](vectors)], dim=1)
        else:
            top_in = self.dense["interaction"](emb)
        return self.predictor(self.dense["top"](top_in)).squeeze(1)


MODELS: dict[str, type[nn.Module]] = {
    "fm": FM,
    "wide_deep": WideAndDeep,
    "dcn": DCN,
    "deepfm": DeepFM,
    "afn": AFN,
    "dlrm": DLRM,
}


def build_model(
    name: str, field_dims: Sequence[int], n_dense: int, *, seed: int = 0, **kwargs: Any
) -> nn.Module:
    """Build a registered model with deterministic initialization.

    The global RNG is seeded inside ``torch.random.fork_rng``, so the caller's RNG state is left
    untouched and the same ``seed`` gives bit-identical initial weights.

    Args:
        name: A key of ``MODELS``.
        field_dims: Rows per categorical field (including the OOV row 0).
        n_dense: Number of numeric features.
        seed: Initialization seed.
        **kwargs: Passed to the model constructor (``embed_dim``, ``mlp_dims``, ...).

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        KeyError: For an unknown ``name``.
    """
    if name not in MODELS:
        raise KeyError(f"Unknown DRS model {name!r}; expected one of {sorted(MODELS)}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](field_dims, n_dense, **kwargs)
