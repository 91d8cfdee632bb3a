"""The :class:`Injector`: targets + error model + seed -> faults in a model, undone on exit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..faults.faultmap import FaultMap, sample_fault_map
from ..faults.models import ErrorModel, check_error_model
from ..faults.sampling import check_seed
from .apply import InjectionHandle, apply_faults
from .targets import Site, Targets, resolve_targets


class Injector:
    """Samples faults for a model's targeted tensors and writes them in place, reversibly.

    Faults are a pure function of ``(seed, targets, error, model layout)``: sampled on the CPU
    from one stream over the targeted tensors ordered by name, then moved to each tensor's device.
    So the same injector gives the same faults on CPU and CUDA, in any order, on any worker.

    Args:
        targets: tensor names, globs, ``nn.Module`` types, or a ``Path`` to a PyTEI target file
            (one name per line, ``;`` comments). None targets every parameter.
        error: the error model, e.g. ``BitFlip(ber=1e-6)``.
        seed: the seed (an int >= 0).
        include_buffers: also allow buffers as targets (and include them when ``targets`` is None).

    Example:
        >>> import torch
        >>> from pytei_ray import Injector, BitFlip, state_checksum
        >>> model = torch.nn.Linear(64, 8)
        >>> before = state_checksum(model)
        >>> inj = Injector(targets=["weight"], error=BitFlip(n=3), seed=7)
        >>> with inj.inject(model) as faults:
        ...     faults.n_faults
        3
        >>> state_checksum(model) == before
        True
    """

    def __init__(
        self,
        targets: Targets = None,
        error: ErrorModel | None = None,
        seed: int = 0,
        include_buffers: bool = False,
    ) -> None:
        check_error_model(error)
        self.targets = targets
        self.error = error
        self.seed = check_seed(seed)
        self.include_buffers = include_buffers

    def sample(self, model: nn.Module) -> FaultMap:
        """The faults this injector puts into ``model``, without touching it."""
        return self._sample(model)[1]

    def _sample(self, model: nn.Module) -> tuple[dict[str, Site], FaultMap]:
        sites = resolve_targets(model, self.targets, self.include_buffers)
        faults = sample_fault_map([s.info for s in sites], self.error, self.seed)
        return {s.name: s for s in sites}, faults

    def inject(self, model: nn.Module, mitigations: Sequence[Any] = ()) -> InjectionHandle:
        """Write sampled faults into ``model``; the returned handle restores it exactly.

        Use as ``with injector.inject(model) as faults:``; mitigations (e.g. ``SBP()``, ``Clip()``)
        filter the faults and/or attach hooks, removed on exit.
        """
        sites, faults = self._sample(model)
        return apply_faults(faults, model, mitigations, sites)  # no second lookup of the sites

    def __repr__(self) -> str:
        return (
            f"Injector(targets={self.targets!r}, error={self.error!r}, seed={self.seed}, "
            f"include_buffers={self.include_buffers})"
        )
