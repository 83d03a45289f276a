"""A dead host: `probe check` and `probe batch` stop at the router's error, as connect() does.

The lab is scenario 16-dead-host's: the server's address is gone and the last router answers
each packet for it with ICMP host unreachable after one failed ARP probe (10-15 ms). Before
the handshake ended on a hard ICMP error, both commands resent the SYN at 1 s and 3 s and
ended 7.5 s after the first SYN (7.9 s of wall time); now they end one linger (0.5 s, no round
trip being known) after the error. The time is measured from the first packet's kernel
timestamp (`started_at`) to the process's exit, so the interpreter's start does not count.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time

import pytest

from netns.runner import ScenarioLab, load_all

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root and network namespaces")]

AFTER_FIRST_SYN_LIMIT = 1.5  # seconds: the 0.5 s linger, the verdict, the output; a retransmitted SYN would need 1 s more


@pytest.fixture(scope="module")
def dead_lab():
    with ScenarioLab(load_all(["16-dead-host"])[0]) as lab:
        yield lab


def run_timed(lab: ScenarioLab, argv: list[str]) -> tuple[dict, float, float]:
    """(the first JSON document printed, seconds from its first packet to the exit, wall seconds);
    `check` prints one indented document, `batch` one line per target."""
    started = time.monotonic()
    done = lab.lab.exec(lab.lab.client_ns, argv, check=False, timeout=60)
    ended, wall = time.time(), time.monotonic() - started
    assert done.stdout.strip(), done.stderr
    document, _ = json.JSONDecoder().raw_decode(done.stdout.strip())
    first_packet = datetime.datetime.fromisoformat(document["started_at"]).timestamp()
    return document, ended - first_packet, wall


def assert_stopped_at_the_error(document: dict) -> None:
    shape = [(p["proto"], p.get("flags"), p.get("icmp_type"), p.get("icmp_code")) for p in document["packets"]]
    assert shape == [("tcp", "S", None, None), ("icmp", None, 3, 1)], shape
    syn, error = document["packets"]
    assert error["src"] == "198.51.100.10"  # the last router (r4's address toward us)
    assert error["t_ms"] < 500  # the lab's router gives up on ARP after 10 ms


def test_check_ends_at_the_routers_host_unreachable(dead_lab):
    document, after_syn, wall = run_timed(dead_lab, dead_lab.probe_argv("check"))
    assert_stopped_at_the_error(document)
    assert after_syn < AFTER_FIRST_SYN_LIMIT, f"{after_syn:.2f} s after the SYN ({wall:.2f} s wall)"


def test_batch_ends_at_the_routers_host_unreachable(dead_lab):
    targets = dead_lab.lab.workdir / "dead-targets.txt"
    targets.write_text(f"http://www.example.com/ www.example.com:80:{dead_lab.lab.server_addr}\n")
    argv = [sys.executable, "-m", "probe", "batch", str(targets), "--no-progress"]
    document, after_syn, wall = run_timed(dead_lab, argv)
    assert_stopped_at_the_error(document)
    assert after_syn < AFTER_FIRST_SYN_LIMIT, f"{after_syn:.2f} s after the SYN ({wall:.2f} s wall)"
