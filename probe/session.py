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

Every captured frame goes to the exchange whose flow it belongs to: by its four-tuple
either way, or, for ICMP, by the four-tuple of the packet it quotes (the same test as
`Flow.belongs`). Each exchange runs exactly as in `probe.live.run_check`: its timers, its
hard bound (`max_time`), then a linger of `max(0.5 s, 3 RTT)` (or `--linger`) during which
late packets are still recorded and answered, but no timer fires, then the resets that leave
nothing half-open on the server (`live.close_with_reset`), recorded too. A finished exchange is
handed out as the same `Measurement` that `run_check` returns, so the engine and the
writers judge it exactly as they judge `probe check`.

Pacing. At most `concurrency` exchanges are in flight (lingering counts: the slot is freed
when the caller has taken the result). A token bucket of `rate` packets per second gates the
start of new exchanges: every packet sent takes a token, but an exchange already running
never waits for one (a late ACK would change what the server does), so the bucket may go
negative and new starts wait until it has refilled. Over a batch, the packets sent per
second stay at `rate`, give or take one burst (`rate / 10` packets).

Ports. Each exchange holds its ephemeral port with an unconnected socket (as `probe check`
does). A port that an earlier exchange to the same server and port used within the last
`PORT_QUARANTINE` seconds is refused and another one taken: the server may still hold that
connection in TIME-WAIT, and its late packets must not land in a new exchange.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import resource
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from probe.engine.model import Flow
from probe.errors import ProbeError
from probe.live import CLOSE_WAIT, CheckOptions, Measurement, application_for, close_with_reset, default_linger
from probe.record import parse_ip
from probe.target import Target
from probe.tcp import ClientConnection
from probe.wire import (PortReservation, initial_sequence, local_addresses, random_u32, send_or_lose, source_address,
                        timestamp_offset)

DEFAULT_CONCURRENCY = 100
DEFAULT_RATE = 1000.0  # packets per second
PORT_QUARANTINE = 120.0  # seconds: TIME-WAIT (60 s on Linux) with room to spare
PORT_TRIES = 32
IDLE_WAIT = 0.2  # longest sleep when nothing is due (as in run_check)
READ_BATCH = 4096  # FleetCapture.read returns at most this many frames at once


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


class _Exchange:
    """One flow in flight: its state machine, its crafter, its record."""

    def __init__(self, tag, target: Target, flow: Flow, reservation, options: CheckOptions, crafter_class):
        self.tag, self.target, self.flow, self.reservation = tag, target, flow, reservation
        self.options = options
        self.measurement = Measurement(target, flow)
        self.connection = ClientConnection(flow.client, flow.client_port, flow.server, flow.server_port,
                                           application_for(target, options.request, tls=options.tls),
                                           isn=initial_sequence(flow.client, flow.client_port, flow.server, flow.server_port),
                                           settings=options.settings, ts_base=timestamp_offset(flow.client, flow.server))
        self.crafter = crafter_class(flow.client, flow.client_port, flow.server, flow.server_port,
                                     random_u32() & 0xFFFF, ttl=options.ttl)
        self.hard_deadline = 0.0
        self.linger_until: float | None = None
        self.scheduled: float | None = None  # the wake time of its live heap entry
        self.closing_until: float | None = None  # our closing resets are on their way
        self.closing_expected = 0  # packets recorded once they are all captured
        self.error: str | None = None

    @property
    def key(self) -> tuple:
        return (self.flow.client, self.flow.client_port, self.flow.server, self.flow.server_port)

    def wake_at(self) -> float:
        """When this exchange next needs the loop's attention."""
        if self.closing_until is not None:
            return self.closing_until
        if self.linger_until is not None:
            return self.linger_until
        deadline = self.connection.deadline
        return min(deadline, self.hard_deadline) if deadline is not None else self.hard_deadline

    def begin_linger(self, now: float) -> None:
        """As run_check after its main loop: note a hard stop, then listen a little longer."""
        if not self.connection.done:
            self.connection.progress.gave_up = "max-time"
        linger = self.options.linger if self.options.linger is not None else default_linger(
            self.connection.rtt_estimate)
        self.linger_until = now + linger


class _Driver:
    """What `live.close_with_reset` needs of a flow: its connection, crafter, flow and a sender
    (this one takes the session's tokens and counts the packets)."""

    def __init__(self, exchange: _Exchange, loop: "_Loop"):
        self.connection, self.crafter, self.flow = exchange.connection, exchange.crafter, exchange.flow
        self.sender = self
        self.loop = loop

    def send(self, packet: bytes, destination: str) -> None:
        self.loop.sender.send(packet, destination)
        self.loop.bucket.take(1)
        self.loop.session.packets_sent += 1


class _Ports:
    """Ephemeral ports for new flows, never one used toward the same server and port lately."""

    def __init__(self, clock: Callable[[], float], port_class):
        self.clock, self.port_class = clock, port_class
        self.recent: dict[tuple, float] = {}
        self.order: collections.deque = collections.deque()

    def reserve(self, client: str, server: str, server_port: int) -> PortReservation:
        self._expire()
        refused = []
        try:
            for _ in range(PORT_TRIES):
                reservation = self.port_class(client)
                key = (client, reservation.port, server, server_port)
                if key not in self.recent:
                    self.recent[key] = self.clock()
                    self.order.append(key)
                    return reservation
                refused.append(reservation)  # held until we have another, so bind cannot return it again
            raise ProbeError(f"no free ephemeral port toward {server}:{server_port}")
        finally:
            for reservation in refused:
                reservation.close()

    def _expire(self) -> None:
        horizon = self.clock() - PORT_QUARANTINE
        while self.order and self.recent[self.order[0]] < horizon:
            del self.recent[self.order.popleft()]


def _raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard) if hard != resource.RLIM_INFINITY else needed,
                                                    hard))


@dataclass(frozen=True)
class SessionIO:
    """Everything a session touches outside itself; tests put a fake network here."""

    capture: Callable  # addresses -> context manager with read(timeout), watch(addresses), drops()
    sender: Callable  # () -> context manager with send(packet, destination)
    guard: Callable  # () -> context manager with use_flow_set(), add_flows(flows)
    crafter: Callable  # StructCrafter's signature
    port: Callable  # client address -> object with .port and .close()
    route: Callable  # (address, port) -> our source address toward it
    local_addresses: Callable  # () -> this host's addresses
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def real(cls) -> "SessionIO":
        from probe.fastcraft import StructCrafter
        from probe.guard import Guard
        from probe.wire import FleetCapture, RawSender

        return cls(FleetCapture, RawSender, Guard, StructCrafter, PortReservation, source_address, local_addresses)


class Session:
    """Runs many exchanges over one capture, one sender and one guard table.

    `run(targets)` takes (tag, Target) pairs, or (tag, error string) for a target that could
    not even be named, and yields a `Finished` for each, in the order they finish."""

    def __init__(self, options: SessionOptions = SessionOptions(), io: SessionIO | None = None):
        if options.concurrency < 1 or options.rate <= 0:
            raise ValueError("concurrency must be at least 1 and rate more than 0")
        self.options = options
        self.io = io or SessionIO.real()
        self.clock = self.io.clock
        self.packets_sent = 0
        self.frames_dropped = 0
        self.peak_in_flight = 0
        self._local: set[str] | None = None
        self._sources: dict[tuple, str] = {}

    def run(self, targets: Iterable[tuple]) -> Iterator[Finished]:
        _raise_file_limit(self.options.concurrency + 64)
        with self.io.capture([]) as capture, self.io.sender() as sender, self.io.guard() as guard:
            guard.use_flow_set()
            yield from _Loop(self, capture, sender, guard).run(iter(targets))
            self.frames_dropped = capture.drops()

    def flow_for(self, target: Target, ports: "_Ports") -> tuple[Flow, object]:
        """As live.prepare_flow, with the route lookup remembered per address and the port
        chosen by `_Ports`."""
        if self._local is None:
            self._local = set(self.io.local_addresses())
        route = (target.address, target.port)
        source = self._sources.get(route)
        if source is None:
            source = self._sources[route] = self.io.route(target.address, target.port)
        if target.address in self._local or source == target.address:
            raise ProbeError(f"{target.address} is an address of this host: probe needs a target across a "
                             f"network path")
        reservation = ports.reserve(source, target.address, target.port)
        return Flow(source, reservation.port, target.address, target.port), reservation


class _Loop:
    """The state of one `Session.run`: the flow table, the bucket, the clocks."""

    def __init__(self, session: Session, capture, sender, guard):
        self.session, self.capture, self.sender, self.guard = session, capture, sender, guard
        self.options = session.options
        self.clock = session.clock
        self.bucket = TokenBucket(self.options.rate, max(1.0, self.options.rate / 10), self.clock())
        self.ports = _Ports(self.clock, session.io.port)
        self.table: dict[tuple, _Exchange] = {}
        self.watched: set[str] = set()
        self.finished: list[Finished] = []
        self.timers: list[tuple[float, int, _Exchange]] = []  # heap, stale entries skipped
        self.order = itertools.count()
        self.exhausted = False

    def run(self, targets: Iterator[tuple]) -> Iterator[Finished]:
        try:
            while True:
                self._admit(targets)
                if self.finished:
                    done, self.finished = self.finished, []
                    yield from done
                    continue  # slots were freed: admit again before waiting
                if self.exhausted and not self.table:
                    return
                self._wait_and_take()
                self._fire_timers()
        finally:
            for exchange in self.table.values():
                exchange.reservation.close()
            self.table.clear()

    # -- starting --------------------------------------------------------------------------------

    def _admit(self, targets: Iterator[tuple]) -> None:
        now = self.clock()
        self.bucket.refill(now)
        starting: list[_Exchange] = []
        while (not self.exhausted and len(self.table) + len(starting) < self.options.concurrency
               and self.bucket.ready()):
            item = next(targets, None)
            if item is None:
                self.exhausted = True
                break
            tag, target = item
            if not isinstance(target, Target):
                self.finished.append(Finished(tag, None, error=str(target)))
                continue
            try:
                flow, reservation = self.session.flow_for(target, self.ports)
            except ProbeError as error:
                self.finished.append(Finished(tag, target, error=str(error)))
                continue
            starting.append(_Exchange(tag, target, flow, reservation, self.options.check, self.session.io.crafter))
            self.bucket.take(1)  # its SYN
        if not starting:
            return
        new_addresses = {exchange.flow.server for exchange in starting} - self.watched
        if new_addresses:
            self.watched |= new_addresses
            self.capture.watch(sorted(self.watched))
        try:
            self.guard.add_flows([exchange.key for exchange in starting])
        except BaseException:
            for exchange in starting:
                exchange.reservation.close()
            raise
        now = self.clock()
        for exchange in starting:
            self.table[exchange.key] = exchange
            exchange.hard_deadline = now + exchange.options.max_time
            self._send(exchange, exchange.connection.start(now))
            self._schedule(exchange)
        self.session.peak_in_flight = max(self.session.peak_in_flight, len(self.table))

    # -- sending ---------------------------------------------------------------------------------

    def _send(self, exchange: _Exchange, segments) -> None:
        for segment in segments:
            if exchange.error is not None:
                return
            packet = exchange.crafter.build(segment)
            try:
                sent = send_or_lose(self.sender, packet, exchange.flow.server)
            except ProbeError as error:  # no route, refused by a local rule: this target only
                exchange.error = str(error)
                self._end(exchange)
                return
            if sent:
                self.bucket.take(1)
                self.session.packets_sent += 1

    # -- receiving -------------------------------------------------------------------------------

    def _wait_and_take(self) -> None:
        now = self.clock()
        wake = now + IDLE_WAIT
        next_timer = self._next_timer()
        if next_timer is not None:
            wake = min(wake, next_timer)
        if not self.exhausted and len(self.table) < self.options.concurrency:
            wake = min(wake, now + self.bucket.wait())
        frames = self.capture.read(max(wake - now, 0.0))
        while frames:
            self._take(frames)
            frames = self.capture.read(0) if len(frames) >= READ_BATCH else []

    def _take(self, frames) -> None:
        for frame in frames:
            record = parse_ip(frame.data, frame.t)
            if record is None:
                continue
            exchange = self._owner(record)
            if exchange is None or not exchange.flow.belongs(record):
                continue
            exchange.measurement.frames.append(frame)
            exchange.measurement.packets.append(record)
            if exchange.closing_until is not None:
                if len(exchange.measurement.packets) >= exchange.closing_expected:
                    self._end(exchange)
                    continue
            if not frame.outgoing and not exchange.flow.sent_by_client(record):
                was_done = exchange.connection.done
                self._send(exchange, exchange.connection.on_packet(record, self.clock()))
                if exchange.key not in self.table:
                    continue
                if exchange.connection.done and not was_done and exchange.linger_until is None:
                    exchange.begin_linger(self.clock())
                self._schedule(exchange)  # its deadline may have moved closer

    def _owner(self, record) -> _Exchange | None:
        if record.proto == "tcp":
            return (self.table.get((record.src, record.sport, record.dst, record.dport))
                    or self.table.get((record.dst, record.dport, record.src, record.sport)))
        quoted = record.quoted
        if record.proto == "icmp" and quoted is not None:
            return self.table.get((quoted.src, quoted.sport, quoted.dst, quoted.dport))
        return None

    # -- timers ----------------------------------------------------------------------------------

    def _schedule(self, exchange: _Exchange) -> None:
        """Make sure the heap wakes us by the exchange's next deadline (an entry that a later
        one supersedes is skipped when it comes up)."""
        wake = exchange.wake_at()
        if exchange.scheduled is None or wake < exchange.scheduled:
            exchange.scheduled = wake
            heapq.heappush(self.timers, (wake, next(self.order), exchange))

    def _next_timer(self) -> float | None:
        while self.timers:
            at, _, exchange = self.timers[0]
            if exchange.key in self.table and at == exchange.scheduled:
                return at
            heapq.heappop(self.timers)
        return None

    def _fire_timers(self) -> None:
        now = self.clock()
        while (at := self._next_timer()) is not None and at <= now:
            exchange = heapq.heappop(self.timers)[2]
            exchange.scheduled = None
            if exchange.closing_until is not None:
                if now >= exchange.closing_until:
                    self._end(exchange)
                else:
                    self._schedule(exchange)
                continue
            if exchange.linger_until is not None:
                if now >= exchange.linger_until:
                    self._close(exchange, now)
                else:
                    self._schedule(exchange)
                continue
            # as run_check's loop: the timer (a no-op unless a deadline passed), then the bounds
            self._send(exchange, exchange.connection.on_timer(now))
            if exchange.key not in self.table:
                continue
            if exchange.connection.done or now >= exchange.hard_deadline:
                exchange.begin_linger(now)
            self._schedule(exchange)

    def _close(self, exchange: _Exchange, now: float) -> None:
        """As run_check after its linger: reset what the server may still hold open, and wait
        (half a second at most) until those resets are recorded too."""
        sent = close_with_reset(_Driver(exchange, self))
        if not sent:
            self._end(exchange)
            return
        exchange.closing_expected = len(exchange.measurement.packets) + sent
        exchange.closing_until = now + CLOSE_WAIT
        self._schedule(exchange)

    def _end(self, exchange: _Exchange) -> None:
        del self.table[exchange.key]
        exchange.reservation.close()
        exchange.measurement.progress = exchange.connection.progress
        exchange.measurement.application = exchange.connection.app
        if exchange.error is not None:
            self.finished.append(Finished(exchange.tag, exchange.target, error=exchange.error))
        else:
            self.finished.append(Finished(exchange.tag, exchange.target, exchange.measurement))
