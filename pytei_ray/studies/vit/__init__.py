"""A small Vision Transformer study: model, digits data, training, and a campaign's hooks.

Example:
    >>> from pytei_ray.studies.vit import ViTStudy, FORMATS
    >>> study = ViTStudy.preset("tiny")
    >>> sorted(FORMATS)
    ['bf16', 'fp16', 'fp32', 'int8']
"""

from __future__ import annotations

from .data import DATASETS, ImageSplit, load_split
from .model import BIT_TARGETS, FORMATS, TARGET_SETS, ViT, convert, format_bits, model_dtype
from .study import CLAMP_LAYERS, EvalData, ViTStudy, check_formats
from .train import SETTINGS, TrainResult, ViTSetting, accuracy, logits, train

__all__ = [
    "BIT_TARGETS",
    "CLAMP_LAYERS",
    "DATASETS",
    "FORMATS",
    "SETTINGS",
    "TARGET_SETS",
    "EvalData",
    "ImageSplit",
    "TrainResult",
    "ViT",
    "ViTSetting",
    "ViTStudy",
    "accuracy",
    "check_formats",
    "convert",
    "format_bits",
    "load_split",
    "logits",
    "model_dtype",
    "train",
]
