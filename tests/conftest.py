"""Shared test set-up: telemetry off before anything heavy is imported; one Prefect
test-harness server for every folder that runs flows."""

from __future__ import annotations

import pytest

from evergreen.telemetry import disable_telemetry

disable_telemetry()


@pytest.fixture(scope="session")
def prefect_harness():
    """A Prefect test-harness server, started once per session (20-40 s on this machine)
    and shared by tests/flows and tests/reliability."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
