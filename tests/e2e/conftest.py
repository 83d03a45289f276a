"""One lab for the whole end-to-end session: client - r1..r4 - server, 50 ms round trip.

The server answers HTTP on :80 (nginx), aborts on :8080, and has :81 closed. One more
address on the server's network, BLACKHOLE_ADDR, is silently discarded by the last router,
so a probe aimed at it keeps retransmitting its SYN: a run that stays busy long enough to
be signalled mid-exchange.
"""

from __future__ import annotations

import os

import pytest

from e2ekit import BLACKHOLE_ADDR, DELAY_MS, ROUTERS
from netns.lab import Lab


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, raw sockets, nftables)")
    with Lab(routers=ROUTERS, delay_ms=DELAY_MS) as running:
        running.exec(running.router_ns(ROUTERS), ["ip", "route", "add", "blackhole",
                                                  f"{BLACKHOLE_ADDR}/32"])
        yield running
