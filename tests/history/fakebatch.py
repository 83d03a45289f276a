"""`python3 tests/history/fakebatch.py ARGS`: the real `probe batch ARGS` (its command line,
its history, its outputs and exit code) over the fake network of tests/unit/fakenet.py: no
socket, no nftables, no root, no packet leaves the process. Port 80 answers HTTP, 81 resets,
82 is silent; FAKEBATCH_DEAD=ADDR[,ADDR] makes a router say "host unreachable" for those
addresses, so two runs can see one target differently, as two vantage points would."""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE)), os.path.dirname(HERE)]

from probe.network import loop  # noqa: E402
from unit.fakenet import FakeNet, FakePort  # noqa: E402

dead = {address for address in os.environ.get("FAKEBATCH_DEAD", "").split(",") if address}
net = FakeNet(dead=dead)
FakePort.free = list(range(40000, 60000))
loop.Network.real = classmethod(lambda cls: net.network())

from probe.cli import main  # noqa: E402

main(sys.argv[1:])
