"""The reusable half of the ViT campaign: train once (cached), convert, load data, score.

    study = ViTStudy.preset("full")
    Campaign(models={f"vit-{f}": Level(study.model(f), format=f) for f in FORMATS},
             data=study.eval_data, evaluate=study.evaluate, calibrate=study.calibrate, ...)

``study.model(fmt)`` is a factory taking a :class:`~pytei_ray.execution.context.BuildContext`:
it loads the fp32 checkpoint from the results directory's artifact cache (training it first if
it is not there: one torch thread, seeded, early stopping on validation) and converts it to
``fmt``. Every format is the *same* trained model, so their golden runs differ only by the
format. The test split is used only by :meth:`ViTStudy.evaluate`.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..common import (
    EvalData,
    checkpoint_bytes,
    checkpoint_key,
    load_checkpoint,
    torch_threads,
    trained_or_cached,
)
from .data import ImageSplit, check_dataset, load_split
from .model import FORMATS, ViT, convert, format_bits
from .train import SETTINGS, ViTSetting, accuracy, logits, train

__all__ = ["CLAMP_LAYERS", "EvalData", "ViTStudy"]

_CKPT_FORMAT = 1


def _clamp_layers() -> tuple[type[nn.Module], ...]:
    layers: list[type[nn.Module]] = [nn.Linear]
    try:  # the int8 model's Linear layers
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

        layers.append(DynamicQuantizedLinear)
    except ImportError:  # pragma: no cover
        pass
    return tuple(layers)


#: Layers whose outputs ``Clip``/``Ranger`` bound: every Linear, float or int8 (all but the
#: last, the head). Use as ``Clip(layers=CLAMP_LAYERS)``.
CLAMP_LAYERS = _clamp_layers()


@dataclass(frozen=True)
class ViTStudy:
    """Hooks of a ViT campaign: build (train once, then load) and convert, load and score data.

    Args:
        dataset: a name in :data:`~pytei_ray.studies.vit.data.DATASETS`.
        setting: model size and schedule.
        seed: split, initialization and training seed.

    Example:
        >>> ViTStudy.preset("tiny").checkpoint_name()  # doctest: +ELLIPSIS
        'vit-...pt'
    """

    dataset: str = "digits"
    setting: ViTSetting = field(default_factory=ViTSetting)
    seed: int = 0

    def __post_init__(self) -> None:
        check_dataset(self.dataset)

    @classmethod
    def preset(cls, name: str = "full", dataset: str = "digits", seed: int = 0) -> ViTStudy:
        """A study with the :data:`~pytei_ray.studies.vit.train.SETTINGS` preset ``name``."""
        if name not in SETTINGS:
            raise ValueError(f"Expected `setting` to be one of {sorted(SETTINGS)}, but got "
                             f"{name!r}.")
        return cls(dataset, SETTINGS[name], seed)

    def splits(self) -> tuple[ImageSplit, ImageSplit, ImageSplit]:
        """``(train, validation, test)``."""
        return load_split(self.dataset, self.seed)

    # ---- models ----------------------------------------------------------------------------
    def checkpoint_name(self) -> str:
        """``vit-<key>.pt``: the key hashes dataset, setting, seed and checkpoint format."""
        ident = {"dataset": self.dataset, "setting": asdict(self.setting), "seed": self.seed,
                 "format": _CKPT_FORMAT}
        return f"vit-{checkpoint_key(ident)}.pt"

    def model(self, fmt: str) -> functools.partial:
        """The factory of the model in number format ``fmt``: ``(ctx=None) -> model``.

        Raises:
            ValueError: an unknown format (before any trial: the job calls this).
        """
        format_bits(fmt)
        return functools.partial(self.trained, fmt)

    def trained(self, fmt: str = "fp32", ctx: Any = None) -> nn.Module:
        """The trained model in format ``fmt``: the fp32 checkpoint from ``ctx``'s cache (or
        trained now), converted."""
        return convert(trained_or_cached(ctx, self.checkpoint_name(), self._train_bytes,
                                         self._load), fmt)

    def _build(self) -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            return ViT(**self.setting.model_kwargs())

    def _train_bytes(self) -> bytes:
        train_data, val_data, _ = self.splits()
        model = self._build()
        with torch_threads(1):  # the weights are a function of the seeds
            result = train(model, train_data, val_data, self.setting, seed=self.seed)
        meta = {"format": _CKPT_FORMAT, "setting": asdict(self.setting), "seed": self.seed,
                "dataset": self.dataset, "best_epoch": result.best_epoch,
                "best_val_accuracy": result.best_val_accuracy, "history": result.history,
                "train_seconds": result.seconds}
        return checkpoint_bytes(result.state_dict, meta)

    def _load(self, data: bytes) -> nn.Module:
        state_dict, _ = load_checkpoint(data)
        model = self._build()
        model.load_state_dict(state_dict)
        return model.eval()

    # ---- data and metrics ------------------------------------------------------------------
    def eval_data(self, model_name: str) -> EvalData:
        """The ``data`` hook: test and validation splits (every format sees the same)."""
        del model_name
        _, val_data, test_data = self.splits()
        return EvalData(test_data, val_data)

    def evaluate(self, model: nn.Module, data: EvalData) -> dict[str, float]:
        """The ``evaluate`` hook: ``accuracy`` and ``nonfinite`` on the test split."""
        return accuracy(model, data.test)

    def calibrate(self, model: nn.Module, data: EvalData) -> None:
        """The ``calibrate`` hook: one clean pass over the validation split (never test)."""
        logits(model, data.validation)


def check_formats(formats: list[str] | tuple[str, ...]) -> list[str]:
    """``formats`` if each is in :data:`.model.FORMATS`, else ``ValueError``."""
    for f in formats:
        format_bits(f)
    if not formats:
        raise ValueError(f"Expected at least one number format of {list(FORMATS)}.")
    return list(formats)
