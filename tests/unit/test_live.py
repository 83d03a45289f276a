"""`probe check` (probe.network.single.run_check) over the fake network of fakenet.py: the same loop
batch runs, with one exchange."""

from __future__ import annotations

import pytest

from probe.network import single as live
from probe.network.single import CheckOptions

from .fakenet import DEAD_HOST_ERROR_AFTER, FakeNet, target

START = 1000.0


@pytest.fixture
def check():
    """check(net, address, port) runs run_check against `net` and returns its Measurement."""

    def run(net: FakeNet, address: str, port: int = 80, options: CheckOptions = CheckOptions()):
        return live.run_check(target(address, port), options, network=net.network())

    return run


def test_a_clean_exchange_runs_to_its_polite_close(check):
    net = FakeNet()
    measurement = check(net, "203.0.113.80")
    assert [p.flags for p in measurement.packets] == ["S", "SA", "A", "PA", "FPA", "FA", "A"]
    assert measurement.progress.closed_politely


def test_a_dead_host_ends_the_check_at_the_routers_error(check):
    # before: SYNs at 0, 1 and 3 s, each drawing the same error, and the end at 7.5 s
    net = FakeNet(dead={"203.0.113.99"})
    measurement = check(net, "203.0.113.99")
    assert [(p.proto, p.flags, p.icmp_code) for p in measurement.packets] == [("tcp", "S", None),
                                                                              ("icmp", "", 1)]
    assert measurement.progress.icmp_error == (3, 1)
    assert net.now == pytest.approx(START + DEAD_HOST_ERROR_AFTER + 0.5, abs=0.01)  # error, then linger


def test_a_synack_behind_a_forged_unreachable_is_reset_at_the_close(check):
    net = FakeNet(forged_unreachable={"203.0.113.80"})
    measurement = check(net, "203.0.113.80")
    assert [p.flags or p.proto for p in measurement.packets] == ["S", "icmp", "SA", "R"]
    syn, reset = measurement.packets[0], measurement.packets[-1]
    assert reset.seq == syn.seq + 1 and [p.flags for p in net.sent] == ["S", "R"]
