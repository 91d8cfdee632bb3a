"""Injection: resolve targets, write faults in place, restore exactly; faults in activations."""

from .activations import ActivationCall, ActivationHandle, ActivationInjector, Activations
from .apply import apply_faults
from .checksum import state_checksum
from .handles import AppliedFaults, InjectionHandle
from .injector import Injector
from .neurons import (
    NeuronFault,
    neuron_faults,
    random_fault_per_layer,
    random_neuron_fault,
    random_neuron_fault_batched,
    single_neuron_fault,
)
from .targets import Site, candidate_sites, read_target_file, resolve_modules, resolve_targets

__all__ = [
    "ActivationCall",
    "ActivationHandle",
    "ActivationInjector",
    "Activations",
    "AppliedFaults",
    "InjectionHandle",
    "NeuronFault",
    "Injector",
    "Site",
    "apply_faults",
    "candidate_sites",
    "neuron_faults",
    "random_fault_per_layer",
    "random_neuron_fault",
    "random_neuron_fault_batched",
    "read_target_file",
    "resolve_modules",
    "resolve_targets",
    "single_neuron_fault",
    "state_checksum",
]
