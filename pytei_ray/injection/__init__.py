"""Injection: resolve targets, write faults in place, restore exactly."""

from .apply import AppliedFaults, InjectionHandle, apply_faults
from .checksum import state_checksum
from .injector import Injector
from .targets import Site, candidate_sites, read_target_file, resolve_targets

__all__ = [
    "AppliedFaults",
    "InjectionHandle",
    "Injector",
    "Site",
    "apply_faults",
    "candidate_sites",
    "read_target_file",
    "resolve_targets",
    "state_checksum",
]
