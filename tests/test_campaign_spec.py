"""Campaign validation, stable trial ids and seeds, spec comparison, chunking."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytei_ray import BitFlip, StuckAt
from pytei_ray.campaign import Campaign, compare_specs, expand, make_chunks, spec_hash, trial_seed
from pytei_ray.errors import CampaignSpecError
from pytei_ray.mitigations import SBP, Clip

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    return env


def _build():
    return torch.nn.Linear(4, 2)


def _kw(**over):
    kw = dict(name="c", models={"a": _build, "b": _build}, data=lambda n: None,
              evaluate=lambda m, d: {}, bers=[1e-3, 1e-2], repetitions=2,
              mitigations={"none": None, "sbp": SBP()}, seed=5)
    kw.update(over)
    return kw


@pytest.mark.parametrize("over, match", [
    (dict(bers=[]), r"Expected argument `bers` to be a non-empty list"),
    (dict(bers=[1.5]), r"`bers` to be a float in \[0, 1\], but got 1.5"),
    (dict(bers=[-0.1]), r"in \[0, 1\], but got -0.1"),
    (dict(bers=[math.nan]), r"in \[0, 1\], but got nan"),
    (dict(bers=[1e-3, 0.001]), r"distinct values, but 0.001 appears twice"),
    (dict(bers="0.1"), r"`bers` to be a non-empty list"),
    (dict(bers=[True]), r"`bers` to be a non-empty list"),
    (dict(models={}), r"`models` to be a non-empty dict"),
    (dict(models={"a": torch.nn.Linear(2, 2)}), r"`models\['a'\]` to be a model factory"),
    (dict(models={"a": 3}), r"`models\['a'\]` to be callable"),
    (dict(models=[_build]), r"`models` to be a non-empty dict"),
    (dict(models={"": _build}), r"names in argument `models`"),
    (dict(mitigations={}), r"`mitigations` to be a non-empty dict"),
    (dict(mitigations={"x": "sbp"}), r"`mitigations\['x'\]` to be None, a Mitigation"),
    (dict(targets={"t": 3}), r"`targets\['t'\]` to be None"),
    (dict(error_models={"e": BitFlip(1e-3)}), r"`error_models\['e'\]` to be callable"),
    (dict(repetitions=0), r"`repetitions` to be an integer >= 1, but got 0"),
    (dict(repetitions=True), r"`repetitions` to be an integer"),
    (dict(seed=-1), r"`seed` to be an integer >= 0"),
    (dict(name="has space"), r"`name` to be a non-empty name"),
    (dict(evaluate=None), r"`evaluate` to be callable"),
    (dict(data=3), r"`data` to be callable"),
    (dict(chunk_size=0), r"`chunk_size` to be an integer >= 1"),
    (dict(num_gpus_per_worker=-1), r"`num_gpus_per_worker` to be a number >= 0"),
])
def test_bad_arguments_rejected_at_construction(over, match):
    with pytest.raises(CampaignSpecError, match=match):
        Campaign(**_kw(**over))


def test_defaults_and_count():
    c = Campaign(name="d", models={"a": _build}, data=lambda n: None,
                 evaluate=lambda m, d: {}, bers=[0.0, 1e-3], repetitions=3)
    assert list(c.mitigations) == ["none"] and list(c.targets) == ["all"]
    assert c.error_models["bitflip"] is BitFlip
    assert c.n_trials == len(expand(c)) == 6


def test_ids_stable_unique_and_order_independent():
    a = expand(Campaign(**_kw()))
    b = expand(Campaign(**_kw(
        models={"b": _build, "a": _build}, bers=[1e-2, 1e-3],
        mitigations={"sbp": SBP(), "none": None})))
    assert len({t.trial_id for t in a}) == len(a) == 16
    key = lambda t: (t.model, t.target, t.error_model, t.ber, t.repetition, t.mitigation)  # noqa: E731
    assert {key(t): (t.trial_id, t.seed) for t in a} == {key(t): (t.trial_id, t.seed) for t in b}
    # same spec built again (fresh objects) -> same ids
    assert [t.trial_id for t in a] == [t.trial_id for t in expand(Campaign(**_kw()))]


def test_ids_stable_across_processes():
    code = ("from pytei_ray.campaign import Campaign, expand;"
            "c = Campaign(name='c', models={'a': lambda: None}, data=lambda n: None,"
            " evaluate=lambda m, d: {}, bers=[1e-3], repetitions=2, seed=5);"
            "print(' '.join(f'{t.trial_id}:{t.seed}' for t in expand(c)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=_env(PYTHONHASHSEED="123")).stdout.split()
    here = expand(Campaign(name="c", models={"a": lambda: None}, data=lambda n: None,
                           evaluate=lambda m, d: {}, bers=[1e-3], repetitions=2, seed=5))
    assert out == [f"{t.trial_id}:{t.seed}" for t in here]


def test_seed_shared_across_mitigations_id_is_not():
    trials = expand(Campaign(**_kw()))
    by_point: dict = {}
    for t in trials:
        by_point.setdefault((t.model, t.ber, t.repetition), []).append(t)
    for group in by_point.values():
        assert len({t.seed for t in group}) == 1
        assert len({t.trial_id for t in group}) == 2
    # the seed depends on every other factor
    base = trial_seed(5, "a", "all", "bitflip", 1e-3, 0)
    assert len({base, trial_seed(6, "a", "all", "bitflip", 1e-3, 0),
                trial_seed(5, "b", "all", "bitflip", 1e-3, 0),
                trial_seed(5, "a", "x", "bitflip", 1e-3, 0),
                trial_seed(5, "a", "all", "stuck", 1e-3, 0),
                trial_seed(5, "a", "all", "bitflip", 1e-2, 0),
                trial_seed(5, "a", "all", "bitflip", 1e-3, 1)}) == 7
    assert 0 <= base < 2**63


def test_changed_definition_changes_ids():
    a = {t.trial_id for t in expand(Campaign(**_kw()))}
    b = {t.trial_id for t in expand(Campaign(**_kw(mitigations={"none": None,
                                                                  "sbp": SBP(bits=[30])})))}
    none_ids = {t.trial_id for t in expand(Campaign(**_kw())) if t.mitigation == "none"}
    assert a & b == none_ids


@settings(max_examples=25, deadline=None)
@given(st.permutations([0.0, 1e-6, 1e-4, 1e-2, 0.5]), st.permutations(["m1", "m2", "m3"]))
def test_ids_independent_of_level_order(bers, names):
    c1 = Campaign(**_kw(bers=bers, models={n: _build for n in names}))
    c2 = Campaign(**_kw(bers=sorted(bers), models={n: _build for n in sorted(names)}))
    assert sorted(t.trial_id for t in expand(c1)) == sorted(t.trial_id for t in expand(c2))
    assert spec_hash(c1.spec()) == spec_hash(c2.spec())


def test_compare_specs_extension_and_change():
    old = Campaign(**_kw()).spec()
    assert compare_specs(old, Campaign(**_kw()).spec()).same
    ext = compare_specs(old, Campaign(**_kw(bers=[1e-3, 1e-2, 0.1], repetitions=3,
                                            mitigations={"none": None, "sbp": SBP(),
                                                         "clip": Clip()})).spec())
    assert ext.extendable and not ext.same
    assert "bers: [0.001, 0.01] -> [0.001, 0.01, 0.1] (added [0.1])" in ext.changes
    assert "repetitions: 2 -> 3" in ext.changes
    assert "mitigations: added ['clip']" in ext.changes
    for over, line in [
        (dict(seed=6), "seed: 5 -> 6"),
        (dict(bers=[1e-3]), "removed [0.01]"),
        (dict(repetitions=1), "repetitions: 2 -> 1"),
        (dict(mitigations={"none": None}), "mitigations: 'sbp' removed"),
        (dict(mitigations={"none": None, "sbp": SBP(bits=[31])}), "mitigations['sbp']:"),
        (dict(error_models={"bitflip": StuckAt}), "error_models['bitflip']:"),
    ]:
        diff = compare_specs(old, Campaign(**_kw(**over)).spec())
        assert not diff.extendable, over
        assert any(c.startswith(line) or line in c for c in diff.changes), (line, diff.changes)
    params = compare_specs(Campaign(**_kw()).spec({"small": 1}), old)
    assert not params.extendable and params.changes == ["params: {'small': 1} -> {}"]


def test_chunks_hold_one_model_and_keep_order():
    trials = expand(Campaign(**_kw()))
    chunks = make_chunks(trials, 3)
    assert [t for c in chunks for t in c] == trials
    assert all(len({t.model for t in c}) == 1 and len(c) <= 3 for c in chunks)
    with pytest.raises(ValueError, match="chunk_size"):
        make_chunks(trials, 0)


def test_import_campaign_does_not_import_ray():
    code = ("import sys, pytei_ray.campaign, pytei_ray.storage, pytei_ray.execution,"
            " pytei_ray.launch; assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())
