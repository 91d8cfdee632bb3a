"""Rounds of an adaptive campaign: which trials each round runs, decided from complete rounds.

A fixed campaign is one round (``repetitions`` per point). A campaign with a
:class:`~pytei_ray.stats.Precision` target runs ``repetitions`` per point first, then at each
*look* (``repetitions``, ``2 x``, ``4 x`` ... up to ``max_reps``; ``growth`` instead of 2 when
the target says so) keeps only the points that still have a cell whose interval is wider than
the target, and brings their repetitions to the next look.
Points (model, target, error model, BER) carry all their mitigations, so repetition ``r`` of
a point has the same seed in every mitigation (paired faults) and the same id as in a fixed
campaign of at least ``r + 1`` repetitions.

A decision uses only the rows of repetitions below the look, which are all stored before it is
made: so the set of trials, hence the dataset, is a pure function of the campaign and its
stopping rule, however often the launcher is killed and rerun.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytei_ray.columns import POINT_FACTORS, UNREAD_COLUMNS, golden_column

from .spec import Campaign
from .trials import Point, Trial, expand, points, trial_id

__all__ = ["DecisionRows", "Round", "cells_at_cap", "decision_columns", "foreign_rows",
           "next_active", "round_trials"]


@dataclass(frozen=True)
class Round:
    """One round: its index, the repetitions it brings its points to, and their trials."""

    index: int
    reps: int
    trials: list[Trial]
    n_points: int


def round_trials(campaign: Campaign, index: int, active: Iterable[Point]) -> Round:
    """Trials of round ``index`` for the ``active`` points: repetitions from the previous
    look up to this one (round 0: all points, ``range(repetitions)``)."""
    looks = campaign.looks()
    start = looks[index - 1] if index else 0
    active = list(active)
    return Round(index, looks[index], expand(campaign, range(start, looks[index]), active),
                 len(active))


def decision_columns(campaign: Campaign) -> list[str]:
    """Result columns the stopping rule reads (empty for a fixed campaign)."""
    p = campaign.precision
    if p is None:
        return []
    return [*POINT_FACTORS, "repetition", "mitigation", "status", p.metric, golden_column(p.metric),
            "n_faults_sampled", "p_no_fault",
            *(UNREAD_COLUMNS if campaign.stratify_unread else ())]


@dataclass
class DecisionRows:
    """The rows a stopping rule looks at: stored ones, then those this run delivers.

    Only the decision columns are kept (a few numbers per trial), so a long campaign does not
    hold its full rows in the driver's memory.
    """

    columns: list[str]
    _rows: list[tuple] = field(default_factory=list)  # one tuple of `columns` per row

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Keep the decision columns of ``rows`` (missing ones as None)."""
        if self.columns:
            self._rows.extend(tuple(r.get(c) for c in self.columns) for r in rows)

    def frame(self) -> Any:
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame.from_records(self._rows, columns=self.columns)


def next_active(campaign: Campaign, rows: DecisionRows, index: int,
                active: Sequence[Point]) -> list[Point]:
    """The points of ``active`` that continue after look ``index`` (none after the last).

    Pure: a function of the rows of repetitions below ``looks[index]``, which the round just
    finished has stored.
    """
    looks = campaign.looks()
    if campaign.precision is None or index + 1 >= len(looks) or not active:
        return []
    from pytei_ray.stats import open_points  # lazy: scipy only for adaptive campaigns

    still = open_points(rows.frame(), campaign.precision, campaign.repetitions, index,
                        metric=campaign.metric_info(campaign.precision.metric),
                        point_cols=POINT_FACTORS)
    keep = {(m, t, e, float(b)) for m, t, e, b in still}
    return [p for p in active if p in keep]


def foreign_rows(campaign: Campaign, stored: Iterable[Mapping[str, Any]]) -> list[str]:
    """Ids of stored rows that are not trials of ``campaign`` (up to its largest look).

    Each row's id is recomputed from its factor columns, so this costs O(stored rows) and does
    not expand the whole grid up to ``max_reps``.
    """
    levels = campaign.factor_levels()
    grid = set(points(campaign))
    max_reps = campaign.looks()[-1]
    bad = []
    for r in stored:
        point = (r["model"], r["target"], r["error_model"], float(r["ber"]))
        ok = (point in grid and r["mitigation"] in campaign.mitigations
              and 0 <= int(r["repetition"]) < max_reps
              and trial_id(campaign.seed, levels, *point, int(r["repetition"]), r["mitigation"],
                           campaign.attributes(*point[:3], r["mitigation"])) == r["trial_id"])
        if not ok:
            bad.append(r["trial_id"])
    return bad


def cells_at_cap(campaign: Campaign, rows: DecisionRows) -> list[str]:
    """Cells of an adaptive campaign that are still open with ``max_reps`` repetitions, one
    line each with the reason (what the run summary and the report list as "at the cap")."""
    from pytei_ray.stats import judge_cells, stopped_at_cap

    p = campaign.precision
    frame = rows.frame()
    if p is None or frame.empty:
        return []
    out = []
    for key, g, verdict in sorted(judge_cells(frame, p, campaign.repetitions, POINT_FACTORS,
                                              metric=campaign.metric_info(p.metric)),
                                  key=lambda item: item[0]):
        if stopped_at_cap(g, verdict, p.max_reps):
            out.append(f"{'/'.join(str(k) for k in key)}: {verdict.reason} after {len(g)} "
                       "repetitions")
    return out
