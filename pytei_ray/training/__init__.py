"""Faults during training: weights, activations, activation gradients, parameter gradients and
optimizer state on a step clock; per-step telemetry; outcome classes; training mitigations.

Imports torch, numpy and the fault core only (no ray, pyarrow or pandas). See docs/training.md.
"""

from .faults import TrainingFaults
from .loop import StepRecord, grad_norm, train_step
from .mitigations import (
    GradClip,
    Rollback,
    SkipOnSpike,
    TrainingMitigation,
    standard_mitigations,
)
from .outcomes import (
    OUTCOMES,
    GoldenTrajectory,
    NotReproducibleError,
    Outcome,
    Thresholds,
    classify,
)
from .schedule import AtStep, Every, Permanent, Schedule, Window
from .sites import (
    ActivationGrads,
    OptimizerState,
    Outputs,
    ParamGrads,
    TrainingSite,
    Weights,
    optimizer_state_names,
)
from .state import TrainingState
from .stats import SiteStats, StepFaults
from .target import Training, check_targets, check_targets_fresh

__all__ = [
    "OUTCOMES",
    "ActivationGrads",
    "AtStep",
    "Every",
    "GoldenTrajectory",
    "GradClip",
    "NotReproducibleError",
    "OptimizerState",
    "Outcome",
    "Outputs",
    "ParamGrads",
    "Permanent",
    "Rollback",
    "Schedule",
    "SiteStats",
    "SkipOnSpike",
    "StepFaults",
    "StepRecord",
    "Thresholds",
    "Training",
    "TrainingFaults",
    "TrainingMitigation",
    "TrainingSite",
    "TrainingState",
    "Weights",
    "Window",
    "check_targets",
    "check_targets_fresh",
    "classify",
    "grad_norm",
    "optimizer_state_names",
    "standard_mitigations",
    "train_step",
]
