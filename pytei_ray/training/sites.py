"""Where faults strike during training: weights, activations, activation gradients, parameter
gradients, optimizer state. Each site is a pure description; :meth:`bind` checks it against a
model and optimizer (every name must exist) before any step runs.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> opt = torch.optim.Adam(model.parameters())
    >>> OptimizerState("exp_avg", "0.*").bind(model, opt).names
    ['0.bias:exp_avg', '0.weight:exp_avg']
    >>> OptimizerState("momentum_buffer").bind(model, opt)
    Traceback (most recent call last):
    ...
    ValueError: Optimizer Adam has no state 'momentum_buffer'.
      expected one of: ['exp_avg', 'exp_avg_sq', 'step']
      got: 'momentum_buffer'
    (SGD keeps 'momentum_buffer' when momentum > 0; Adam keeps 'exp_avg' and 'exp_avg_sq'.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..injection.targets import ModuleTargets, Targets, resolve_modules, resolve_targets

__all__ = ["ActivationGrads", "OptimizerState", "Outputs", "ParamGrads", "TrainingSite",
           "Weights", "optimizer_state_names"]


def _groups(*names: str) -> Callable[[dict], list[str]]:
    return lambda g: list(names)


#: optimizer class name -> the state names it keeps per parameter, given its param group
_STATE_NAMES: dict[str, Callable[[dict], list[str]]] = {
    "SGD": lambda g: ["momentum_buffer"] if g.get("momentum", 0) else [],
    "Adam": lambda g: ["step", "exp_avg", "exp_avg_sq"] + (
        ["max_exp_avg_sq"] if g.get("amsgrad") else []),
    "AdamW": lambda g: ["step", "exp_avg", "exp_avg_sq"] + (
        ["max_exp_avg_sq"] if g.get("amsgrad") else []),
    "RMSprop": lambda g: ["step", "square_avg"]
    + (["momentum_buffer"] if g.get("momentum", 0) else [])
    + (["grad_avg"] if g.get("centered") else []),
    "Adagrad": _groups("step", "sum"),
    "Adamax": _groups("step", "exp_avg", "exp_inf"),
    "NAdam": _groups("step", "mu_product", "exp_avg", "exp_avg_sq"),
    "RAdam": _groups("step", "exp_avg", "exp_avg_sq"),
    "Adadelta": _groups("step", "square_avg", "acc_delta"),
}


def optimizer_state_names(optimizer: torch.optim.Optimizer) -> list[str] | None:
    """The per-parameter state names ``optimizer`` keeps (or holds now); None when unknown (an
    optimizer class not in the table whose state is still empty)."""
    held = {k for st in optimizer.state.values() for k, v in st.items()
            if isinstance(v, torch.Tensor)}
    rule = _STATE_NAMES.get(type(optimizer).__name__)
    if rule is None:
        return sorted(held) if held else None
    return sorted(held | {n for g in optimizer.param_groups for n in rule(g)})


class TrainingSite:
    """Base class of a fault site; ``kind`` names it in statistics."""

    kind = ""
    hook = False  # True: faults land through module hooks while the model runs

    def bind(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> Any:
        """Check the site against ``model``/``optimizer`` and return the bound site."""
        raise NotImplementedError

    def key(self) -> str:
        """A stable description (part of every seed of this site)."""
        return repr(self)


class BoundTensors:
    """A tensor site bound to a model: ``names`` and ``collect()`` (the tensors, at use)."""

    def __init__(self, site: TrainingSite, names: list[str],
                 collect: Callable[[], list[tuple[str, torch.Tensor]]]) -> None:
        self.site, self.names, self.collect = site, names, collect


class Weights(TrainingSite):
    """Parameters (a memory fault: it stays, and training continues from it).

    Args:
        targets: tensor names, globs or module types, as for :class:`~pytei_ray.Injector`;
            None: every parameter.
    """

    kind = "weights"

    def __init__(self, targets: Targets = None) -> None:
        self.targets = targets

    def bind(self, model, optimizer):
        sites = resolve_targets(model, self.targets)
        return BoundTensors(self, [s.name for s in sites],
                            lambda: [(s.name, s.tensor) for s in sites])

    def __repr__(self) -> str:
        return f"Weights({self.targets!r})"


class ParamGrads(TrainingSite):
    """Parameter gradients after ``backward()``, before ``optimizer.step()``.

    Args:
        targets: parameter names, globs or module types; None: every trainable parameter.
    """

    kind = "param_grads"

    def __init__(self, targets: Targets = None) -> None:
        self.targets = targets

    def bind(self, model, optimizer):
        sites = [s for s in resolve_targets(model, self.targets) if s.kind == "parameter"]
        frozen = [s.name for s in sites if not s.tensor.requires_grad]
        if frozen and self.targets is not None:
            raise ValueError(
                f"ParamGrads targets parameters that get no gradient: {frozen[:5]}.\n"
                "Target trainable parameters (requires_grad=True) only.")
        sites = [s for s in sites if s.tensor.requires_grad]
        if not sites:
            raise ValueError("ParamGrads found no trainable parameter to target.")

        def collect() -> list[tuple[str, torch.Tensor]]:
            missing = [s.name for s in sites if s.tensor.grad is None]
            if missing:
                raise RuntimeError(
                    f"Parameter gradient faults: {missing[:5]} have no gradient at this step.\n"
                    "Call TrainingFaults.before_step() after loss.backward() and before "
                    "optimizer.step(), and target parameters the loss depends on.")
            return [(s.name, s.tensor.grad) for s in sites]  # type: ignore[misc]

        return BoundTensors(self, [s.name for s in sites], collect)

    def __repr__(self) -> str:
        return f"ParamGrads({self.targets!r})"


class OptimizerState(TrainingSite):
    """Optimizer state by the optimizer's own names (Adam's ``exp_avg``/``exp_avg_sq``, SGD's
    ``momentum_buffer``), just before ``optimizer.step()`` uses it.

    Args:
        state: one state name or several.
        targets: the parameters whose state is hit (names, globs, module types); None: all
            the optimizer's parameters.
    """

    kind = "optimizer_state"

    def __init__(self, state: str | Sequence[str], targets: Targets = None) -> None:
        self.state = (state,) if isinstance(state, str) else tuple(state)
        if not self.state or not all(isinstance(s, str) for s in self.state):
            raise ValueError(f"Expected `state` to be state names such as 'exp_avg', but got "
                             f"{state!r}.")
        self.targets = targets

    def bind(self, model, optimizer):
        if optimizer is None:
            raise ValueError("OptimizerState faults need the optimizer: "
                             "TrainingFaults(model, optimizer, ...).")
        optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
        sites = [s for s in resolve_targets(model, self.targets) if s.kind == "parameter"]
        outside = [s.name for s in sites if id(s.tensor) not in optimized]
        if outside and self.targets is not None:
            raise ValueError(f"OptimizerState targets parameters the optimizer does not "
                             f"update: {outside[:5]}.\nPass the parameters it optimizes.")
        sites = [s for s in sites if id(s.tensor) in optimized]
        known = optimizer_state_names(optimizer)
        bad = [n for n in self.state if known is not None and n not in known]
        if bad:
            raise ValueError(
                f"Optimizer {type(optimizer).__name__} has no state {bad[0]!r}.\n"
                f"  expected one of: {known}\n  got: {bad[0]!r}\n"
                "(SGD keeps 'momentum_buffer' when momentum > 0; Adam keeps 'exp_avg' and "
                "'exp_avg_sq'.)")
        names = [f"{s.name}:{n}" for s in sites for n in self.state]

        def collect() -> list[tuple[str, torch.Tensor]]:
            out = []
            for s in sites:
                st = optimizer.state.get(s.tensor, {})
                for n in self.state:
                    t = st.get(n)
                    if not isinstance(t, torch.Tensor):
                        raise RuntimeError(
                            f"Optimizer state {n!r} of {s.name!r} does not exist at this step "
                            f"({type(optimizer).__name__} creates its state in its first "
                            "step()). Start optimizer-state faults after the first step.")
                    out.append((f"{s.name}:{n}", t))
            return out

        return BoundTensors(self, names, collect)

    def __repr__(self) -> str:
        return f"OptimizerState({list(self.state)!r}, {self.targets!r})"


class Outputs(TrainingSite):
    """Forward activations: what the targeted modules return (out of place under autograd,
    with a straight-through gradient).

    Args:
        modules: module names, globs (leaf modules) or module types.
    """

    kind = "outputs"
    hook = True

    def __init__(self, modules: ModuleTargets) -> None:
        self.modules = modules

    def bind(self, model, optimizer):
        return resolve_modules(model, self.modules)

    def __repr__(self) -> str:
        return f"Outputs({self.modules!r})"


class ActivationGrads(TrainingSite):
    """Backward activation gradients of the targeted modules, out of place.

    Args:
        modules: module names, globs (leaf modules) or module types.
        of: ``"input"`` (default): the gradient the module sends back to its inputs, i.e. what
            flows out of it in backward (a fault in its backward matrix product); ``"output"``:
            the gradient arriving at its output, before the module's backward uses it.

    Only this module's use of a tensor is hit (an identity autograd function wraps its inputs
    or outputs at faulty steps only), and inputs that need no gradient are skipped.
    """

    kind = "activation_grads"
    hook = True

    def __init__(self, modules: ModuleTargets, of: str = "input") -> None:
        if of not in ("input", "output"):
            raise ValueError(f"Expected argument `of` to be one of ['input', 'output'], but "
                             f"got {of!r}.")
        self.modules, self.of = modules, of

    def bind(self, model, optimizer):
        return resolve_modules(model, self.modules)

    def __repr__(self) -> str:
        return f"ActivationGrads({self.modules!r}, of={self.of!r})"
