"""A small byte-level GPT trained on Python's own standard library: the training-fault study.

Example:
    >>> from pytei_ray.studies.gpt import SETTINGS, FORMATS
    >>> sorted(SETTINGS), sorted(FORMATS)
    (['full', 'small', 'tiny'], ['bf16', 'fp32'])
"""

from __future__ import annotations

from .corpus import STDLIB_MODULES, ByteCorpus, CorpusSpec, load_corpus
from .model import CONFIGS, GPT, TARGET_SETS, VOCAB, GPTConfig, build_gpt
from .study import GPTStudy, TrainingState
from .train import (
    FORMATS,
    SETTINGS,
    TELEMETRY,
    GPTSetting,
    StepAction,
    StepState,
    TrainingHooks,
    TrainingRun,
    continue_training,
    format_dtype,
    loss_closure,
    make_optimizer,
    perplexity,
    set_lr,
    validation_loss,
)

__all__ = [
    "CONFIGS",
    "FORMATS",
    "GPT",
    "SETTINGS",
    "STDLIB_MODULES",
    "TARGET_SETS",
    "TELEMETRY",
    "VOCAB",
    "ByteCorpus",
    "CorpusSpec",
    "GPTConfig",
    "GPTSetting",
    "GPTStudy",
    "StepAction",
    "StepState",
    "TrainingHooks",
    "TrainingRun",
    "TrainingState",
    "build_gpt",
    "continue_training",
    "format_dtype",
    "load_corpus",
    "loss_closure",
    "make_optimizer",
    "perplexity",
    "set_lr",
    "validation_loss",
]
