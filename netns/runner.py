"""Bring a scenario up, run the probe against it, check the result, tear it down.

A scenario is a TOML file in netns/scenarios/: what box sits where, what the probe is asked,
and what it must say. The runner tears the lab down on every way out (the Lab context
manager), runs the probe as a user would (`python3 -m probe check ... --json` inside the
client namespace), and compares the verdict, direction and, when the scenario names one,
the hop (and, when it names it, the exit status). TOML has no null: "none" in [expect] stands
for it (`hop = "none"`: the probe must not locate anything). [topology] may say `server =
"dead"` (the server's host is gone: the last router's ARP fails and it answers host unreachable)
or `server = "unrouted"` (the last router has no route to the server's network: net
unreachable).

A scenario runs over IPv4 unless its file opts in to IPv6 too (`families = ["ipv4", "ipv6"]`);
`run_scenario(..., family=6)` then runs it over the lab's IPv6 plan: the same boxes at the same
hops, the URL resolved to the server's IPv6 address (`--resolve HOST:PORT:[ADDR]`, or
`[probe] address6`), and the same expectations.

For an https URL the probe is also given `--cacert` with the lab's CA file (curl's option: trust
this CA), so the server's certificate verifies. [box] args may name the lab's TLS files, filled
in when the lab is up: {ca_file}, {proxy_ca_file}, {proxy_cert_file}, {proxy_key_file} (the
interception CA and the certificate it issued, for a TLS-intercepting box).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from netns.lab import HTTP_PORT, HTTPS_PORT, Lab

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
LB_VIP = "203.0.113.100"
SERVER_STATES = ("up", "dead", "unrouted")
FAMILIES = {"ipv4": 4, "ipv6": 6}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    box: str | None
    box_hop: int | str | None
    box_args: tuple[str, ...]
    url: str
    address: str | None
    probe_args: tuple[str, ...]
    expect: dict
    trap: bool = False
    known_gap: str | None = None  # why `probe check` cannot yet get this one right
    routers: int = 4
    delay_ms: float = 50.0
    server: str = "up"  # "up", "dead" or "unrouted" (see the module docstring)
    families: tuple[int, ...] = (4,)
    address6: str | None = None

    @classmethod
    def load(cls, path: Path) -> "Scenario":
        data = tomllib.loads(path.read_text())
        box, probe = data.get("box", {}), data.get("probe", {})
        topology = data.get("topology", {})
        server = topology.get("server", "up")
        if server not in SERVER_STATES:
            raise ValueError(f"{path.name}: [topology] server must be one of {', '.join(SERVER_STATES)}")
        expect = {key: None if value == "none" else value for key, value in data["expect"].items()}
        families = data.get("families", ["ipv4"])
        if not families or any(name not in FAMILIES for name in families):
            raise ValueError(f"{path.name}: families must name some of {', '.join(FAMILIES)}")
        return cls(name=path.stem, description=data.get("description", ""), box=box.get("name"),
                   box_hop=box.get("hop"), box_args=tuple(box.get("args", ())), url=probe["url"],
                   address=probe.get("address"), probe_args=tuple(probe.get("args", ())),
                   expect=expect, trap=bool(data.get("trap", False)), known_gap=data.get("known_gap"),
                   routers=int(topology.get("routers", 4)), delay_ms=float(topology.get("delay_ms", 50.0)),
                   server=server, families=tuple(FAMILIES[name] for name in families),
                   address6=probe.get("address6"))


def load_all(names: list[str] | None = None) -> list[Scenario]:
    scenarios = [Scenario.load(path) for path in sorted(SCENARIO_DIR.glob("*.toml"))]
    if names:
        scenarios = [s for s in scenarios if s.name in names or s.name.split("-", 1)[0] in names
                     or s.name.split("-", 1)[-1] in names]
    return scenarios


@dataclass
class RunResult:
    scenario: str
    verdict: str | None
    direction: str | None
    hop: int | None
    exit_code: int
    passed: bool
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    document: dict | None = None


def judge(scenario: Scenario, document: dict | None, exit_code: int) -> list[str]:
    """What is wrong with one result, in words; empty when it is what the scenario expects."""
    if document is None:
        return [f"no JSON document (exit {exit_code})"]
    problems = []
    for key in ("verdict", "direction", "hop"):
        if key in scenario.expect or key == "verdict":
            expected = scenario.expect.get(key)
            if document.get(key) != expected:
                problems.append(f"{key}: expected {expected!r}, got {document.get(key)!r}")
    if "residual_seconds" in scenario.expect:  # the block's end, measured from the trigger, within 2 s
        residual = document.get("residual_blocking") or {}
        seconds, passed = scenario.expect["residual_seconds"], residual.get("first_passed_s")
        if not residual.get("seen") or passed is None or abs(passed - seconds) > 2:
            problems.append(f"residual blocking: expected seen, passing again at +{seconds} s (within 2 s), got "
                            f"seen={residual.get('seen')!r}, first_passed_s={passed!r}")
    if "exit" in scenario.expect and exit_code != scenario.expect["exit"]:
        problems.append(f"exit status: expected {scenario.expect['exit']}, got {exit_code}")
    if scenario.trap and any(p.get("origin") == "middlebox" for p in document.get("packets", [])):
        problems.append("a packet of the genuine server was blamed on a middlebox")
    return problems


def _port(url: str) -> int:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.port or (HTTPS_PORT if parts.scheme == "https" else HTTP_PORT)


def lab_files(lab: Lab) -> dict[str, str]:
    """The lab's TLS files by the names [box] args may use."""
    if lab.pki is None or lab.proxy_pki is None:
        return {}
    return {"ca_file": str(lab.pki.ca_file), "proxy_ca_file": str(lab.proxy_pki.ca_file),
            "proxy_cert_file": str(lab.proxy_pki.cert_file), "proxy_key_file": str(lab.proxy_pki.key_file)}


class ScenarioLab:
    """One scenario's lab with its box running; probes can be run against it repeatedly."""

    def __init__(self, scenario: Scenario, family: int = 4):
        if family not in scenario.families:
            raise ValueError(f"{scenario.name} does not run over IPv{family} (its families: "
                             f"{', '.join(f'ipv{f}' for f in scenario.families)})")
        self.scenario, self.family = scenario, family
        self.lab = Lab(routers=scenario.routers, delay_ms=scenario.delay_ms)
        self.runs = 0

    def __enter__(self) -> "ScenarioLab":
        self.lab.up()
        try:
            if self.scenario.server == "dead":
                self.lab.take_server_down()
            elif self.scenario.server == "unrouted":
                self.lab.take_server_network_unrouted()
            if self.scenario.box:
                hop = self.lab.routers if self.scenario.box_hop == "last" else int(self.scenario.box_hop)
                files = lab_files(self.lab)
                args = [arg.format_map(files) for arg in self.scenario.box_args]
                self.lab.spawn(self.lab.router_ns(hop), [sys.executable, "-m", f"netns.boxes.{self.scenario.box}", *args],
                               name=self.scenario.box)
        except BaseException:
            self.lab.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.lab.down()

    def probe_argv(self, command: str = "check", extra: tuple[str, ...] = ()) -> list[str]:
        from urllib.parse import urlsplit

        url = urlsplit(self.scenario.url)
        if self.family == 6:
            address = f"[{self.scenario.address6 or self.lab.server_addr6}]"
        else:
            address = self.scenario.address or self.lab.server_addr
        trust = ["--cacert", str(self.lab.ca_file)] if url.scheme == "https" else []
        return [sys.executable, "-m", "probe", command, self.scenario.url, "--resolve",
                f"{url.hostname}:{_port(self.scenario.url)}:{address}", *trust, "--json",
                *self.scenario.probe_args, *extra]

    def wait_until_open(self, timeout: float = 120.0) -> None:
        """Wait until a plain connection from the client to the server's port succeeds: a box
        that blocks the address and port after a trigger (residual blocking) must have let go
        of the previous run's before the next one starts, as CenTrace waits between its runs.
        Each try is a real connect() with a 2 s bound, until `timeout`."""
        address = (self.scenario.address6 or self.lab.server_addr6) if self.family == 6 else \
            (self.scenario.address or self.lab.server_addr)
        connect = ("import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()")
        deadline = time.monotonic() + timeout
        while self.lab.exec(self.lab.client_ns, [sys.executable, "-c", connect, address, str(_port(self.scenario.url))],
                            check=False, timeout=10).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.scenario.name}: {address} still refused connections after {timeout:g} s")

    def run_probe(self, command: str = "check", extra: tuple[str, ...] = (), timeout: float = 120.0) -> RunResult:
        if self.runs and "residual_seconds" in self.scenario.expect:
            self.wait_until_open()  # the previous run's trace set the block off again
        self.runs += 1
        started = time.monotonic()
        completed = self.lab.exec(self.lab.client_ns, self.probe_argv(command, extra), check=False, timeout=timeout)
        seconds = time.monotonic() - started
        try:
            document = json.loads(completed.stdout)
        except json.JSONDecodeError:
            document = None
        problems = judge(self.scenario, document, completed.returncode)
        if document is None and completed.stderr:
            problems.append(completed.stderr.strip().splitlines()[-1])
        return RunResult(self.scenario.name, document and document.get("verdict"),
                         document and document.get("direction"), document and document.get("hop"),
                         completed.returncode, not problems, problems, seconds, document)


def server_capture(lab: Lab, path: Path, timeout: float = 10.0):
    """tcpdump on the server's interface, in its namespace, for the duration of the block."""
    return capture(lab, lab.server_ns, "s0", path, timeout)


@contextlib.contextmanager
def capture(lab: Lab, ns: str, interface: str, path: Path, timeout: float = 10.0):
    """tcpdump on `interface` in namespace `ns`, capturing once the block starts, until it ends."""
    path.unlink(missing_ok=True)
    proc = lab.spawn(ns, ["tcpdump", "-i", interface, "-n", "-U", "--immediate-mode", "-Z", "root",
                          "-w", str(path), "tcp or icmp or icmp6"], ready_line=None, name="tcpdump")
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= 24):  # the file header: tcpdump is capturing
        if proc.poll() is not None or time.monotonic() > deadline:
            lab.stop(proc)
            raise RuntimeError(f"tcpdump in {ns} did not start")
        time.sleep(0.01)
    try:
        yield
    finally:
        lab.stop(proc)


def run_scenario(scenario: Scenario, repeats: int = 1, record: Path | None = None,
                 record_server: Path | None = None, family: int = 4) -> list[RunResult]:
    """Run the probe `repeats` times against one lab, over IPv`family`; with `record`, keep the
    first run's capture and the verdict it drew as a golden case (`NAME.pcap` + `NAME.json`);
    with `record_server`, also a capture of that run taken on the server (`NAME.server.pcap`)."""
    with ScenarioLab(scenario, family) as lab:
        results = []
        for i in range(repeats):
            extra = ()
            if record is not None and i == 0:
                record.mkdir(parents=True, exist_ok=True)
                extra = ("--pcap", str(record / f"{scenario.name}.pcap"))
            if record_server is not None and i == 0:
                record_server.mkdir(parents=True, exist_ok=True)
                with server_capture(lab.lab, record_server / f"{scenario.name}.server.pcap"):
                    results.append(lab.run_probe(extra=extra))
            else:
                results.append(lab.run_probe(extra=extra))
            if extra and results[-1].document is not None:
                expected = {key: results[-1].document.get(key) for key in ("verdict", "direction")}
                expected["origins"] = [p["origin"] for p in results[-1].document["packets"]]
                expected["scenario_expects"] = scenario.expect
                expected["known_gap"] = scenario.known_gap
                (record / f"{scenario.name}.json").write_text(json.dumps(expected, indent=1) + "\n")
        return results


def results_table(scenarios: list[Scenario], results: dict[str, list[RunResult]]) -> str:
    """The README's table: made from real runs, never typed by hand."""
    from tabulate import tabulate

    rows = []
    for scenario in scenarios:
        runs = results.get(scenario.name, [])
        said = sorted({f"{r.verdict} / {r.direction or '-'} / hop {r.hop if r.hop is not None else '-'}"
                       for r in runs})
        expected = (f"{scenario.expect.get('verdict')} / {scenario.expect.get('direction') or '-'}"
                    f" / hop {scenario.expect.get('hop', '-') if scenario.expect.get('hop') is not None else '-'}")
        passed = f"{sum(r.passed for r in runs)}/{len(runs)}"
        if scenario.known_gap:
            passed += f" (known gap: {scenario.known_gap})"
        rows.append([scenario.name, expected, "<br>".join(said), passed])
    return tabulate(rows, headers=["scenario", "expected (verdict / direction / hop)", "probe said", "runs passed"],
                    tablefmt="github")
