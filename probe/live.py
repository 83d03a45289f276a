"""The I/O loop of `probe check`: guard, capture, send what the state machine says, record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from probe.engine.model import Flow
from probe.errors import ProbeError, UsageError
from probe.guard import Guard
from probe.http import HttpExchange, Request
from probe.record import PacketRecord, parse_ip
from probe.target import Target
from probe.tcp import ClientConnection, Progress, Segment, Settings, seq_add
from probe.wire import (Capture, Frame, PortReservation, RawSender, initial_sequence, local_addresses, random_u32,
                        send_or_lose, source_address, timestamp_offset)

CLOSE_WAIT = 0.5  # seconds to wait for our closing resets to show in the capture


@dataclass(frozen=True)
class TlsOptions:
    """curl's TLS options: `sni` None sends the URL's host, "" sends no SNI at all; `cafile`
    None verifies against the system's trust store."""

    sni: str | None = None
    cafile: str | None = None


@dataclass(frozen=True)
class CheckOptions:
    request: Request = Request()  # curl's -X, -H, -A and --data
    linger: float | None = None  # seconds after the exchange; None: max(0.5 s, 3 round trips)
    max_time: float = 30.0
    settings: Settings = Settings()
    ttl: int = 64
    tls: TlsOptions = TlsOptions()


@dataclass
class Measurement:
    """Everything recorded about one exchange: what the engine and the writers need."""

    target: Target
    flow: Flow
    packets: list[PacketRecord] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    progress: Progress | None = None
    application: object = None  # what rode on the connection (probe.http / probe.tls), for its report


def prepare_flow(target: Target) -> tuple[Flow, PortReservation]:
    source = source_address(target.address, target.port)
    if target.address in local_addresses() or source == target.address:
        raise UsageError(f"{target.address} is an address of this host: probe needs a target across a network path")
    reservation = PortReservation(source)
    return Flow(source, reservation.port, target.address, target.port), reservation


class FlowDriver:
    """One crafted connection on the wire: sends what its state machine says (built by its
    crafter, with the TTL `ttl_for(segment)` picks), feeds it the frames of its flow, records them."""

    def __init__(self, flow: Flow, connection: ClientConnection, crafter, sender: RawSender, ttl_for=None):
        self.flow, self.connection, self.crafter, self.sender = flow, connection, crafter, sender
        self.ttl_for = ttl_for or (lambda segment: None)
        self.packets: list[PacketRecord] = []
        self.frames: list[Frame] = []

    def send(self, segments) -> None:
        for segment in segments:
            ttl = self.ttl_for(segment)
            if ttl is not False:  # False: the caller does not want this segment sent at all
                send_or_lose(self.sender, self.crafter.build(segment, ttl=ttl), self.flow.server)

    def take(self, frame: Frame, record: PacketRecord) -> None:
        """Record a frame of this flow; a received one goes to the state machine."""
        self.frames.append(frame)
        self.packets.append(record)
        if not frame.outgoing and not self.flow.sent_by_client(record):
            self.send(self.connection.on_packet(record, time.monotonic()))

    def on_timer(self) -> None:
        self.send(self.connection.on_timer(time.monotonic()))


def close_with_reset(driver: FlowDriver) -> int:
    """Leave nothing open on the server: unless the connection was closed with FINs both ways,
    reset it at every sequence number the server may expect (what it last acknowledged, all we
    sent, or nothing of the request at all when the request never arrived). A reset at the
    wrong one of these draws at most a challenge ACK (RFC 5961). The close is best effort: a
    reset lost to a full queue or refused by a local rule does not stop the others. Returns how
    many left, so that the caller waits to record exactly those."""
    connection = driver.connection
    if connection.irs is None or connection.progress.closed_politely:
        return 0
    seqs = []
    for seq in (connection.snd_una, connection.snd_nxt, seq_add(connection.isn, 1)):
        if seq not in seqs:
            seqs.append(seq)
    sent = 0
    for seq in seqs:
        packet = driver.crafter.build(Segment("R", seq, 0, 0, purpose="close"))
        try:
            sent += send_or_lose(driver.sender, packet, driver.flow.server)
        except ProbeError:
            continue
    return sent


def pump(capture: Capture, drivers: list[FlowDriver], timeout: float, others=None) -> None:
    """Read the capture for up to `timeout` seconds and hand each frame to the driver whose flow
    it belongs to (`others(frame, record)` gets the rest, if given)."""
    for frame in capture.read(timeout):
        record = parse_ip(frame.data, frame.t)
        if record is None:
            continue
        owner = next((driver for driver in drivers if driver.flow.belongs(record)), None)
        if owner is not None:
            owner.take(frame, record)
        elif others is not None:
            others(frame, record)


def application_for(target: Target, request: Request, host: str | None = None, tls: TlsOptions = TlsOptions()):
    """What rides on the connection to `target`: HTTP, or HTTP inside TLS for https://.
    `host` replaces the target's name in the request (and, over TLS, in the SNI)."""
    name = host or target.host
    if not target.tls:
        return HttpExchange.for_url(request, name, target.port, target.path)
    from probe.tls import TlsExchange

    server_name = name if tls.sni is None or host is not None else tls.sni
    return TlsExchange(HttpExchange.for_url(request, name, target.port, target.path, default_port=443),
                       server_name=server_name, verify_name=name, cafile=tls.cafile)


def new_connection(target: Target, flow: Flow, request: Request, settings: Settings, ttl: int = 64,
                   host: str | None = None, tls: TlsOptions = TlsOptions()) -> tuple[ClientConnection, object]:
    """A fresh state machine and crafter for `flow`; `host` replaces the target's in the request."""
    from probe.craft import Crafter  # scapy is imported only when a probe really runs

    connection = ClientConnection(flow.client, flow.client_port, flow.server, flow.server_port,
                                  application_for(target, request, host, tls),
                                  isn=initial_sequence(flow.client, flow.client_port, flow.server, flow.server_port),
                                  settings=settings, ts_base=timestamp_offset(flow.client, flow.server))
    crafter = Crafter(flow.client, flow.client_port, flow.server, flow.server_port, random_u32() & 0xFFFF,
                      ttl=ttl)
    return connection, crafter


def default_linger(rtt: float | None) -> float:
    """How long to keep listening after an exchange: 0.5 s, or three round trips if longer."""
    return max(0.5, 3 * (rtt or 0.0))


def run_check(target: Target, options: CheckOptions = CheckOptions(), on_start=None) -> Measurement:
    """Probe once. `on_start(flow)` is called when everything is in place, just before the SYN,
    so that a progress line never precedes an error line."""
    flow, reservation = prepare_flow(target)
    connection, crafter = new_connection(target, flow, options.request, options.settings, options.ttl,
                                         tls=options.tls)
    try:
        # sockets first: without the privilege they fail with the clearest message
        with Capture([flow.server]) as capture, RawSender() as sender, Guard() as guard:
            guard.add_flow(flow.client, flow.client_port, flow.server, flow.server_port)
            if on_start is not None:
                on_start(flow)
            driver = FlowDriver(flow, connection, crafter, sender)
            start = time.monotonic()
            driver.send(connection.start(start))
            hard_deadline = start + options.max_time
            while not connection.done and time.monotonic() < hard_deadline:
                now = time.monotonic()
                wait = (connection.deadline - now) if connection.deadline is not None else 0.2
                pump(capture, [driver], min(max(wait, 0.0), hard_deadline - now))
                driver.on_timer()
            if not connection.done:
                connection.progress.gave_up = "max-time"
            linger = options.linger if options.linger is not None else default_linger(connection.rtt_estimate)
            linger_until = time.monotonic() + linger
            while (remaining := linger_until - time.monotonic()) > 0:
                pump(capture, [driver], remaining)
            pump(capture, [driver], 0)
            closing = close_with_reset(driver)
            if closing:  # record our resets too: the pcap holds every packet we sent
                recorded = len(driver.packets)
                until = time.monotonic() + CLOSE_WAIT
                while len(driver.packets) < recorded + closing and (remaining := until - time.monotonic()) > 0:
                    pump(capture, [driver], remaining)
    finally:
        reservation.close()
    return Measurement(target, flow, driver.packets, driver.frames, connection.progress, connection.app)
