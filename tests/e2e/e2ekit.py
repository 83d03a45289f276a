"""Running `probe check` inside a lab's client namespace, and reading the guard's tables.

Every process here is started by the test that uses it and is reaped (or killed, by its own
PID) before the test ends. Waiting is always for a condition with a deadline, never a sleep.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from netns.lab import Lab

ROUTERS = 4
DELAY_MS = 50.0
BLACKHOLE_ADDR = "203.0.113.99"  # discarded by the last router (see conftest.py)
BLACKHOLE_ADDR6 = "2001:db8:113::99"  # the same over IPv6
HOST = "www.example.com"
GUARD_PREFIX = "probe_guard_"
PROBE_TIMEOUT = 60.0  # seconds a single probe run may take before the test gives up
POLL = 0.01

T = TypeVar("T")


@dataclass
class ProbeRun:
    """One finished `probe check`: exit status, output, and the JSON document if there is one."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def document(self) -> dict:
        return json.loads(self.stdout)

    def describe(self) -> str:
        return (f"probe {' '.join(self.argv)} -> exit {self.returncode}\n"
                f"stderr:\n{self.stderr}\nstdout (head):\n{self.stdout[:3000]}")


def probe_args(address: str, port: int = 80, path: str = "/", *extra: str,
               json_output: bool = True) -> list[str]:
    """`check` arguments for http://www.example.com[:port]/path connected to `address` (IPv4 or IPv6)."""
    authority = HOST if port == 80 else f"{HOST}:{port}"
    pinned = f"[{address}]" if ":" in address else address
    args = ["check", f"http://{authority}{path}", "--resolve", f"{HOST}:{port}:{pinned}"]
    return args + (["--json"] if json_output else []) + list(extra)


def _argv(lab: Lab, args: Sequence[str]) -> list[str]:
    # sys.executable, not a `python3` shim: `ip netns exec` execs it, so the PID we hold is
    # the probe's own PID (signals reach it directly, and its guard table carries it)
    return ["ip", "netns", "exec", lab.client_ns, sys.executable, "-m", "probe", *args]


def _default_sigint() -> None:
    # a child of a shell that ignores SIGINT would inherit SIG_IGN, and Python would then
    # keep ignoring it instead of raising KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_probe(lab: Lab, args: Sequence[str], timeout: float = PROBE_TIMEOUT) -> ProbeRun:
    """Run the probe to its end in the client namespace."""
    proc = start_probe(lab, args)
    return finish(proc, list(args), timeout)


def start_probe(lab: Lab, args: Sequence[str]) -> subprocess.Popen:
    """Start the probe in the client namespace and return at once (pair with `finish`)."""
    proc = subprocess.Popen(_argv(lab, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)
    proc.probe_args = list(args)  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, args: list[str] | None = None,
           timeout: float = PROBE_TIMEOUT) -> ProbeRun:
    """Wait for a started probe; if it outlives `timeout`, kill it (our own PID) and fail."""
    args = args if args is not None else getattr(proc, "probe_args", [])
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(f"probe {' '.join(args)} still running after {timeout} s\n{stderr}")
    return ProbeRun(args, proc.returncode, stdout, stderr)


def reap(proc: subprocess.Popen) -> None:
    """Make sure a probe this test started is gone (SIGKILL to its own PID if needed)."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def wait_for(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `condition` until it returns something true; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(POLL)


# --- the guard's nftables tables in the client namespace ------------------------------------


def nft_objects(lab: Lab, *what: str) -> list[dict]:
    out = lab.exec(lab.client_ns, ["nft", "-j", "list", *what]).stdout
    return json.loads(out or '{"nftables": []}')["nftables"]


def guard_tables(lab: Lab) -> list[str]:
    """Names of the inet tables named probe_guard_* in the client namespace."""
    return sorted(item["table"]["name"] for item in nft_objects(lab, "tables")
                  if "table" in item and item["table"]["family"] == "inet"
                  and item["table"]["name"].startswith(GUARD_PREFIX))


def guard_table_of(lab: Lab, pid: int) -> str | None:
    """The guard table of the run with this PID, if it exists."""
    mine = [name for name in guard_tables(lab) if name.startswith(f"{GUARD_PREFIX}{pid}_")]
    assert len(mine) <= 1, mine
    return mine[0] if mine else None


@dataclass(frozen=True)
class GuardRule:
    """One flow a guard table holds (an element of its flow set) and its counter: the
    kernel's RSTs of that flow the guard dropped."""

    client: str
    client_port: int
    server: str
    server_port: int
    packets: int


def guard_rules(lab: Lab, table: str) -> list[GuardRule]:
    """The flows of one guard table (empty if the table has none yet or is gone)."""
    try:
        objects = nft_objects(lab, "table", "inet", table)
    except subprocess.CalledProcessError:
        return []
    rules = []
    for item in objects:
        for element in item.get("set", {}).get("elem", []):
            element = element.get("elem", element) if isinstance(element, dict) else element
            client, client_port, server, server_port = element["val"]["concat"]
            rules.append(GuardRule(client, client_port, server, server_port, element["counter"]["packets"]))
    return rules


def wait_for_guard(lab: Lab, proc: subprocess.Popen, timeout: float = 20.0) -> tuple[str, GuardRule]:
    """Wait until the running probe `proc` has its table *and* its flow in it, i.e.
    it is past the guard's set-up and into the exchange; return the table and the rule."""
    def installed():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the probe exited ({proc.returncode}) before its guard showed up"
                                 f"\nstderr:\n{err}\nstdout:\n{out[:2000]}")
        table = guard_table_of(lab, proc.pid)
        rules = guard_rules(lab, table) if table else []
        return (table, rules[0]) if rules else None

    return wait_for(installed, timeout, f"the guard table of probe pid {proc.pid} has its rule")


# --- sockets in the server namespace -------------------------------------------------------


def server_tcp_states(lab: Lab, client: str, client_port: int) -> list[str]:
    """States (ss spelling, e.g. TIME-WAIT) of the server's sockets toward client:port."""
    out = lab.exec(lab.server_ns, ["ss", "-Htan"]).stdout
    states = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[4] == f"{client}:{client_port}":
            states.append(fields[0])
    return states
