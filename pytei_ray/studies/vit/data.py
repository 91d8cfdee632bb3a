"""Image data for the ViT study: scikit-learn's handwritten digits, split with a fixed seed.

``load_digits`` reads 1,797 8x8 grey images (10 classes) from the installed scikit-learn
package; nothing is downloaded. Pixels (0..16) are scaled to [0, 1].
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

__all__ = ["DATASETS", "ImageSplit", "load_split"]

#: Accepted ``dataset`` names (datasets that ship with an installed package).
DATASETS = ("digits",)


@dataclass(frozen=True)
class ImageSplit:
    """Images ``x`` (``(N, 1, H, W)`` float32) and labels ``y`` (``(N,)`` int64)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> ImageSplit:
        """Both tensors on ``device`` (the worker moves the data next to its replica)."""
        return ImageSplit(self.x.to(device), self.y.to(device))


def check_dataset(dataset: str) -> None:
    """Raise ``ValueError`` unless ``dataset`` is one of :data:`DATASETS`."""
    if dataset not in DATASETS:
        raise ValueError(f"Expected `dataset` to be one of {list(DATASETS)} (shipped with an "
                         f"installed package; nothing is downloaded), but got {dataset!r}.")


@functools.lru_cache(maxsize=4)
def load_split(dataset: str = "digits", seed: int = 0,
               fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
               ) -> tuple[ImageSplit, ImageSplit, ImageSplit]:
    """``(train, validation, test)`` of ``dataset``, a seeded permutation cut by ``fractions``.

    Example:
        >>> tr, va, te = load_split("digits", seed=0)  # doctest: +SKIP
        >>> len(tr), len(va), len(te)                  # doctest: +SKIP
        (1078, 359, 360)
    """
    check_dataset(dataset)
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("The ViT study needs scikit-learn for its digits dataset: "
                          "pip install scikit-learn") from exc
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_train = int(round(fractions[0] * len(y)))
    n_val = int(round(fractions[1] * len(y)))
    parts = (perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:])
    return tuple(ImageSplit(x[i].contiguous(), y[i].contiguous()) for i in parts)  # type: ignore[return-value]
