"""Every lab scenario against `probe check`, several times each: the races must not make it flaky.

The scenarios are data (netns/scenarios/*.toml); this one test runs them all. A scenario
with a `known_gap` is a strict xfail: the day the probe gets it right, this fails until the
gap is removed from the scenario file.
"""

import os

import pytest

from netns.runner import ScenarioLab, load_all

REPEATS = int(os.environ.get("PROBE_SCENARIO_REPEATS", "3"))
SCENARIOS = load_all()

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root and network namespaces")]


def _param(scenario):
    marks = [pytest.mark.xfail(reason=scenario.known_gap, strict=True)] if scenario.known_gap else []
    return pytest.param(scenario, id=scenario.name, marks=marks)


@pytest.mark.parametrize("scenario", [_param(s) for s in SCENARIOS])
def test_scenario(scenario):
    with ScenarioLab(scenario) as lab:
        results = [lab.run_probe() for _ in range(REPEATS)]
    failures = [f"run {i + 1}: {'; '.join(r.problems)}" for i, r in enumerate(results) if not r.passed]
    assert not failures, f"{scenario.name}: {scenario.description}\n" + "\n".join(failures)
