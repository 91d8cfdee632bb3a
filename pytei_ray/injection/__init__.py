"""Injection: resolve targets, write faults in place, restore exactly; faults in activations."""

from .activations import ActivationCall, ActivationHandle, ActivationInjector, Activations
from .apply import apply_faults
from .checksum import state_checksum
from .handles import AppliedFaults, InjectionHandle
from .injector import Injector
from .lookups import IndexMap, TableLookupError, find_tables, sample_batches
from .neurons import (
    NeuronFault,
    neuron_faults,
    random_fault_per_layer,
    random_neuron_fault,
    random_neuron_fault_batched,
    single_neuron_fault,
)
from .rescoring import (
    Rescorer,
    SplitEvaluation,
    build_index_map,
    prepare_rescoring,
    subsample_ids,
)
from .targets import Site, candidate_sites, read_target_file, resolve_modules, resolve_targets

__all__ = [
    "ActivationCall",
    "ActivationHandle",
    "ActivationInjector",
    "Activations",
    "AppliedFaults",
    "IndexMap",
    "InjectionHandle",
    "NeuronFault",
    "Rescorer",
    "SplitEvaluation",
    "subsample_ids",
    "TableLookupError",
    "Injector",
    "Site",
    "apply_faults",
    "build_index_map",
    "candidate_sites",
    "find_tables",
    "neuron_faults",
    "prepare_rescoring",
    "random_fault_per_layer",
    "random_neuron_fault",
    "random_neuron_fault_batched",
    "read_target_file",
    "resolve_modules",
    "resolve_targets",
    "sample_batches",
    "single_neuron_fault",
    "state_checksum",
]
