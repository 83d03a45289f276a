"""A delay line: holds every packet of an NFQUEUE for a fixed time, then accepts it.

The lab kernel has no netem, so path delay is made in userspace. Each queued packet is
retained (its payload copied out of the kernel's receive buffer), given a release time
`arrival + delay (+ jitter)`, and accepted when that time comes. With no jitter the release
times are non-decreasing, so order is kept; with jitter packets may overtake each other, as
on a real path. Lost packets get a drop verdict at once.

The loop waits on the queue's netlink socket with `select` and a timeout that ends at the
earliest release time, and reads with `run(block=False)`, which drains the socket and
returns on EAGAIN. `ready` goes to stdout once the queue is bound; SIGTERM/SIGINT accept
whatever is still held and exit 0.

    python3 -m netns.delayline --queue Q --delay-ms D [--loss P] [--jitter-ms J] [--seed S]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import select
import signal
import sys
import time
from typing import Any

MAX_IDLE_WAIT = 0.5  # seconds; bounds each wait so a stop request is noticed


class DelaySchedule:
    """When to release which packet: pure bookkeeping, no I/O (times in seconds)."""

    def __init__(self, delay: float, *, jitter: float = 0.0, loss: float = 0.0,
                 rng: random.Random | None = None) -> None:
        if delay < 0 or jitter < 0 or not 0.0 <= loss <= 1.0:
            raise ValueError("delay and jitter must be >= 0 and loss in [0, 1]")
        self.delay = delay
        self.jitter = jitter
        self.loss = loss
        self._rng = rng or random.Random()
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()  # ties release in arrival order

    def admit(self, now: float, item: Any) -> bool:
        """Schedule `item`; False means the path lost it (the caller drops it now)."""
        if self.loss and self._rng.random() < self.loss:
            return False
        hold = self.delay
        if self.jitter:
            hold = max(0.0, hold + self._rng.uniform(-self.jitter, self.jitter))
        heapq.heappush(self._heap, (now + hold, next(self._order), item))
        return True

    def due(self, now: float) -> list[Any]:
        """Remove and return, in release order, every item whose time has come."""
        released = []
        while self._heap and self._heap[0][0] <= now:
            released.append(heapq.heappop(self._heap)[2])
        return released

    def next_release(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def drain(self) -> list[Any]:
        """Remove and return everything still held, in release order."""
        return [heapq.heappop(self._heap)[2] for _ in range(len(self._heap))]

    def __len__(self) -> int:
        return len(self._heap)


def run(queue_num: int, schedule: DelaySchedule) -> None:
    """Serve the queue until SIGTERM/SIGINT."""
    from netfilterqueue import NetfilterQueue

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def on_packet(pkt: Any) -> None:
        pkt.retain()
        if not schedule.admit(time.monotonic(), pkt):
            pkt.drop()

    nfq = NetfilterQueue()
    nfq.bind(queue_num, on_packet)
    fd = nfq.get_fd()
    print("ready", flush=True)
    try:
        while not stopping:
            for pkt in schedule.due(time.monotonic()):
                pkt.accept()
            release = schedule.next_release()
            wait = MAX_IDLE_WAIT if release is None else release - time.monotonic()
            readable, _, _ = select.select([fd], [], [], min(max(wait, 0.0), MAX_IDLE_WAIT))
            if readable:
                nfq.run(block=False)
    finally:
        for pkt in schedule.drain():
            pkt.accept()
        nfq.unbind()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m netns.delayline",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--queue", type=int, required=True, help="NFQUEUE number to serve")
    p.add_argument("--delay-ms", type=float, required=True, help="hold time per packet")
    p.add_argument("--loss", type=float, default=0.0, help="probability of dropping a packet")
    p.add_argument("--jitter-ms", type=float, default=0.0,
                   help="uniform +/- spread added to the hold time (reorders packets)")
    p.add_argument("--seed", type=int, default=None, help="seed for loss and jitter")
    args = p.parse_args(argv)
    try:
        schedule = DelaySchedule(args.delay_ms / 1000.0, jitter=args.jitter_ms / 1000.0,
                                 loss=args.loss, rng=random.Random(args.seed))
    except ValueError as e:
        p.error(str(e))
    run(args.queue, schedule)
    return 0


if __name__ == "__main__":
    sys.exit(main())
