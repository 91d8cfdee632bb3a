"""Deep recommendation system (DRS) models, click-log data and training for DRS campaigns.

Example:
    >>> from pytei_ray.studies.drs import build_model, evaluate, split, synthetic_criteo, train
    >>> tr, va, te = split(synthetic_criteo(2000, seed=0), seed=0)
    >>> model = build_model("dlrm", tr.field_dims, tr.n_dense, seed=0)
    >>> result = train(model, tr, va, epochs=1, seed=0)
    >>> sorted(evaluate(model, te))
    ['auc', 'logloss']
"""

from __future__ import annotations

from .data import CRITEO_CARDINALITIES, ClickLog, preprocess_dense, split, synthetic_criteo
from .loaders import load_criteo, load_movielens
from .models import AFN, DCN, DLRM, FM, MODELS, DeepFM, WideAndDeep, build_model
from .study import CLAMP_LAYERS, DATASETS, ClickData, DRSStudy, EvalData, torch_threads
from .train import (
    SETTINGS,
    DRSSetting,
    TrainResult,
    binary_metrics,
    evaluate,
    load_checkpoint,
    predict,
    save_checkpoint,
    train,
)

#: Fault-injection target sets as parameter-name globs (``None`` = every parameter).
TARGET_SETS: dict[str, list[str] | None] = {
    "embedding": ["embedding.*"],
    "dense": ["dense.*"],
    "predictor": ["predictor.*"],
    "all": None,
}

__all__ = [
    "AFN",
    "CLAMP_LAYERS",
    "DATASETS",
    "ClickData",
    "DRSStudy",
    "EvalData",
    "torch_threads",
    "CRITEO_CARDINALITIES",
    "DCN",
    "DLRM",
    "FM",
    "MODELS",
    "SETTINGS",
    "TARGET_SETS",
    "ClickLog",
    "DRSSetting",
    "DeepFM",
    "TrainResult",
    "WideAndDeep",
    "binary_metrics",
    "build_model",
    "evaluate",
    "load_checkpoint",
    "load_criteo",
    "load_movielens",
    "predict",
    "preprocess_dense",
    "save_checkpoint",
    "split",
    "synthetic_criteo",
    "train",
]
