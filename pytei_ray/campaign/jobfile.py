"""Job files: Python modules that define a campaign, loaded from their source text.

A job file defines ``campaign = Campaign(...)``, and optionally ``make_campaign(**params)`` so
the launcher's ``--set key=value`` can choose a variant (e.g. ``--set small=1``). A
:class:`JobRef` carries the path, the source text and the params, so an executor on another
machine rebuilds the same campaign by executing the same source (functions defined in a job file
cannot be pickled by reference there).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import re
import sys
import traceback
import types
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytei_ray.errors import CampaignSpecError, JobFileError

from .spec import Campaign

__all__ = ["JobRef", "load_job", "parse_params", "results_location"]

_locations: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # campaign -> results_uri


def results_location(campaign: object) -> tuple[bool, str | None]:
    """``(True, results_uri)`` for a campaign built by :meth:`JobRef.campaign` (the location
    its hooks' :class:`~pytei_ray.execution.context.BuildContext` caches artifacts in; None:
    no location), ``(False, None)`` for a campaign made by hand."""
    try:
        if campaign in _locations:
            return True, _locations[campaign]
    except TypeError:  # an unhashable object cannot have been built by a JobRef
        pass
    return False, None


def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``["small=1", "name=x"]`` into ``{"small": 1, "name": "x"}``.

    Values are Python literals when they parse as one (``1``, ``0.5``, ``[1, 2]``, ``True``),
    otherwise strings.

    Example:
        >>> parse_params(["small=1", "tag=run a", "bers=[0.1, 0.2]"])
        {'small': 1, 'tag': 'run a', 'bers': [0.1, 0.2]}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise JobFileError(f"Expected --set KEY=VALUE with KEY a Python identifier, but got "
                               f"{item!r}.")
        try:
            out[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def _show_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def _job_frame_line(exc: BaseException, path: str) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    return f"{path}:{frames[-1].lineno}" if frames else path


#: Campaign fields a JobRef may replace after the job builds it.
_OVERRIDABLE = ("metrics", "precision", "repetitions", "skip_ineffective", "stratify_unread")


@dataclass(frozen=True)
class JobRef:
    """A job file by value: enough to rebuild its campaign anywhere.

    Attributes:
        path: the job file's path as given (used in messages and tracebacks).
        source: the file's text.
        params: keyword arguments for ``make_campaign`` (empty: use ``campaign``).
        results_uri: the run's results location; hooks get it through their
            :class:`~pytei_ray.execution.context.BuildContext` (set by the launcher).
        overrides: Campaign fields replaced after the job builds it: ``repetitions`` (the
            launcher's ``--repetitions N``) and ``precision`` (``--precision``, a
            :class:`~pytei_ray.stats.Precision`); ``skip_ineffective`` (benchmarks compare
            with and without skipping); ``metrics`` (benchmarks/adaptive.py ``--honest``
            declares the target metric unbounded to run the Student-t rule, and turns
            ``stratify_unread`` off to measure what it saves).
    """

    path: str
    source: str
    params: Mapping[str, Any] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    results_uri: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.overrides) - set(_OVERRIDABLE))
        if unknown:
            raise JobFileError(f"Expected JobRef overrides among {list(_OVERRIDABLE)}, but got "
                               f"{unknown}.")

    @property
    def source_sha256(self) -> str:
        """sha256 of the source text."""
        return hashlib.sha256(self.source.encode()).hexdigest()

    @property
    def module_name(self) -> str:
        """Name the job module gets in ``sys.modules`` (stable, so pickling by name works)."""
        return "pytei_job_" + re.sub(r"\W", "_", Path(self.path).stem)

    def campaign(self) -> Campaign:
        """Execute the source (once per process) and return its campaign.

        Raises:
            JobFileError: the file fails to run, defines no campaign, or rejects the params.
            CampaignSpecError: :attr:`overrides` make an invalid campaign.
        """
        if "campaign" not in self._cache:
            base = self.base_campaign()
            try:  # a copy of its own, so that its results location is this JobRef's
                campaign = dataclasses.replace(base, **dict(self.overrides))
            except CampaignSpecError as exc:  # the override is invalid, not the job file
                raise CampaignSpecError(f"{exc} (overriding the campaign of {self.path} with "
                                        f"{dict(self.overrides)})") from exc
            _locations[campaign] = self.results_uri
            self._cache["campaign"] = campaign
        return self._cache["campaign"]

    def base_campaign(self) -> Campaign:
        """The campaign exactly as the job file makes it (before :attr:`overrides`).

        Raises:
            JobFileError: as :meth:`campaign`.
        """
        if "base" not in self._cache:  # the source runs once per process
            self._cache["base"] = self._build()
        return self._cache["base"]

    def replace(self, **changes: Any) -> JobRef:
        """A copy with ``results_uri`` and/or ``overrides`` changed; the job source is not run
        again.

        Example:
            >>> job = JobRef("j.py", "from pytei_ray import Campaign")
            >>> job.replace(results_uri="results/x").results_uri
            'results/x'
        """
        new = dataclasses.replace(self, _cache={}, **changes)
        if "base" in self._cache:
            new._cache["base"] = self._cache["base"]
        return new

    def __getstate__(self) -> dict[str, Any]:  # never ship the built campaign (hooks, models)
        return {"path": self.path, "source": self.source, "params": dict(self.params),
                "results_uri": self.results_uri, "overrides": dict(self.overrides)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {"results_uri": None, "overrides": {}, **state}
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_cache", {})

    def _build(self) -> Campaign:
        module = types.ModuleType(self.module_name)
        module.__file__ = self.path
        sys.modules[self.module_name] = module
        try:
            code = compile(self.source, self.path, "exec")
            exec(code, module.__dict__)
        except CampaignSpecError as exc:
            raise JobFileError(f"{_job_frame_line(exc, self.path)}: {exc}") from exc
        except Exception as exc:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
            raise JobFileError(f"Running job file {self.path} raised "
                               f"{type(exc).__name__}: {exc}\n{tb}") from exc
        ns = module.__dict__
        make = ns.get("make_campaign")
        if self.params and not callable(make):
            raise JobFileError(
                f"{self.path} takes no parameters (--set {', '.join(self.params)}): define "
                "`make_campaign(**params)` in it to accept them."
            )
        if callable(make) and (self.params or "campaign" not in ns):
            self._check_params(make)
            try:
                campaign = make(**self.params)
            except CampaignSpecError as exc:
                raise JobFileError(f"{_job_frame_line(exc, self.path)}: {exc}") from exc
            except Exception as exc:  # e.g. a parameter value the job rejects
                raise JobFileError(f"{_job_frame_line(exc, self.path)}: make_campaign("
                                   f"{_show_params(self.params)}) raised {type(exc).__name__}: "
                                   f"{exc}") from exc
        elif "campaign" in ns:
            campaign = ns["campaign"]
        else:
            raise JobFileError(
                f"Expected job file {self.path} to define `campaign = Campaign(...)` (or "
                "`make_campaign(**params)`), but it defines neither."
            )
        if not isinstance(campaign, Campaign):
            raise JobFileError(
                f"Expected `campaign` in {self.path} to be a pytei_ray.Campaign, but got "
                f"{type(campaign).__name__}."
            )
        return campaign

    def _check_params(self, make: Any) -> None:
        sig = inspect.signature(make)
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return
        accepted = [n for n, p in sig.parameters.items()
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in self.params if k not in accepted]
        if unknown:
            raise JobFileError(
                f"Unknown job parameter(s) {unknown} for {self.path}; make_campaign accepts: "
                f"{', '.join(accepted) or '(none)'}."
            )


def load_job(path: str | Path, params: Mapping[str, Any] | None = None) -> JobRef:
    """Read a job file and build its campaign (validating it) in this process.

    Args:
        path: the job file.
        params: ``make_campaign`` keyword arguments (see :func:`parse_params`).

    Raises:
        JobFileError: missing file, or see :meth:`JobRef.campaign`.
    """
    p = Path(path)
    if not p.is_file():
        raise JobFileError(f"Expected a job file (a .py module defining `campaign`), but "
                           f"{str(path)!r} {'is a directory' if p.is_dir() else 'does not exist'}.")
    job = JobRef(str(path), p.read_text(), dict(params or {}))
    job.campaign()
    return job
