"""When faults strike during training: at a step, in a window, intermittently, or permanently.

A schedule answers two questions per step: is this step faulty, and are its faults new
(*transient*: drawn anew from ``(seed, step, site)``) or the same at every step (*permanent*:
drawn once from ``(seed, site)``). Transient schedules combine with ``|``.

Example:
    >>> s = AtStep(3) | Window(10, 12)
    >>> [k for k in range(15) if s.active(k, seed=0)]
    [3, 10, 11]
    >>> Permanent(5).active(4, seed=0), Permanent(5).active(99, seed=0)
    (False, True)
"""

from __future__ import annotations

import math

from ..faults.sampling import stable_seed

__all__ = ["AtStep", "Every", "Permanent", "Schedule", "Window"]


def _step(name: str, value: object, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Expected argument `{name}` to be a step (an int >= 0), but got "
                         f"{value!r}.")
    return value


def _window(start: object, end: object) -> tuple[int, int | None]:
    s = _step("start", start)
    e = _step("end", end, allow_none=True)
    assert s is not None
    if e is not None and e <= s:
        raise ValueError(
            "A window of steps [start, end) must end after it starts.\n"
            f"  expected: end > start = {s}\n  got: end = {e}\n"
            f"Use AtStep({s}) for one step, or Window({s}, {s + 1})."
        )
    return s, e


class Schedule:
    """Base class: the steps at which faults strike, and whether they are permanent."""

    permanent: bool = False

    def active(self, step: int, seed: int) -> bool:
        """Whether faults strike at ``step`` (``seed`` drives intermittent schedules)."""
        raise NotImplementedError

    def bounds(self) -> tuple[int, int | None]:
        """``(first, end)``: no step outside ``[first, end)`` is active (``end`` None: open)."""
        raise NotImplementedError

    def __or__(self, other: Schedule) -> Schedule:
        return AnyOf(self, other)


class AtStep(Schedule):
    """Faults at one step (transient)."""

    def __init__(self, step: int) -> None:
        self.step = _step("step", step)

    def active(self, step: int, seed: int) -> bool:
        return step == self.step

    def bounds(self) -> tuple[int, int | None]:
        return self.step, self.step + 1  # type: ignore[operator]

    def __repr__(self) -> str:
        return f"AtStep({self.step})"


class Window(Schedule):
    """Faults at every step of ``[start, end)``, new ones each step (transient)."""

    def __init__(self, start: int, end: int) -> None:
        if end is None:
            raise ValueError("Expected argument `end` to be a step; for an open window use "
                             "Every(p=1.0, start=...).")
        self.start, self.end = _window(start, end)

    def active(self, step: int, seed: int) -> bool:
        return self.start <= step < self.end  # type: ignore[operator]

    def bounds(self) -> tuple[int, int | None]:
        return self.start, self.end

    def __repr__(self) -> str:
        return f"Window({self.start}, {self.end})"


class Every(Schedule):
    """Intermittent faults: each step of ``[start, end)`` is faulty with probability ``p``,
    independently (a pure function of the seed and the step), with new faults each time."""

    def __init__(self, p: float, start: int = 0, end: int | None = None) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0 \
                or math.isnan(p):
            raise ValueError(f"Expected argument `p` to be a float in [0, 1], but got {p!r}.")
        self.p = float(p)
        self.start, self.end = _window(start, end)

    def active(self, step: int, seed: int) -> bool:
        if step < self.start or (self.end is not None and step >= self.end):
            return False
        if self.p >= 1.0:
            return True
        u = stable_seed(seed, "training-every/v1", self.p, step) / 2.0**63
        return u < self.p

    def bounds(self) -> tuple[int, int | None]:
        return self.start, self.end

    def __repr__(self) -> str:
        end = "" if self.end is None else f", end={self.end}"
        return f"Every(p={self.p!r}, start={self.start}{end})"


class Permanent(Schedule):
    """A permanent fault: the same positions at every step of ``[start, end)`` (``end`` None:
    to the end of training). For weights, ``StuckAt`` is the physical model (the bit is
    re-asserted after every update); a permanent ``BitFlip`` flips the same bits every step."""

    permanent = True

    def __init__(self, start: int = 0, end: int | None = None) -> None:
        self.start, self.end = _window(start, end)

    def active(self, step: int, seed: int) -> bool:
        return step >= self.start and (self.end is None or step < self.end)

    def bounds(self) -> tuple[int, int | None]:
        return self.start, self.end

    def __repr__(self) -> str:
        end = "" if self.end is None else f", end={self.end}"
        return f"Permanent(start={self.start}{end})"


class AnyOf(Schedule):
    """The union of transient schedules (``AtStep(5) | Window(10, 20)``)."""

    def __init__(self, *parts: Schedule) -> None:
        flat: list[Schedule] = []
        for p in parts:
            if not isinstance(p, Schedule):
                raise TypeError(f"Expected a schedule (AtStep, Window, Every), but got {p!r}.")
            if p.permanent:
                raise ValueError("A permanent fault cannot be combined with `|`: its positions "
                                 "are the same at every step. Use one Permanent(start, end).")
            flat.extend(p.parts if isinstance(p, AnyOf) else [p])
        self.parts = tuple(flat)

    def active(self, step: int, seed: int) -> bool:
        return any(p.active(step, seed) for p in self.parts)

    def bounds(self) -> tuple[int, int | None]:
        firsts, ends = zip(*(p.bounds() for p in self.parts))
        return min(firsts), None if None in ends else max(e for e in ends if e is not None)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.parts))
