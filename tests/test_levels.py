"""Factor levels with attributes (`Level`): extra typed columns in every row, pinned ids."""

from __future__ import annotations

import sys
from pathlib import Path

from pytei_ray.campaign import spec_hash
from pytei_ray.campaign.trials import expand

ROOT = Path(__file__).resolve().parents[1]
# jobs/tiny.py as of issue 13 (before `Level` existed): its spec hash and first trial ids
PINNED_HASH = "63b72227a8f54be641cf68e3175f69b5f0e4566f8f81e2f32c3f85f8cef371b7"
PINNED_IDS = ["25bd34f7afe1ea6f", "469e605c6771d4cb", "cdb348cddc32b7e4"]


def test_existing_campaign_spec_and_ids_are_pinned():
    """Stored results of campaigns without attributes must keep their spec hash and ids."""
    sys.path.insert(0, str(ROOT / "jobs"))
    try:
        import tiny
    finally:
        sys.path.remove(str(ROOT / "jobs"))
    c = tiny.make_campaign()
    assert spec_hash(c.spec()) == PINNED_HASH
    ids = [t.trial_id for t in expand(c)]
    assert len(ids) == 120
    assert ids[:3] == PINNED_IDS
    assert "factors" not in c.spec()
