"""The one I/O loop of every command, and the one seam to the network that tests replace.

Theory of operation. check, batch, trace and the TTL sweeps all do the same thing: open a
capture, a raw sender and a guard table once; start exchanges (`probe.protocol.exchange.Exchange`, or
a sweep's single probe); hand each captured frame to the exchange whose flow it belongs to;
wake each one when it asks to be woken; send what it says to send. This module does exactly
that and decides nothing: what an exchange sends, when it lingers or closes, lives in the
exchange. check is a loop of one exchange, batch a loop it keeps full (`probe.network.admission`),
trace a loop of one exchange at a time whose finished exchanges still record late packets
(`keep_late`), and the sweeps a loop of one probe at a time.

Frames find their exchange by the four-tuple either way, or, for an ICMP error, by the
four-tuple of the packet it quotes (the test of `Flow.belongs`). Objects without a four-tuple
of their own (a sweep's ICMP echo) say themselves whether a frame is theirs (`claims`).

Every send goes through one policy (`probe.network.wire.send_or_lose`): a packet the host lost to a
full queue (ENOBUFS, EAGAIN) is reported to its exchange as lost, as a loss on the wire would
be; a refusal (no route, a local firewall rule) is reported as an error value, which ends that
exchange only; neither ever aborts the loop. A packet counts as sent only when it left.

`Network` is everything the loop and the flows touch outside the process: the capture, the
raw sender, the guard, the crafter, ephemeral ports, the route lookup, this host's addresses
and the clock. `Network.real()` is the machine's; tests/unit/fakenet.py gives a fake one whose
clock moves only when the loop waits, so whole exchanges run in microseconds without root.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable

from probe.engine.model import Flow
from probe.errors import ProbeError, UsageError
from probe.record import parse_ip
from probe.network.wire import PortReservation, local_addresses, send_or_lose, source_address

IDLE_WAIT = 0.2  # longest sleep when nothing is due
READ_BATCH = 4096  # a capture's read returns at most this many frames at once
PORT_QUARANTINE = 120.0  # seconds: TIME-WAIT (60 s on Linux) with room to spare
PORT_TRIES = 32


@dataclass(frozen=True)
class Network:
    """Everything outside the process; tests put a fake network here."""

    capture: Callable  # addresses -> context manager with read(timeout), watch(addresses), drops()
    sender: Callable  # () -> context manager with send(packet, destination)
    guard: Callable  # () -> context manager with add_flows(flows)
    crafter: Callable  # StructCrafter's signature
    port: Callable  # client address -> object with .port and .close()
    route: Callable  # (address, port) -> our source address toward it
    local_addresses: Callable  # () -> this host's addresses
    clock: Callable[[], float] = time.monotonic  # what timers run on
    wall: Callable[[], float] = time.time  # what captured frames are stamped with (the kernel's clock)

    @classmethod
    def real(cls, interface: str | None = None, source_port: int | None = None) -> "Network":
        """This machine's network; `interface` (-i): packets leave through it and routes are
        looked up through it; `source_port` (--source-port): every flow's port (one flow at a
        time: check)."""
        from functools import partial

        from probe.protocol.craft import StructCrafter
        from probe.network.guard import Guard
        from probe.network.wire import FleetCapture, RawSender

        return cls(FleetCapture, partial(RawSender, interface=interface), Guard, StructCrafter,
                   partial(PortReservation, port=source_port or 0), partial(source_address, interface=interface),
                   local_addresses)


def hold_again(network: Network, client: str, port: int):
    """The reservation of `port`, an exchange's own source port, held again for the packets that
    follow it on the same four-tuple (Paris traceroute's principle); None when something of this
    host took the port meanwhile."""
    try:
        return network.port(client, port=port)
    except (OSError, ProbeError):
        return None


class Flows:
    """Four-tuples for new exchanges: our source address toward the target (one route lookup
    per address and port), and an ephemeral port never used toward the same server and port in
    the last `PORT_QUARANTINE` seconds (the server may still hold that connection in TIME-WAIT,
    and its late packets must not land in a new exchange)."""

    def __init__(self, network: Network):
        self.network = network
        self._local: set[str] | None = None
        self._sources: dict[tuple, str] = {}
        self._recent: dict[tuple, float] = {}
        self._order: collections.deque = collections.deque()

    def open(self, address: str, port: int) -> tuple[Flow, object]:
        """A flow toward (address, port) and the reservation holding its port (close it when done).
        A target that is an address of this host is refused (UsageError)."""
        if self._local is None:
            self._local = set(self.network.local_addresses())
        source = self._sources.get((address, port))
        if source is None:
            source = self._sources[(address, port)] = self.network.route(address, port)
        if address in self._local or source == address:
            raise UsageError(f"{address} is an address of this host: probe needs a target across a network path")
        reservation = self._reserve(source, address, port)
        return Flow(source, reservation.port, address, port), reservation

    def _reserve(self, client: str, server: str, server_port: int):
        horizon = self.network.clock() - PORT_QUARANTINE
        while self._order and self._recent[self._order[0]] < horizon:
            del self._recent[self._order.popleft()]
        refused = []
        try:
            for _ in range(PORT_TRIES):
                reservation = self.network.port(client)
                key = (client, reservation.port, server, server_port)
                if key not in self._recent:
                    self._recent[key] = self.network.clock()
                    self._order.append(key)
                    return reservation
                refused.append(reservation)  # held until we have another, so bind cannot return it again
            raise ProbeError(f"no free ephemeral port toward {server}:{server_port}")
        finally:
            for reservation in refused:
                reservation.close()


class Loop:
    """One capture, one sender, one guard, and the exchanges in flight (see the module doc).

    `on_sent()` is called for every packet that left (batch's token bucket). Exchanges that
    reached their end are appended to `ended`, for the caller to take."""

    def __init__(self, network: Network, capture, sender, guard, keep_late: bool = False,
                 on_sent: Callable[[], None] | None = None):
        self.network, self.capture, self.sender, self.guard = network, capture, sender, guard
        self.clock = network.clock
        self.keep_late = keep_late
        self.on_sent = on_sent
        self.table: dict[tuple, object] = {}
        self.late: dict[tuple, object] = {}
        self.claimers: list = []
        self.ended: list = []
        self.watched: set[str] = set()
        self.packets_sent = 0
        self._timers: list[tuple[float, int, object]] = []  # heap; entries a later one superseded are skipped
        self._scheduled: dict[int, float] = {}  # id(exchange) -> the wake time of its live heap entry
        self._order = itertools.count()

    @classmethod
    def opened(cls, network: Network, stack: ExitStack, addresses=(), guard: bool = True, **options) -> "Loop":
        """A loop whose capture, sender and guard `stack` closes. Opened in this order because
        without the privilege the capture fails with the clearest message. `guard` False: no
        guard table at all (the sweeps, whose SYN-ACKs the kernel's own RST should answer)."""
        capture = stack.enter_context(network.capture(sorted(set(addresses))))
        sender = stack.enter_context(network.sender())
        guard = stack.enter_context(network.guard()) if guard else None
        loop = cls(network, capture, sender, guard, **options)
        loop.watched.update(addresses)
        return loop

    @property
    def busy(self) -> bool:
        return bool(self.table) or bool(self.claimers)

    # -- starting --------------------------------------------------------------------------------

    def add(self, exchanges: list) -> None:
        """Admit exchanges, then start them."""
        self.admit(exchanges)
        self.start(exchanges)

    def admit(self, exchanges: list) -> None:
        """Make room for exchanges: their servers watched, their flows guarded (one nft call for
        all) and in the flow table, before any of their packets leaves."""
        if not exchanges:
            return
        new_addresses = {exchange.flow.server for exchange in exchanges} - self.watched
        if new_addresses:
            self.watched |= new_addresses
            self.capture.watch(sorted(self.watched))
        self.guard.add_flows([exchange.key for exchange in exchanges])
        for exchange in exchanges:
            self.late.pop(exchange.key, None)
            self.table[exchange.key] = exchange

    def start(self, exchanges: list) -> None:
        """Send each admitted exchange's first packets."""
        now = self.clock()
        for exchange in exchanges:
            self._send(exchange, exchange.start(now))
            self._after(exchange)

    def drive(self, exchange, on_admitted: Callable[[], None] | None = None):
        """Run one exchange to its end, alone or beside others: admitted, `on_admitted()` (check's
        progress line, once the flow is guarded), started, waited for. A send the host refused
        (no route, a local rule) raises ProbeError: one exchange's error is its caller's."""
        self.admit([exchange])
        if on_admitted is not None:
            on_admitted()
        self.start([exchange])
        self.run_until(lambda: exchange.done)
        if exchange.error is not None:
            raise ProbeError(exchange.error)
        return exchange

    def add_claimer(self, probe) -> None:
        """Start an object that recognises its own frames (`probe.claims(frame, record)`)."""
        if probe.destination not in self.watched:
            self.watched.add(probe.destination)
            self.capture.watch(sorted(self.watched))
        self.claimers.append(probe)
        self._send(probe, probe.start(self.clock()))
        self._after(probe)

    # -- running ---------------------------------------------------------------------------------

    def run_until(self, finished: Callable[[], bool]) -> None:
        while not finished():
            self.step()

    def step(self, wake_by: float | None = None) -> None:
        """Wait for frames until the next timer (or `wake_by`, or IDLE_WAIT), take them, fire
        what is due."""
        now = self.clock()
        wake = now + IDLE_WAIT
        next_timer = self._next_timer()
        if next_timer is not None:
            wake = min(wake, next_timer)
        if wake_by is not None:
            wake = min(wake, wake_by)
        self.take(max(wake - now, 0.0))
        self._fire_timers()

    def take(self, timeout: float) -> None:
        """Read the capture for up to `timeout` seconds and hand every frame to its owner."""
        frames = self.capture.read(timeout)
        while frames:
            for frame in frames:
                self._take(frame)
            frames = self.capture.read(0) if len(frames) >= READ_BATCH else []

    def _take(self, frame) -> None:
        record = parse_ip(frame.data, frame.t)
        if record is None:
            return
        owner = self._owner(record, frame)
        if owner is None:
            return
        self._send(owner, owner.on_packet(frame, record, self.clock()))
        self._after(owner)

    def _owner(self, record, frame):
        for table in (self.table, self.late):
            if not table:
                continue
            if record.proto == "tcp":
                owner = (table.get((record.src, record.sport, record.dst, record.dport))
                         or table.get((record.dst, record.dport, record.src, record.sport)))
            elif record.proto == "icmp" and record.quoted is not None:
                quoted = record.quoted
                owner = table.get((quoted.src, quoted.sport, quoted.dst, quoted.dport))
            else:
                owner = None
            if owner is not None and owner.flow.belongs(record):
                return owner
        return next((probe for probe in self.claimers if probe.claims(frame, record)), None)

    # -- sending ---------------------------------------------------------------------------------

    def _send(self, owner, outgoing) -> None:
        for out in outgoing:
            if owner.error is not None:
                return
            try:
                sent = send_or_lose(self.sender, out.packet, out.destination)
            except ProbeError as error:  # no route, refused by a local rule: this exchange only
                owner.on_send_failed(out, str(error))
                continue
            if not sent:
                owner.on_send_failed(out, None)
                continue
            self.packets_sent += 1
            if self.on_sent is not None:
                self.on_sent()

    # -- timers ----------------------------------------------------------------------------------

    def _after(self, owner) -> None:
        """After an event: an exchange that ended leaves the table, one that goes on is woken
        by its next deadline (an earlier heap entry is kept; a later one supersedes nothing and
        the exchange is simply woken early, which does nothing)."""
        if owner.done:
            self._end(owner)
            return
        wake = owner.wake_at()
        if wake is None:
            return
        scheduled = self._scheduled.get(id(owner))
        if scheduled is None or wake < scheduled:
            self._scheduled[id(owner)] = wake
            heapq.heappush(self._timers, (wake, next(self._order), owner))

    def _next_timer(self) -> float | None:
        while self._timers:
            at, _, owner = self._timers[0]
            if not owner.done and self._scheduled.get(id(owner)) == at:
                return at
            heapq.heappop(self._timers)
        return None

    def _fire_timers(self) -> None:
        now = self.clock()
        while (at := self._next_timer()) is not None and at <= now:
            owner = heapq.heappop(self._timers)[2]
            del self._scheduled[id(owner)]
            self._send(owner, owner.on_timer(now))
            self._after(owner)

    def _end(self, owner) -> None:
        """A live exchange or probe that reached its end leaves (a late one is already out)."""
        if owner in self.claimers:
            self.claimers.remove(owner)
        elif self.table.get(owner.key) is owner:
            del self.table[owner.key]
            if self.keep_late:
                self.late[owner.key] = owner
        else:
            return
        self._scheduled.pop(id(owner), None)
        self.ended.append(owner)

    def finish(self) -> None:
        """Take what the capture still holds (late packets of finished exchanges)."""
        self.take(0)
