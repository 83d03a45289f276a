"""The residual blocker (netns/boxes/residual.py) on r1 of the small box lab, with real curl
connections: before the trigger an innocuous request passes; right after it the same client,
server and port are blocked (reset or dropped) while another client address is not; once the
configured duration has passed, innocuous requests pass again. The end is waited for with a
bounded poll, never a fixed sleep. Then probe.engine.residual's watch, fed with real tries on its
own schedule, reads the block's length within two seconds, and does not call a closed port a
block."""

from __future__ import annotations

import os
import time

import pytest
from boxlab import CONTROL_HOST, TRIGGER_HOST

from probe.engine.residual import PASSED, RESET, SILENT, ResidualWatch, Try, judge

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]

DURATION = 10.0  # seconds; the GFW's is ~90 (the box's default)
OTHER_CLIENT = "192.0.2.11"
CURL_REFUSED, CURL_TIMEOUT, CURL_RESET = 7, 28, 56
BLOCKED = {"reset": CURL_REFUSED, "drop": CURL_TIMEOUT}  # a SYN drawing a RST/ACK, or nothing
TRIGGERED = {"reset": CURL_RESET, "drop": CURL_TIMEOUT}


def innocuous(boxlab, *extra: str) -> int:
    rc, code, _ = boxlab.curl(CONTROL_HOST, "http://203.0.113.80/", "--connect-timeout", "1", *extra, max_time=1.5)
    return 0 if (rc, code) == (0, "200") else rc


@pytest.fixture
def second_client_address(boxlab):
    boxlab.run("c", "ip", "addr", "add", f"{OTHER_CLIENT}/24", "dev", "net0")
    try:
        yield OTHER_CLIENT
    finally:
        boxlab.run("c", "ip", "addr", "del", f"{OTHER_CLIENT}/24", "dev", "net0")


@pytest.mark.parametrize("mode", ["reset", "drop"])
def test_the_three_tuple_is_blocked_after_a_trigger_for_the_configured_duration(boxlab, second_client_address, mode):
    with boxlab.box("r1", "residual", "--duration", str(DURATION), "--mode", mode):
        assert innocuous(boxlab) == 0  # nothing is blocked before a trigger
        triggered_at = time.monotonic()
        rc, _, _ = boxlab.curl(TRIGGER_HOST, max_time=1.5)
        assert rc == TRIGGERED[mode]
        assert innocuous(boxlab) == BLOCKED[mode]  # the same client, server and port: blocked
        assert innocuous(boxlab, "--interface", second_client_address) == 0  # another client is not
        # poll until an innocuous request passes again, bounded well past the duration
        outcomes = []
        while time.monotonic() - triggered_at < DURATION + 10:
            started = time.monotonic() - triggered_at
            outcomes.append((started, innocuous(boxlab)))
            if outcomes[-1][1] == 0:
                break
            time.sleep(0.25)  # pacing between polls, bounded by the loop's deadline
        first_passed = outcomes[-1][0]
        assert outcomes[-1][1] == 0, f"still blocked {DURATION + 10} s after the trigger: {outcomes}"
        assert all(rc == BLOCKED[mode] for _, rc in outcomes[:-1]), outcomes
        # blocked for the whole duration, and not much longer (one poll and one curl)
        assert DURATION <= first_passed + 0.1 and first_passed <= DURATION + 2.0, outcomes
        assert innocuous(boxlab) == 0  # and it stays open


def real_try(boxlab, port: int = 80) -> str:
    """One fresh connection with an innocuous request, as probe.engine.residual reads it."""
    rc = innocuous(boxlab) if port == 80 else boxlab.curl(
        CONTROL_HOST, f"http://203.0.113.80:{port}/", "--connect-timeout", "1", max_time=1.5)[0]
    return PASSED if rc == 0 else SILENT if rc == CURL_TIMEOUT else RESET


def watch(boxlab, triggered_at: float, open_before: bool, port: int = 80, max_time_s: float = 30.0) -> ResidualWatch:
    """Drive a ResidualWatch with real tries on its schedule, seconds after `triggered_at`."""
    residual = ResidualWatch(open_before=open_before, max_time_s=max_time_s)
    while (after_s := residual.next_try()) is not None:
        time.sleep(max(0.0, triggered_at + after_s - time.monotonic()))  # the watch's schedule, not a wait for a state
        residual.record(round(time.monotonic() - triggered_at, 3), real_try(boxlab, port))
    return residual


@pytest.mark.parametrize("mode", ["reset", "drop"])
def test_the_watch_reads_the_real_block_within_two_seconds_of_its_duration(boxlab, mode):
    with boxlab.box("r1", "residual", "--duration", str(DURATION), "--mode", mode):
        open_before = real_try(boxlab) == PASSED
        triggered_at = time.monotonic()
        boxlab.curl(TRIGGER_HOST, max_time=1.5)
        finding = watch(boxlab, triggered_at, open_before).finding()
    assert finding.seen and finding.began_after_trigger, finding
    assert finding.blocked_by == {"reset": "reset", "drop": "silence"}[mode]
    assert finding.last_blocked_s < DURATION <= finding.first_passed_s + 0.1
    assert abs(finding.first_passed_s - DURATION) <= 2.0, finding


def test_a_closed_port_is_not_read_as_residual_blocking(boxlab):
    """The false positive: port 81 refuses everything, before any trigger and after it."""
    with boxlab.box("r1", "residual", "--duration", str(DURATION)):
        open_before = real_try(boxlab, 81) == PASSED
        triggered_at = time.monotonic()
        boxlab.curl(TRIGGER_HOST, max_time=1.5)  # a trigger on port 80; port 81 is not its 3-tuple
        tries = [Try(round(time.monotonic() - triggered_at, 3), real_try(boxlab, 81)) for _ in range(3)]
    assert not open_before and [t.outcome for t in tries] == [RESET] * 3
    assert ResidualWatch(open_before=open_before).next_try() is None
    finding = judge(tries, open_before)
    assert not finding.seen and finding.began_after_trigger is False
