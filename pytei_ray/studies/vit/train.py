"""Training with early stopping, and the NaN-robust accuracy every trial is scored with."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageSplit
from .model import model_dtype

__all__ = ["TrainResult", "ViTSetting", "SETTINGS", "accuracy", "logits", "train"]


@dataclass(frozen=True)
class ViTSetting:
    """Model size and training schedule of a preset.

    Attributes:
        dim, depth, heads, mlp_ratio: ViT hyper-parameters.
        epochs: maximum epochs.  batch_size, lr, weight_decay: AdamW schedule.
        patience: epochs without a better validation accuracy before stopping.
    """

    dim: int = 32
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    epochs: int = 80
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    patience: int = 10

    def model_kwargs(self) -> dict[str, float | int]:
        """Constructor arguments of :class:`~pytei_ray.studies.vit.model.ViT`."""
        return {"dim": self.dim, "depth": self.depth, "heads": self.heads,
                "mlp_ratio": self.mlp_ratio}


#: "full" and "small" use the same model (the small look differs in its grid); "tiny" is
#: for tests (seconds).
SETTINGS: dict[str, ViTSetting] = {
    "full": ViTSetting(),
    "small": ViTSetting(),
    "tiny": ViTSetting(dim=16, depth=1, heads=2, epochs=40, patience=6, lr=5e-3),
}


@dataclass
class TrainResult:
    """Best state (by validation accuracy), its epoch and accuracy, history, seconds."""

    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    best_val_accuracy: float
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0


def logits(model: nn.Module, data: ImageSplit, batch_size: int = 512) -> torch.Tensor:
    """Float32 logits of ``model`` on ``data`` (inputs cast to the model's dtype)."""
    dtype = model_dtype(model)
    outs = [model(data.x[i:i + batch_size].to(dtype)).float()
            for i in range(0, len(data), batch_size)]
    return torch.cat(outs)


def accuracy(model: nn.Module, data: ImageSplit) -> dict[str, float]:
    """``accuracy`` (an image whose logits hold a NaN or inf counts as wrong), ``nonfinite``
    (fraction of images with a non-finite logit) and ``crashed`` (1.0 when the forward pass
    raised: the int8 model's dynamically quantized Linear cannot quantize a NaN/inf activation,
    e.g. after a flip in a float32 layer norm; every image then counts as wrong, with no
    output: a detected error rather than a silent one)."""
    with torch.no_grad():
        try:
            out = logits(model, data)
        except RuntimeError as exc:
            if "ChooseQuantizationParams" not in str(exc):
                raise
            return {"accuracy": 0.0, "nonfinite": 1.0, "crashed": 1.0}
    finite = torch.isfinite(out).all(dim=1)
    right = (out.argmax(dim=1) == data.y) & finite
    return {"accuracy": right.float().mean().item(),
            "nonfinite": (~finite).float().mean().item(), "crashed": 0.0}


def train(model: nn.Module, train_data: ImageSplit, val_data: ImageSplit, setting: ViTSetting,
          seed: int = 0) -> TrainResult:
    """AdamW with cosine decay; keeps the state of the best validation accuracy and stops
    after ``setting.patience`` epochs without improvement."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=setting.lr,
                            weight_decay=setting.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=setting.epochs)
    best, best_epoch, best_state, history = -1.0, -1, None, []
    for epoch in range(setting.epochs):
        model.train()
        order = torch.randperm(len(train_data), generator=gen)
        for i in range(0, len(order), setting.batch_size):
            idx = order[i:i + setting.batch_size]
            loss = F.cross_entropy(model(train_data.x[idx]), train_data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        acc = accuracy(model, val_data)["accuracy"]
        history.append(acc)
        if acc > best:
            best, best_epoch, best_state = acc, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= setting.patience:
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    return TrainResult(best_state, best_epoch, best, history, time.perf_counter() - t0)
