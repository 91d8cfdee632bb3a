"""Faults in activations: forward hooks that corrupt module outputs (or inputs) as they flow.

Weights are memory; activations are computation. A :class:`ActivationInjector` installs a forward
hook on each targeted module and corrupts the bits of what the module returns (``where="input"``:
what it receives, through a forward pre-hook), with the same error models, exact samplers, bit
views and mitigations as weight faults:

* ``mode="transient"``: every call of a targeted module draws new faults over all the bits of its
  output: Binomial(bits, ber) at every BER (or exactly ``n`` faults per output tensor), O(faults)
  work. The faults of the k-th call of module m are a pure function of
  ``(seed, error, m, k, element, shape, dtype)``, sampled on the CPU then moved to the device.
* ``mode="permanent"``: positions are drawn once over the per-sample shape (all but the first,
  batch, dimension) and hit the same positions of every sample in every call (a stuck lane).

An output that is a tuple/list of tensors has each tensor element injected (element ``i`` is part
of the seed); a non-tensor output is an error naming the module. Nothing touches the weights, and
the handle removes every hook it installed (``with`` block or ``remove()``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..faults.callstream import STREAMS
from ..faults.dtypes import layout_of
from ..faults.faultmap import FaultMap
from ..faults.models import ErrorModel, check_error_model
from ..faults.sampling import check_seed
from ..mitigations.base import Mitigation
from .activation_sources import (
    MODES,
    WHERE,
    ActivationCall,
    _check_choice,
    _Sampled,
    _Source,
)
from .activation_write import module_ptrs, storage_ptrs, write_faults
from .targets import ModuleTargets, resolve_modules

__all__ = ["ActivationCall", "ActivationHandle", "ActivationInjector", "Activations"]



class ActivationHandle:
    """Hooks that corrupt activations; ``remove()`` (or leaving the ``with`` block) takes them off.

    Entering the context returns the handle itself: its records fill as the model runs.

    Attributes:
        modules: names of the targeted modules.
        calls: one :class:`ActivationCall` per call and tensor element, in call order.
    """

    def __init__(self, source: _Source, model: nn.Module, modules: list[tuple[str, nn.Module]],
                 where: str, mitigations: Sequence[Any], record_positions: bool) -> None:
        self.modules = [n for n, _ in modules]
        self.where = where
        self.calls: list[ActivationCall] = []
        self.removed = False
        self._source = source
        self._filters = [m for m in mitigations
                         if getattr(type(m), "filter_faults", None) is not Mitigation.filter_faults]
        self._record_positions = record_positions
        self._count: dict[str, int] = dict.fromkeys(self.modules, 0)  # module -> calls so far
        self._hooks: list[Any] = []  # hook handles (ours and the mitigations'), removed on exit
        try:
            for name, mod in modules:
                own = module_ptrs((*mod.parameters(), *mod.buffers()))
                if where == "output":
                    hook = mod.register_forward_hook(self._output_hook(name, own), prepend=True,
                                                     with_kwargs=True)
                else:
                    hook = mod.register_forward_pre_hook(self._input_hook(name))
                self._hooks.append(hook)
            for m in mitigations:  # after ours: a clamp on an output sees the output's faults
                self._hooks.append(m.attach(model))
        except BaseException:
            self.remove()
            raise

    # ---- results -----------------------------------------------------------------------------
    @property
    def n_faults(self) -> int:
        """Faults that reached activations so far (after mitigations), over all calls."""
        return sum(c.n_faults for c in self.calls)

    @property
    def n_faults_sampled(self) -> int:
        """Faults drawn so far, before mitigations (SBP) filtered them."""
        return sum(c.n_sampled for c in self.calls)

    @property
    def n_words(self) -> int:
        """Activation words written so far."""
        return sum(c.n_words for c in self.calls)

    @property
    def n_calls(self) -> int:
        """Calls of targeted modules so far."""
        return sum(self._count.values())

    def faults_per_module(self) -> dict[str, int]:
        """Module name -> faults that reached its activations so far."""
        out = dict.fromkeys(self.modules, 0)
        for c in self.calls:
            out[c.module] += c.n_faults
        return out

    # ---- lifecycle ---------------------------------------------------------------------------
    def remove(self) -> None:
        """Remove every hook installed by this injection (idempotent)."""
        errors = []
        while self._hooks:
            try:
                self._hooks.pop().remove()
            except Exception as e:  # keep removing the others
                errors.append(e)
        self.removed = True
        if errors:
            raise errors[0]

    restore = remove  # the weight handle's verb

    def __enter__(self) -> ActivationHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # ---- hooks -------------------------------------------------------------------------------
    def _output_hook(self, name: str, own: set[int]) -> Callable:
        def hook(module: nn.Module, args: Any, kwargs: dict, out: Any) -> Any:
            shared = own | storage_ptrs(args, kwargs)  # keyword inputs alias too
            new = self._corrupt(name, module, out, shared)
            return None if new is out else new

        return hook

    def _input_hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> Any:
            new = self._corrupt(name, module, args, None)  # None: never write in place
            return None if new is args else new

        return hook

    def _corrupt(self, name: str, module: nn.Module, payload: Any, shared: set[int] | None) -> Any:
        call = self._count[name]
        self._count[name] = call + 1
        if isinstance(payload, torch.Tensor):
            return self._tensor(name, call, 0, payload, shared)
        if isinstance(payload, (tuple, list)) and payload:
            items = list(payload)
            bad = [i for i, t in enumerate(items) if not isinstance(t, torch.Tensor)]
            if not bad:
                if shared is not None and len(items) > 1:  # elements sharing storage: copies
                    ptrs = [t.untyped_storage().data_ptr() for t in items if not t.is_quantized]
                    shared = shared | {p for p in ptrs if ptrs.count(p) > 1}
                new = [self._tensor(name, call, i, t, shared) for i, t in enumerate(items)]
                if all(a is b for a, b in zip(new, items)):
                    return payload
                if hasattr(payload, "_fields"):  # namedtuple
                    return type(payload)(*new)
                return type(payload)(new)
            what = f"element {bad[0]} of its {type(payload).__name__} {self.where}"
            got = type(items[bad[0]]).__name__
        else:
            what, got = f"its {self.where}", type(payload).__name__
        raise TypeError(
            f"Activation faults need a tensor or a tuple/list of tensors, but {what} of module "
            f"{name!r} ({type(module).__name__}) is a {got}.\n"
            "Target a submodule whose output is a tensor (or where='input')."
        )

    def _tensor(self, name: str, call: int, element: int, t: torch.Tensor,
                shared: set[int] | None) -> torch.Tensor:
        shape, dtype = tuple(t.shape), t.dtype
        try:
            layout_of(dtype)
        except TypeError as e:
            raise TypeError(f"Module {name!r} ({self.where} {element}): {e}") from None
        got = self._source.faults(name, self.where, call, element, shape, dtype)
        if got is None:
            return t
        tf, per_sample = got
        sampled = tf.n_sites * (shape[0] if per_sample else 1)
        if tf.n_words and self._filters:
            fmap = FaultMap([tf], self._source.error_key, self._source.unit)
            for m in self._filters:
                fmap = m.filter_faults(fmap)
            tf = fmap.tensors[0]
        n_rows = shape[0] if per_sample else 1
        self.calls.append(ActivationCall(
            name, self.where, call, element, shape, dtype, sampled, tf.n_sites * n_rows,
            tf.n_words * n_rows, tf.index if self._record_positions else None, per_sample))
        if not tf.n_words or t.numel() == 0:
            return t
        return write_faults(t, tf, per_sample, shared)[0]


class ActivationInjector:
    """Faults in the activations of a model's modules, through reversible forward hooks.

    Args:
        targets: module names, globs (leaf modules) or ``nn.Module`` types (see
            :func:`~pytei_ray.injection.targets.resolve_modules`).
        error: the error model, e.g. ``BitFlip(ber=1e-6)``, ``BitFlip(n=1)`` (exactly ``n`` faults
            per targeted tensor and call; per sample position set when permanent),
            ``StuckAt(...)``, ``RandomValue(...)`` or your own :class:`ErrorModel`.
        seed: the seed (an int >= 0).
        mode: ``"transient"`` (new faults every call) or ``"permanent"`` (fixed per-sample
            positions, hit in every sample of every call).
        where: ``"output"`` (what the module returns) or ``"input"`` (its positional arguments).
        record_positions: keep the flat word indices of each call's faults in its record.
        stream: how transient faults are drawn per call: ``"v2"`` (default; a counter-based
            :class:`~pytei_ray.faults.callstream.CallStream`: no generator for a call with no
            fault) or ``"v1"`` (a hash and a generator per call; what campaigns stored before
            v2 existed, and still what :class:`Activations` uses unless told). Both are exact;
            for one seed they draw different faults. Permanent faults are the same in both.

    Example:
        >>> import torch
        >>> from pytei_ray import ActivationInjector, BitFlip, state_checksum
        >>> model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU())
        >>> before = state_checksum(model)
        >>> inj = ActivationInjector(targets="0", error=BitFlip(n=2), seed=1)
        >>> with inj.inject(model) as faults:
        ...     _ = model(torch.randn(4, 16)); _ = model(torch.randn(4, 16))
        >>> faults.n_faults, faults.n_calls, faults.faults_per_module()
        (4, 2, {'0': 4})
        >>> state_checksum(model) == before and not model[0]._forward_hooks
        True
    """

    def __init__(self, targets: ModuleTargets, error: ErrorModel, seed: int = 0, *,
                 mode: str = "transient", where: str = "output",
                 record_positions: bool = False, stream: str = "v2") -> None:
        check_error_model(error)
        self.targets = targets
        self.error = error
        self.seed = check_seed(seed)
        self.mode = _check_choice("mode", mode, MODES)
        self.where = _check_choice("where", where, WHERE)
        self.record_positions = bool(record_positions)
        self.stream = _check_choice("stream", stream, STREAMS)

    def inject(self, model: nn.Module, mitigations: Sequence[Any] = ()) -> ActivationHandle:
        """Install the fault hooks on ``model``; the returned handle removes them.

        Mitigations filter each call's faults (SBP) and attach their own hooks (Clip, Ranger),
        which run after the fault hook on the same module, so a clamp sees the faulty output.

        Raises:
            ValueError / TypeError: a target that names no module (before any hook is added).
        """
        modules = resolve_modules(model, self.targets)
        return ActivationHandle(_Sampled(self.error, self.seed, self.mode, self.stream), model,
                                modules, self.where, mitigations, self.record_positions)

    def __repr__(self) -> str:
        return (f"ActivationInjector(targets={self.targets!r}, error={self.error!r}, "
                f"seed={self.seed}, mode={self.mode!r}, where={self.where!r}, "
                f"stream={self.stream!r})")


def _describe_targets(targets: Any) -> Any:
    if isinstance(targets, type):
        return f"{targets.__module__}.{targets.__qualname__}"
    if isinstance(targets, (list, tuple)):
        return [_describe_targets(t) for t in targets]
    return targets


class Activations:
    """A campaign target set of activations: ``targets={"mlp-out": Activations("dense.*")}``.

    Each trial of it gets an :class:`ActivationInjector` with the trial's error model and seed
    (so the mitigations of a point see the same faults) whose hooks are installed while
    ``evaluate`` runs. Its ``repr`` names everything that defines it (stored in the spec).
    ``stream`` defaults to ``"v1"``, the per-call stream of every campaign stored so far (a
    resumed campaign draws the faults it drew before); ``stream="v2"`` (faster per call) is
    named in the ``repr``, so such a campaign has its own spec hash and trial ids.

    Example:
        >>> Activations("dense.*", mode="permanent")
        Activations(targets='dense.*', mode='permanent', where='output')
    """

    def __init__(self, targets: ModuleTargets, *, mode: str = "transient",
                 where: str = "output", stream: str = "v1") -> None:
        self.targets = targets
        self.mode = _check_choice("mode", mode, MODES)
        self.where = _check_choice("where", where, WHERE)
        self.stream = _check_choice("stream", stream, STREAMS)

    def injector(self, error: ErrorModel, seed: int) -> ActivationInjector:
        """The injector of one trial."""
        return ActivationInjector(self.targets, error, seed, mode=self.mode, where=self.where,
                                  stream=self.stream)

    def resolve(self, model: nn.Module) -> list[str]:
        """Names of the modules targeted in ``model`` (raises if a target names none)."""
        return [n for n, _ in resolve_modules(model, self.targets)]

    def __repr__(self) -> str:
        stream = "" if self.stream == "v1" else f", stream={self.stream!r}"
        return (f"Activations(targets={_describe_targets(self.targets)!r}, mode={self.mode!r}, "
                f"where={self.where!r}{stream})")
