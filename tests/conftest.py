"""Shared test set-up: telemetry off before anything heavy is imported."""

from __future__ import annotations

from evergreen.telemetry import disable_telemetry

disable_telemetry()
