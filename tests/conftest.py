"""Shared fixtures; Ray-specific fixtures live next to the tests that need them."""

from __future__ import annotations

import os

# Keep any Ray a test starts on loopback and quiet (see shared/RAY.md).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_COLOR_PREFIX", "0")
