"""Many crafted exchanges at once: the I/O loop of `probe batch`.

Theory of operation. `probe check` runs one `ClientConnection` with its own capture, raw
socket and guard table. A batch of a thousand targets cannot: a thousand sniffers and
firewall tables would cost more than the probes. So a session opens each of these once:

- one `FleetCapture`, its BPF filter re-attached as new target addresses appear (classic
  BPF's 4096 instructions hold about 2,000 addresses; past that it takes every TCP and ICMP
  packet and the flow table below sorts them out);
- one `RawSender`;
- one `Guard` table whose single rule drops the kernel's RSTs of any flow in an nftables set;
  flows join the set, in one `nft` call per group, before their SYN leaves.

The loop that sorts frames, fires timers and sends is `probe.network.loop.Loop`, the same one
`probe check` runs with a single exchange, and each exchange is the same
`probe.protocol.exchange.Exchange`: its timers, its hard bound (`max_time`), its linger, the resets
that leave nothing half-open on the server, recorded too. A finished exchange is handed out
as the same `Measurement` that `run_check` returns, so the engine and the writers judge it
exactly as they judge `probe check`. This module adds only what many exchanges need:
admission (concurrency and pacing) and the file-descriptor limit.

Pacing. At most `concurrency` exchanges are in flight (lingering counts: the slot is freed
when the caller has taken the result). A token bucket of `rate` packets per second gates the
start of new exchanges: every packet sent takes a token, but an exchange already running
never waits for one (a late ACK would change what the server does), so the bucket may go
negative and new starts wait until it has refilled. Exchanges are admitted (their flows
guarded) ahead of their start, so a SYN leaves the moment its token is there, not behind an
nft call. Over a batch, the packets sent per second stay at `rate`, give or take one burst
(`rate / 10` packets).

Ports. Each exchange holds its ephemeral port with an unconnected socket, chosen by
`probe.network.loop.Flows` as for every command (never one used toward the same server and port in
the last two minutes).
"""

from __future__ import annotations

import collections
import resource
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Iterable, Iterator

from probe.errors import ProbeError
from probe.network.single import CheckOptions, Measurement, new_exchange
from probe.network.loop import Flows, Loop, Network
from probe.network.target import Target

DEFAULT_CONCURRENCY = 100
DEFAULT_RATE = 1000.0  # packets per second


@dataclass(frozen=True)
class SessionOptions:
    check: CheckOptions = CheckOptions()
    concurrency: int = DEFAULT_CONCURRENCY
    rate: float = DEFAULT_RATE


@dataclass
class Finished:
    """One target's outcome: its measurement, or why it could not be measured."""

    tag: object
    target: Target | None
    measurement: Measurement | None = None
    error: str | None = None


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `take` may run into debt."""

    def __init__(self, rate: float, burst: float, now: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.updated = burst, now

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, count: int = 1) -> None:
        self.tokens -= count

    def ready(self) -> bool:
        return self.tokens >= 1

    def wait(self) -> float:
        """Seconds until one token is there (0 if it already is)."""
        return max(0.0, (1 - self.tokens) / self.rate)


def _raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard) if hard != resource.RLIM_INFINITY else needed,
                                                    hard))


class Session:
    """Runs many exchanges through one loop.

    `run(targets)` takes (tag, Target) pairs, or (tag, error string) for a target that could
    not even be named, and yields a `Finished` for each, in the order they finish."""

    def __init__(self, options: SessionOptions = SessionOptions(), network: Network | None = None):
        if options.concurrency < 1 or options.rate <= 0:
            raise ValueError("concurrency must be at least 1 and rate more than 0")
        self.options = options
        self.network = network or Network.real()
        self.packets_sent = 0
        self.frames_dropped = 0
        self.peak_in_flight = 0

    def run(self, targets: Iterable[tuple]) -> Iterator[Finished]:
        _raise_file_limit(self.options.concurrency + 64)
        clock = self.network.clock
        bucket = TokenBucket(self.options.rate, max(1.0, self.options.rate / 10), clock())
        flows = Flows(self.network)
        with ExitStack() as stack:
            loop = Loop.opened(self.network, stack, on_sent=lambda: bucket.take(1))
            admission = _Admission(self, loop, bucket, flows, iter(targets))
            try:
                while True:
                    admission.admit()
                    if admission.finished:
                        done, admission.finished = admission.finished, []
                        yield from done
                        continue  # slots were freed: admit again before waiting
                    if admission.exhausted and not loop.busy:
                        break
                    wake_by = clock() + bucket.wait() if admission.waiting else None
                    loop.step(wake_by)
                    admission.collect()
            finally:
                self.packets_sent = loop.packets_sent
                for exchange in loop.table.values():
                    exchange.reservation.close()
            self.frames_dropped = loop.capture.drops()


class _Admission:
    """Admits new exchanges while slots allow, starts them while tokens allow, and turns ended
    ones into `Finished`.

    Admitting (the flow guarded, one nft call for the whole group) runs ahead of starting, so
    that a SYN leaves the moment its token is there and never waits behind an nft call: the
    wire then sees the rate, not the rate stretched and squeezed by the guard's calls."""

    def __init__(self, session: Session, loop: Loop, bucket: TokenBucket, flows: Flows, targets: Iterator[tuple]):
        self.session, self.loop, self.bucket, self.flows, self.targets = session, loop, bucket, flows, targets
        self.options = session.options
        self.finished: list[Finished] = []
        self.waiting: collections.deque = collections.deque()  # admitted, not started: their SYN waits for a token
        self.exhausted = False

    def admit(self) -> None:
        admitted = []
        while not self.exhausted and len(self.loop.table) + len(admitted) < self.options.concurrency:
            item = next(self.targets, None)
            if item is None:
                self.exhausted = True
                break
            tag, target = item
            if not isinstance(target, Target):
                self.finished.append(Finished(tag, None, error=str(target)))
                continue
            try:
                flow, reservation = self.flows.open(target.address, target.port)
            except ProbeError as error:  # this host's own address, no route, no port: this target only
                self.finished.append(Finished(tag, target, error=str(error)))
                continue
            exchange = new_exchange(target, flow, self.options.check, self.session.network.crafter, tag=tag)
            exchange.reservation = reservation
            admitted.append(exchange)
        try:
            self.loop.admit(admitted)
        except BaseException:
            for exchange in admitted:
                exchange.reservation.close()
            raise
        self.waiting.extend(admitted)
        self.bucket.refill(self.loop.clock())
        while self.waiting and self.bucket.ready():
            self.loop.start([self.waiting.popleft()])  # its SYN takes its token as it leaves
        started = len(self.loop.table) - len(self.waiting)
        self.session.peak_in_flight = max(self.session.peak_in_flight, started)
        self.collect()

    def collect(self) -> None:
        ended, self.loop.ended = self.loop.ended, []
        for exchange in ended:
            exchange.reservation.close()
            if exchange.error is not None:
                self.finished.append(Finished(exchange.tag, exchange.target, error=exchange.error))
            else:
                self.finished.append(Finished(exchange.tag, exchange.target, exchange.measurement))
