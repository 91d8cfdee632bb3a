"""Stored datasets depend on trial ids and seeds: pinned values, so a refactor cannot move them."""

from __future__ import annotations

from pytei_ray.campaign.trials import trial_id, trial_seed
from pytei_ray.faults.sampling import seed_from_digest, stable_seed

LEVELS = {"targets": {"all": None}, "error_models": {"bitflip": "BitFlip"},
          "mitigations": {"none": None}}


def test_trial_seeds_and_ids_are_pinned():
    assert trial_seed(0, "mlp", "all", "bitflip", 1e-3, 0) == 5544439223432235461
    assert trial_seed(5, "a", "x", "stuck", 1e-2, 7) == 7191907962851108249
    assert trial_id(0, LEVELS, "mlp", "all", "bitflip", 1e-3, 0, "none") == "e62ab9bd252006c1"


def test_stable_seed_is_pinned():
    assert stable_seed(0, "fm", 1e-5) == 557443667926464264
    assert stable_seed("a", [1, 2], True) == 6777762942739967151


def test_one_digest_to_seed_function():
    digest = bytes(range(32))
    assert seed_from_digest(digest) == int.from_bytes(digest[:8], "little") >> 1
    assert seed_from_digest(digest, "big") == int.from_bytes(digest[:8], "big") >> 1
