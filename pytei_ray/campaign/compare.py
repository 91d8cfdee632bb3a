"""How a new campaign spec differs from the stored one: a change, or an extension.

The driver compares the spec of the job it runs with the spec in the results directory's
manifest: adding BERs, repetitions or levels only adds trials (``--extend`` runs them next to
the stored rows); anything else would mix experiments and is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytei_ray.columns import LEVEL_FACTORS

__all__ = ["SpecDiff", "compare_specs"]


def _show(desc: Any) -> str:
    return desc if isinstance(desc, str) else repr(desc)


@dataclass(frozen=True)
class SpecDiff:
    """How a new spec differs from a stored one.

    Attributes:
        changes: one line per differing field, ``"<field>: <old> -> <new>"``.
        extendable: the new spec keeps every stored trial unchanged and only adds trials.
    """

    changes: list[str]
    extendable: bool

    @property
    def same(self) -> bool:
        """True when nothing differs."""
        return not self.changes


def compare_specs(old: Mapping[str, Any], new: Mapping[str, Any]) -> SpecDiff:
    """Compare a stored spec with a new one, field by field.

    Adding BERs, repetitions or levels of a named factor (a model, a mitigation, ...) is an
    extension; changing the name, seed, params, ``skip_ineffective`` or ``rescore`` (they
    decide the ``evaluated`` column of every row) or ``stratify_unread`` (it decides which
    trials the stopping rule asks for), or the definition of an existing level, or
    removing anything, is a change that existing results cannot be mixed with.

    Example:
        >>> old = {"name": "a", "bers": [0.1], "repetitions": 2}
        >>> compare_specs(old, {"name": "a", "bers": [0.1, 0.2], "repetitions": 2})
        SpecDiff(changes=['bers: [0.1] -> [0.1, 0.2] (added [0.2])'], extendable=True)
    """
    changes: list[str] = []
    extendable = True
    for key in ("format", "name", "seed", "params"):
        if old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
            extendable = False
    # they decide `evaluated` (and n_rescored), or which trials the rule asks for
    for flag in ("skip_ineffective", "rescore", "stratify_unread"):
        o_flag, n_flag = old.get(flag, True), new.get(flag, True)
        if o_flag != n_flag:  # absent means the default (True)
            changes.append(f"{flag}: {o_flag!r} -> {n_flag!r}")
            extendable = False
    if old.get("subsample") != new.get("subsample"):  # absent: every sample scored
        changes.append(f"subsample: {old.get('subsample')!r} -> {new.get('subsample')!r}")
        extendable = False
    for key in LEVEL_FACTORS:
        o, n = old.get(key, {}), new.get(key, {})
        for level in o:
            if level not in n:
                changes.append(f"{key}: {level!r} removed (was {_show(o[level])})")
                extendable = False
            elif o[level] != n[level]:
                changes.append(f"{key}[{level!r}]: {_show(o[level])} -> {_show(n[level])}")
                extendable = False
        added = [level for level in n if level not in o]
        if added:
            changes.append(f"{key}: added {added}")
    for line in _factor_changes(old, new):
        changes.append(line)
        extendable = False
    o_bers, n_bers = list(old.get("bers", [])), list(new.get("bers", []))
    if sorted(o_bers) != sorted(n_bers):
        removed = [b for b in o_bers if b not in n_bers]
        added = [b for b in n_bers if b not in o_bers]
        detail = ", ".join(x for x in (f"added {added}" if added else "",
                                       f"removed {removed}" if removed else "") if x)
        changes.append(f"bers: {o_bers} -> {n_bers} ({detail})")
        extendable = extendable and not removed
    o_stop, n_stop = old.get("stopping"), new.get("stopping")
    if o_stop is None and n_stop is None:
        o_rep, n_rep = old.get("repetitions"), new.get("repetitions")
        if o_rep != n_rep:
            changes.append(f"repetitions: {o_rep} -> {n_rep}")
            extendable = extendable and isinstance(n_rep, int) and n_rep > (o_rep or 0)
    elif o_stop != n_stop:
        more, why = _stopping_asks_more(old, new)
        changes.append(f"stopping rule: {_show_stopping(old)} -> {_show_stopping(new)}"
                       + ("" if more else f" ({why})"))
        extendable = extendable and more
    return SpecDiff(changes, extendable and bool(changes))


def _factor_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Changes of the attribute columns that stored rows cannot follow: a column added or
    removed, its type changed, or the value of a level both specs have changed."""
    o, n = old.get("factors") or {}, new.get("factors") or {}
    if list(o) != list(n) and sorted(o) != sorted(n):
        return [f"factors (attribute columns): {sorted(o)} -> {sorted(n)}"]
    out = []
    for name in o:
        if o[name].get("type") != n[name].get("type"):
            out.append(f"factors[{name!r}]: type {o[name].get('type')} -> {n[name].get('type')}")
            continue
        for factor, levels in o[name].items():
            if factor == "type":
                continue
            for level, value in levels.items():
                if level in new.get(factor, {}) and n[name].get(factor, {}).get(level) != value:
                    out.append(f"factors[{name!r}] of {factor}[{level!r}]: {value!r} -> "
                               f"{n[name].get(factor, {}).get(level)!r}")
    return out


def _show_stopping(spec: Mapping[str, Any]) -> str:
    stop = spec.get("stopping")
    if stop is None:
        return f"{spec.get('repetitions')} repetitions"
    what = f"{stop['metric']}" + (".sdc_rate" if stop.get("on") == "sdc_rate" else "")
    width = (f"{stop['halfwidth'] * 100:g}% of golden" if stop.get("relative")
             else f"{stop['halfwidth']:g}")
    looks = f" (x{stop['growth']:g} a look)" if "growth" in stop else ""
    return (f"{what} half-width <= {width} at {stop['confidence']:g}, "
            f"{stop['min_reps']}..{stop['max_reps']} repetitions{looks}")


def _stopping_asks_more(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the new stopping rule keeps every trial the old one ran and only adds trials.

    Decisions are monotone in the rule: a narrower target, a higher confidence or a larger
    maximum make every look's interval at least as wide relative to its target, so every point
    that continued under the old rule continues under the new one. Changing what is measured,
    or the first round (``min_reps``, which moves every look), is not an extension.
    """
    o, n = old.get("stopping"), new.get("stopping")
    if n is None:
        return False, "a fixed count cannot replace a stopping rule; use a new --out DIR"
    if o is None:  # fixed -> adaptive: the stored repetitions are inside the first round
        o_rep = old.get("repetitions") or 0
        ok = n["min_reps"] >= o_rep
        return ok, "" if ok else f"the first round ({n['min_reps']}) is below the stored {o_rep}"
    same = ("metric", "on", "relative", "threshold", "higher_is_better", "min_reps", "growth")
    changed = [k for k in same if o.get(k) != n.get(k)]  # growth: absent = 2 (doubling)
    if changed:
        return False, f"{', '.join(changed)} changed"
    if n["halfwidth"] > o["halfwidth"] or n["confidence"] < o["confidence"] \
            or n["max_reps"] < o["max_reps"]:
        return False, "it asks for less (a wider target, lower confidence or a smaller maximum)"
    return True, ""
