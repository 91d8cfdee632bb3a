"""Campaigns as data: the :class:`Campaign` spec, trial expansion, job files and the trial runner.

``import pytei_ray.campaign`` never imports Ray; :class:`TrialWorker` imports the fault core
(torch) only when it is first used.
"""

from .jobfile import JobRef, load_job, parse_params
from .levels import Level, OneBitFlip, bit_levels
from .spec import Campaign, SpecDiff, compare_specs, describe, spec_hash
from .trials import Trial, count_by_factor, expand, make_chunks, trial_id, trial_seed

__all__ = [
    "Campaign",
    "Level",
    "OneBitFlip",
    "bit_levels",
    "SpecDiff",
    "compare_specs",
    "describe",
    "spec_hash",
    "Trial",
    "expand",
    "make_chunks",
    "count_by_factor",
    "trial_id",
    "trial_seed",
    "JobRef",
    "load_job",
    "parse_params",
    "TrialWorker",
    "ChunkResult",
]


def __getattr__(name: str):
    if name in ("TrialWorker", "ChunkResult"):
        from . import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'pytei_ray.campaign' has no attribute {name!r}")
