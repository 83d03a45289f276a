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


def test_a_scenario_runs_over_ipv4_unless_its_file_lists_ipv6(tmp_path):
    assert write(tmp_path, DEAD).families == (4,)
    both = write(tmp_path, 'families = ["ipv4", "ipv6"]\n' + DEAD)
    assert both.families == (4, 6)
    with pytest.raises(ValueError, match="families must name some of ipv4, ipv6"):
        write(tmp_path, 'families = ["ipx"]\n' + DEAD)


def test_over_ipv6_the_probe_is_pointed_at_the_server_s_ipv6_address(tmp_path):
    """The same URL, --resolve to the lab's IPv6 server address in brackets (curl's spelling),
    or to `address6` when the scenario names one (the load balancer's virtual address)."""
    from netns.lab import SERVER_ADDR6
    from netns.runner import ScenarioLab

    scenario = write(tmp_path, 'families = ["ipv4", "ipv6"]\n' + DEAD)
    argv = ScenarioLab(scenario, family=6).probe_argv()
    assert argv[argv.index("--resolve") + 1] == f"www.example.com:80:[{SERVER_ADDR6}]"
    vip = write(tmp_path, 'families = ["ipv4", "ipv6"]\n' + DEAD.replace(
        '[probe]\n', '[probe]\naddress = "203.0.113.100"\naddress6 = "2001:db8:113::100"\n'))
    argv = ScenarioLab(vip, family=6).probe_argv()
    assert argv[argv.index("--resolve") + 1] == "www.example.com:80:[2001:db8:113::100]"
    with pytest.raises(ValueError, match="does not run over IPv6"):
        ScenarioLab(write(tmp_path, DEAD), family=6)


def test_the_lab_s_ipv6_plan_stays_in_the_documentation_prefix():
    import ipaddress

    from netns import lab

    documentation = ipaddress.ip_network("2001:db8::/32")
    routers = 64
    addresses = [lab.CLIENT_ADDR6, lab.SERVER_ADDR6] + [f(k) for k in range(1, routers + 1)
                                                         for f in (lab.router_up_addr6,
                                                                   lambda k: lab.router_dn_addr6(k, routers))]
    assert all(ipaddress.ip_address(a) in documentation for a in addresses)
    assert len(set(addresses)) == len(addresses)


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
