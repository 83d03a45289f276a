"""The scenario files and what the runner makes of them (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netns.runner import SCENARIO_DIR, Scenario, judge, load_all


def test_every_scenario_file_loads():
    names = [scenario.name for scenario in load_all()]
    assert names == sorted(path.stem for path in SCENARIO_DIR.glob("*.toml"))


def write(tmp_path: Path, text: str) -> Scenario:
    path = tmp_path / "99-test.toml"
    path.write_text(text)
    return Scenario.load(path)


DEAD = """
[topology]
server = "dead"
[probe]
url = "http://www.example.com/"
[expect]
verdict = "unreachable"
hop = "none"
exit = 4
"""


def test_none_stands_for_null_and_is_checked_like_any_expectation(tmp_path):
    scenario = write(tmp_path, DEAD)
    assert scenario.server == "dead" and scenario.expect == {"verdict": "unreachable", "hop": None, "exit": 4}
    assert judge(scenario, {"verdict": "unreachable", "hop": None, "packets": []}, 4) == []
    assert judge(scenario, {"verdict": "unreachable", "hop": 4, "packets": []}, 3) == [
        "hop: expected None, got 4", "exit status: expected 4, got 3"]


def test_without_an_exit_expectation_the_status_is_not_checked(tmp_path):
    scenario = write(tmp_path, DEAD.replace("exit = 4\n", ""))
    assert judge(scenario, {"verdict": "unreachable", "hop": None, "packets": []}, 3) == []


def test_an_unknown_server_state_is_refused(tmp_path):
    with pytest.raises(ValueError, match="server must be one of"):
        write(tmp_path, DEAD.replace('"dead"', '"asleep"'))


def test_https_scenarios_trust_the_lab_ca_and_box_args_name_only_the_labs_files():
    from netns.lab import Lab
    from netns.labtls import Issued
    from netns.runner import ScenarioLab, lab_files

    def issued(folder: str) -> Issued:
        return Issued(Path(folder, "ca.crt"), Path(folder, "server.crt"), Path(folder, "server.key"))

    lab = Lab()
    lab.pki, lab.proxy_pki = issued("/lab/tls"), issued("/lab/tls-proxy")
    for scenario in load_all():
        for arg in scenario.box_args:
            arg.format_map(lab_files(lab))  # KeyError: a name the lab does not provide
    [intercept] = load_all(["28-tls-intercepting-proxy"])
    assert "/lab/tls-proxy/server.key" in [arg.format_map(lab_files(lab)) for arg in intercept.box_args]
    [tap] = load_all(["23-tls-tap-rst-burst"])
    scenario_lab = ScenarioLab(tap)
    scenario_lab.lab.pki = lab.pki
    argv = scenario_lab.probe_argv()
    assert argv[argv.index("--cacert") + 1] == "/lab/tls/ca.crt"
    assert argv[argv.index("--resolve") + 1] == "blocked.example:443:203.0.113.80"
    [clean] = load_all(["01-clean"])
    assert "--cacert" not in ScenarioLab(clean).probe_argv()
