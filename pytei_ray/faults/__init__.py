"""Fault models and fault maps: pure functions of (seed, targets, error model, model layout)."""

from .dtypes import LAYOUTS, BitLayout, bit_fields, layout_of, supported_dtypes
from .faultmap import FaultMap, FaultSummary, SiteInfo, TensorFaults, sample_fault_map
from .models import BitFlip, ErrorModel, RandomValue, StuckAt
from .sampling import (
    bernoulli_positions,
    check_seed,
    distinct_positions,
    seed_from_digest,
    stable_seed,
)

__all__ = [
    "LAYOUTS",
    "BitFlip",
    "BitLayout",
    "ErrorModel",
    "FaultMap",
    "FaultSummary",
    "RandomValue",
    "SiteInfo",
    "StuckAt",
    "TensorFaults",
    "bernoulli_positions",
    "bit_fields",
    "distinct_positions",
    "layout_of",
    "sample_fault_map",
    "stable_seed",
    "seed_from_digest",
    "check_seed",
    "supported_dtypes",
]
