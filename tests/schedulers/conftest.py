"""The ``runs`` fixture of the real-scheduler modules that check scenarios (tests/scenarios.py)."""

import pytest


@pytest.fixture(scope="module")
def runs(request, scenario_runs):
    """This module's scenarios (started with the session: tests/scenarios.py); what they left
    queued is cancelled after the module's last test."""
    if scenario_runs is None:
        pytest.skip("no selected test checks a scenario")
    yield scenario_runs.of(request.module)
    scenario_runs.stop(request.module)
