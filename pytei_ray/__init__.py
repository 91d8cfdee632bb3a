"""pytei_ray: exact, reversible fault injection for PyTorch, and resumable campaigns on Ray.

The fault core (this namespace's ``Injector``, error models, ``FaultMap``, mitigations) imports
neither ray nor pyarrow; the campaign layer is loaded on first use of ``pytei_ray.Campaign``.
"""

from __future__ import annotations

from typing import Any

from .faults import (
    BitFlip,
    ErrorModel,
    FaultMap,
    RandomValue,
    StuckAt,
    bit_fields,
    supported_dtypes,
)
from .injection import (
    ActivationHandle,
    ActivationInjector,
    Activations,
    AppliedFaults,
    InjectionHandle,
    Injector,
    NeuronFault,
    SplitEvaluation,
    neuron_faults,
    random_fault_per_layer,
    random_neuron_fault,
    random_neuron_fault_batched,
    read_target_file,
    sample_batches,
    single_neuron_fault,
    state_checksum,
)

__version__ = "0.1.0"

__all__ = [
    "ActivationHandle",
    "ActivationInjector",
    "Activations",
    "BitFlip",
    "Campaign",
    "Level",
    "Metric",
    "OneBitFlip",
    "bit_levels",
    "ErrorModel",
    "FaultMap",
    "AppliedFaults",
    "InjectionHandle",
    "Injector",
    "NeuronFault",
    "RandomValue",
    "SplitEvaluation",
    "StuckAt",
    "__version__",
    "bit_fields",
    "neuron_faults",
    "random_fault_per_layer",
    "random_neuron_fault",
    "random_neuron_fault_batched",
    "read_target_file",
    "sample_batches",
    "single_neuron_fault",
    "state_checksum",
    "supported_dtypes",
]


def __getattr__(name: str) -> Any:
    if name in ("Campaign", "Level", "OneBitFlip", "bit_levels"):
        from . import campaign

        return getattr(campaign, name)
    if name == "Metric":  # lazy: the statistics import scipy
        from .stats import Metric

        return Metric
    raise AttributeError(f"module 'pytei_ray' has no attribute {name!r}")
