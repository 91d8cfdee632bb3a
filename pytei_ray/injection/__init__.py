"""Injection: resolve targets, write faults in place, restore exactly; faults in activations."""

from .activations import ActivationCall, ActivationHandle, ActivationInjector, Activations
from .apply import InjectionHandle, apply_faults
from .checksum import state_checksum
from .injector import Injector
from .targets import Site, candidate_sites, read_target_file, resolve_modules, resolve_targets

__all__ = [
    "ActivationCall",
    "ActivationHandle",
    "ActivationInjector",
    "Activations",
    "InjectionHandle",
    "Injector",
    "Site",
    "apply_faults",
    "candidate_sites",
    "read_target_file",
    "resolve_modules",
    "resolve_targets",
    "state_checksum",
]
