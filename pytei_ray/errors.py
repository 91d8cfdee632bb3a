"""Exceptions raised by the campaign layer (job files, specs, results directories, executors).

Every message states the rule, what was expected and what was found, and how to proceed. All of
them derive from :class:`PyteiRayError`, so a caller can catch the family in one clause; the ones
about bad user input also derive from :class:`ValueError`.

An error keeps its type from where it is raised to the caller (the launcher maps the types to
exit statuses). Where a message tells what to change, it names the argument of
:func:`pytei_ray.driver.run` as Python (```extend=True```, ```out=DIR```, ```out=...``` for the
argument alone); the launcher prints those as its flags (:func:`pytei_ray.launch.cli_text`).
"""

from __future__ import annotations

__all__ = [
    "PyteiRayError",
    "CampaignSpecError",
    "JobFileError",
    "ResultsDirError",
    "SpecChangedError",
    "GoldenDriftError",
    "ModelChecksumError",
    "TrialSetupError",
    "ExecutorOptionError",
    "ResourcesUnavailableError",
    "TrialsLostError",
]


class PyteiRayError(Exception):
    """Base class of every pytei_ray campaign-layer error."""


class CampaignSpecError(PyteiRayError, ValueError):
    """A :class:`~pytei_ray.campaign.Campaign` argument is invalid (raised at construction)."""


class JobFileError(PyteiRayError, ValueError):
    """A job file cannot be loaded or does not define a campaign."""


class ResultsDirError(PyteiRayError):
    """The results location cannot be used (it is a file, unreadable, or holds foreign data)."""


class SpecChangedError(ResultsDirError):
    """The campaign differs from the one whose results are already stored in the directory.

    Attributes:
        changes: one human-readable line per changed field (``"bers: [...] -> [...]"``).
        extendable: True when the change only adds trials, so ``--extend`` may run it.
    """

    def __init__(self, message: str, changes: list[str], extendable: bool) -> None:
        super().__init__(message)
        self.changes = changes
        self.extendable = extendable


class GoldenDriftError(ResultsDirError):
    """The golden (fault-free) metrics computed now differ from those stored in the directory.

    New rows would carry another golden value than the stored ones: the dataset would mix two
    experiments (``evaluate``, the data or the model changed between runs). Nothing of the
    chunk that showed it is stored; the launcher exits with status 2.
    """


class ModelChecksumError(ResultsDirError):
    """A model factory built different weights on two workers or in two runs.

    Every worker builds its own replica, so a factory that does not seed its RNG gives each
    worker (and each run) another model. The launcher exits with status 2 before storing
    anything of the chunk (or, when ``prepare`` shows it, before any trial).
    """


class TrialSetupError(PyteiRayError):
    """A job hook failed while preparing trials (model factory, data, calibration, golden run).

    Unlike an exception inside one trial's evaluation, which becomes a ``status="failed"`` row,
    a setup failure means no trial of that model/mitigation can be meaningful, so the run stops.
    Rows already written are kept: fix the job and rerun the same command to resume.

    Attributes:
        model: the model whose hook failed, when known (None otherwise).
    """

    def __init__(self, message: str, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class ExecutorOptionError(PyteiRayError, ValueError):
    """An executor option is invalid (``--executor-opt``, ``--num-gpus``, ``--num-cpus``)."""


class ResourcesUnavailableError(PyteiRayError, RuntimeError):
    """The cluster cannot place even one worker of the requested shape (or no worker is left)."""


class TrialsLostError(PyteiRayError):
    """Some trials killed their worker process every time they ran and were given up.

    Every other trial's row is stored; running the same command again retries only these
    (the launcher exits with status 3).

    Attributes:
        trial_ids: the trials without a row.
    """

    def __init__(self, message: str, trial_ids: list[str]) -> None:
        super().__init__(message)
        self.trial_ids = trial_ids
