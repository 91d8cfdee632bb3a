"""Exceptions raised by the campaign layer (job files, specs, results directories, executors).

Every message states the rule, what was expected and what was found, and how to proceed. All of
them derive from :class:`PyteiRayError`, so a caller can catch the family in one clause; the ones
about bad user input also derive from :class:`ValueError`.
"""

from __future__ import annotations

__all__ = [
    "PyteiRayError",
    "CampaignSpecError",
    "JobFileError",
    "ResultsDirError",
    "SpecChangedError",
    "TrialSetupError",
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


class TrialSetupError(PyteiRayError):
    """A job hook failed while preparing trials (model factory, data, calibration, golden run).

    Unlike an exception inside one trial's evaluation, which becomes a ``status="failed"`` row,
    a setup failure means no trial of that model/mitigation can be meaningful, so the run stops.
    Rows already written are kept: fix the job and rerun the same command to resume.
    """
