"""Campaigns as data: the :class:`Campaign` spec, levels, trial expansion, rounds, job files.

Nothing here runs a trial or touches the results directory: trials run in
:mod:`pytei_ray.execution.worker`, results are stored by :mod:`pytei_ray.storage`, and
``import pytei_ray.campaign`` imports neither ray, pyarrow, pandas nor the storage and
execution packages (torch comes with the ``pytei_ray`` package itself).
"""

from .compare import SpecDiff, compare_specs
from .jobfile import JobRef, load_job, parse_params
from .levels import BitFlipIn, Level, OneBitFlip, bit_levels
from .spec import Campaign, describe, spec_hash
from .trials import Trial, count_by_factor, expand, make_chunks, trial_id, trial_seed

__all__ = [
    "Campaign",
    "Level",
    "BitFlipIn",
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
]

