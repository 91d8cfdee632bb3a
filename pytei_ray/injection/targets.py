"""Which tensors of a model are targeted: exact names, globs, module types, PyTEI target files.

A *site* is one injectable tensor: a parameter, a buffer (when asked), or the weight of a quantized
module (``torch.ao.nn.quantized``), which is reached through ``module.weight()`` and written back
with ``set_weight_bias``/``set_weight`` because quantized weights are packed, not parameters.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..faults.dtypes import LAYOUTS, dtype_name, supported_dtypes
from ..faults.faultmap import SiteInfo

TargetItem = str | type | os.PathLike
Targets = TargetItem | Iterable[TargetItem] | None


@dataclass
class Site:
    """One injectable tensor of a model.

    Attributes:
        name: its name (as in ``named_parameters()``; ``<module>.weight`` for quantized modules).
        kind: ``"parameter"``, ``"buffer"`` or ``"quantized"``.
        tensor: the tensor (for quantized sites, the current quantized weight).
        module: the owning module (quantized sites only, to write the weight back).
    """

    name: str
    kind: str
    tensor: torch.Tensor
    module: nn.Module | None = None

    @property
    def info(self) -> SiteInfo:
        return SiteInfo(self.name, self.tensor.dtype, tuple(self.tensor.shape))


def read_target_file(path: str | os.PathLike) -> list[str]:
    """Read a PyTEI target file: one name (or glob) per line; ``;`` starts a comment line."""
    names = []
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(";"):
            names.append(line)
    if not names:
        raise ValueError(f"Target file {os.fspath(path)!r} names no tensor (only comments/blanks).")
    return names


def candidate_sites(model: nn.Module, include_buffers: bool = False) -> dict[str, Site]:
    """All sites of ``model``: parameters, quantized module weights, and buffers if asked."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected an nn.Module, but got {type(model).__name__}.")
    sites: dict[str, Site] = {}
    seen: set[int] = set()  # parameters shared by several modules are listed once, as torch does
    for mod_name, mod in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for pname, p in mod.named_parameters(recurse=False):
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                sites[prefix + pname] = Site(prefix + pname, "parameter", p)
        weight = getattr(mod, "weight", None)
        if callable(weight) and not isinstance(weight, torch.Tensor):
            if hasattr(mod, "set_weight_bias") or hasattr(mod, "set_weight"):
                w = weight()
                if isinstance(w, torch.Tensor) and w.is_quantized:
                    sites[prefix + "weight"] = Site(prefix + "weight", "quantized", w, mod)
    if include_buffers:
        for name, b in model.named_buffers():
            sites.setdefault(name, Site(name, "buffer", b))
    return sites


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _close(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=5, cutoff=0.5)
    return f"  closest names: {close}" if close else "  (no similar name)"


def resolve_targets(
    model: nn.Module, targets: Targets = None, include_buffers: bool = False
) -> list[Site]:
    """Resolve a target specification to the model's sites, sorted by name.

    Args:
        model: the model.
        targets: None (all parameters, plus buffers if ``include_buffers``), or one / a list of:
            an exact tensor name, a glob (``"embedding.*"``), an ``nn.Module`` subclass (its
            direct parameters), or a ``pathlib.Path`` to a PyTEI target file.
        include_buffers: also consider buffers (e.g. BatchNorm running statistics).

    Raises:
        ValueError: a name that does not exist (with the closest real names), a pattern or type
            that matches nothing, a model with nothing to target.
        TypeError: a targeted tensor whose dtype has no bit layout.
    """
    sites = candidate_sites(model, include_buffers)
    if not sites:
        raise ValueError(
            f"The model ({type(model).__name__}) has no parameters to inject faults into"
            + ("." if include_buffers else " (pass include_buffers=True to target buffers).")
        )
    if targets is None:
        chosen = set(sites)
    else:
        items = [targets] if isinstance(targets, (str, type, os.PathLike)) else list(targets)
        expanded: list[TargetItem] = []
        for item in items:
            if isinstance(item, os.PathLike):
                expanded.extend(read_target_file(item))
            else:
                expanded.append(item)
        if not expanded:
            raise ValueError("Expected at least one target, but got an empty target list.")
        chosen = set()
        for item in expanded:
            chosen |= _match(model, sites, item)
    bad = [n for n in chosen if sites[n].tensor.dtype not in LAYOUTS]
    if bad:
        raise TypeError(
            "Unsupported dtype for fault injection.\n"
            f"  expected one of: {supported_dtypes()}\n"
            f"  got: {', '.join(f'{n} ({dtype_name(sites[n].tensor.dtype)})' for n in sorted(bad))}"
        )
    return [sites[n] for n in sorted(chosen)]


def _match(model: nn.Module, sites: dict[str, Site], item: TargetItem) -> set[str]:
    if isinstance(item, type):
        if not issubclass(item, nn.Module):
            raise TypeError(f"Expected a target module type (nn.Module subclass), got {item!r}.")
        found = set()
        for mod_name, mod in model.named_modules():
            if isinstance(mod, item):
                prefix = f"{mod_name}." if mod_name else ""
                local = [n for n, _ in mod.named_parameters(recurse=False)]
                if callable(getattr(mod, "weight", None)):
                    local.append("weight")
                found |= {prefix + n for n in local if prefix + n in sites}
        if not found:
            raise ValueError(f"Target type {item.__name__} matches no tensor of the model.")
        return found
    if not isinstance(item, str):
        raise TypeError(
            f"Expected targets to be names, globs, module types or Paths, but got {item!r}."
        )
    if _is_glob(item):
        found = set(fnmatch.filter(sites, item))
        if not found:
            buffers = fnmatch.filter(_buffer_names(model, sites), item)
            if buffers:
                raise ValueError(
                    f"Target pattern {item!r} matches only buffers ({buffers[:5]}"
                    f"{' ...' if len(buffers) > 5 else ''}), which are targets only with "
                    f"include_buffers=True{_BUFFER_HINT}"
                )
            raise ValueError(
                f"Target pattern {item!r} matches no tensor of the model.\n"
                f"{_close(item.replace('*', ''), sites)}"
            )
        return found
    if item not in sites:
        if item in _buffer_names(model, sites):
            raise ValueError(
                f"Target {item!r} is a buffer, not a parameter: buffers (e.g. BatchNorm running "
                "statistics) are targets only with include_buffers=True"
                f"{_BUFFER_HINT}"
            )
        raise ValueError(f"Unknown target tensor {item!r}.\n{_close(item, sites)}")
    return {item}


_BUFFER_HINT = (" (Injector(targets, error, include_buffers=True)); a campaign's target sets "
                "cover parameters and quantized weights only.")


def _buffer_names(model: nn.Module, sites: dict[str, Site]) -> list[str]:
    """Buffers of ``model`` that are not sites (``include_buffers`` was not given)."""
    return [n for n, _ in model.named_buffers() if n not in sites]


ModuleTargets = str | type | Iterable[str | type]


def resolve_modules(model: nn.Module, targets: ModuleTargets) -> list[tuple[str, nn.Module]]:
    """Resolve module targets (for activation faults) to ``(name, module)`` pairs, by name.

    Args:
        model: the model.
        targets: one or a list of: an exact module name (as in ``named_modules()``; any module,
            a container included, e.g. a residual block ``"layer1.0"``), a glob (``"dense.*"``:
            the *leaf* modules it matches, so a container and its last layer are not both hit by
            one pattern), or an ``nn.Module`` subclass (every module of that type).

    Raises:
        ValueError: an unknown name (with the closest real names), a pattern or type that
            matches no module, an empty list.
        TypeError: a target that is neither a name nor a module type.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected an nn.Module, but got {type(model).__name__}.")
    modules = dict(model.named_modules())
    leaves = [n for n, m in modules.items() if next(m.children(), None) is None]
    items = [targets] if isinstance(targets, (str, type)) else list(targets)
    if not items:
        raise ValueError("Expected at least one module target, but got an empty target list.")
    chosen: set[str] = set()
    for item in items:
        if isinstance(item, type):
            if not issubclass(item, nn.Module):
                raise TypeError(
                    f"Expected a target module type (nn.Module subclass), got {item!r}."
                )
            found = {n for n, m in modules.items() if isinstance(m, item)}
            if not found:
                raise ValueError(f"Target type {item.__name__} matches no module of the model.")
        elif isinstance(item, str):
            if _is_glob(item):
                found = set(fnmatch.filter(leaves, item))
                if not found:
                    raise ValueError(
                        f"Target pattern {item!r} matches no leaf module of the model.\n"
                        f"{_close(item.replace('*', ''), modules)}"
                    )
            elif item in modules:
                found = {item}
            else:
                raise ValueError(f"Unknown target module {item!r}.\n{_close(item, modules)}")
        else:
            raise TypeError(
                f"Expected module targets to be names, globs or module types, but got {item!r}."
            )
        chosen |= found
    return [(n, modules[n]) for n in sorted(chosen)]
