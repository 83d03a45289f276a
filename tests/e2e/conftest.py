"""One lab for the whole end-to-end session: client - r1..r4 - server, 50 ms round trip.

The server answers HTTP on :80 (nginx), aborts on :8080, and has :81 closed. One more
address on the server's network, BLACKHOLE_ADDR, is silently discarded by the last router,
so a probe aimed at it keeps retransmitting its SYN: a run that stays busy long enough to
be signalled mid-exchange; BLACKHOLE_ADDR6 is the same over IPv6.
"""

from __future__ import annotations

import os
import sys

import pytest

from e2ekit import BLACKHOLE_ADDR, BLACKHOLE_ADDR6, DELAY_MS, ROUTERS
from netns.lab import Lab


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, raw sockets, nftables)")
    with Lab(routers=ROUTERS, delay_ms=DELAY_MS) as running:
        running.exec(running.router_ns(ROUTERS), ["ip", "route", "add", "blackhole",
                                                  f"{BLACKHOLE_ADDR}/32"])
        running.exec(running.router_ns(ROUTERS), ["ip", "-6", "route", "add", "blackhole",
                                                  f"{BLACKHOLE_ADDR6}/128"])
        yield running


@pytest.fixture
def box(lab):
    """`box(name, hop)` starts netns.boxes.NAME on router `hop`; every box started is stopped."""
    started = []

    def start(name: str, hop: int):
        started.append(lab.spawn(lab.router_ns(hop), [sys.executable, "-m", f"netns.boxes.{name}"], name=name))

    yield start
    for proc in started:
        lab.stop(proc)
