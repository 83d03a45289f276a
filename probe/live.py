"""The I/O loop of `probe check`: guard, capture, send what the state machine says, record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from probe.engine.model import Flow
from probe.errors import UsageError
from probe.guard import Guard
from probe.http import ResponseReader, build_request
from probe.record import PacketRecord, parse_ip
from probe.target import Target
from probe.tcp import ClientConnection, Progress, Settings
from probe.wire import Capture, Frame, PortReservation, RawSender, local_addresses, random_u32, source_address


@dataclass(frozen=True)
class CheckOptions:
    method: str = "HEAD"
    linger: float | None = None  # seconds after the exchange; None: max(0.5 s, 3 round trips)
    max_time: float = 30.0
    settings: Settings = Settings()
    ttl: int = 64


@dataclass
class Measurement:
    """Everything recorded about one exchange: what the engine and the writers need."""

    target: Target
    flow: Flow
    packets: list[PacketRecord] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    progress: Progress | None = None


def prepare_flow(target: Target) -> tuple[Flow, PortReservation]:
    source = source_address(target.address, target.port)
    if target.address in local_addresses() or source == target.address:
        raise UsageError(f"{target.address} is an address of this host: probe needs a target across a network path")
    reservation = PortReservation(source)
    return Flow(source, reservation.port, target.address, target.port), reservation


def run_check(target: Target, options: CheckOptions = CheckOptions(), on_start=None) -> Measurement:
    """Probe once. `on_start(flow)` is called when everything is in place, just before the SYN,
    so that a progress line never precedes an error line."""
    flow, reservation = prepare_flow(target)
    measurement = Measurement(target, flow)
    request = build_request(options.method, target.host, target.port, target.path)
    reader = ResponseReader(options.method, target.host, target.port, target.path)
    connection = ClientConnection(flow.client, flow.client_port, flow.server, flow.server_port, request,
                                  isn=random_u32(), reader=reader, settings=options.settings,
                                  ts_base=random_u32())
    from probe.craft import Crafter  # scapy is imported only when a probe really runs

    crafter = Crafter(flow.client, flow.client_port, flow.server, flow.server_port, random_u32() & 0xFFFF,
                      ttl=options.ttl)
    try:
        # sockets first: without the privilege they fail with the clearest message
        with Capture([flow.server]) as capture, RawSender() as sender, Guard() as guard:
            guard.add_flow(flow.client, flow.client_port, flow.server, flow.server_port)
            if on_start is not None:
                on_start(flow)

            def send(segments) -> None:
                for segment in segments:
                    sender.send(crafter.build(segment), flow.server)

            def take(frames: list[Frame]) -> None:
                for frame in frames:
                    record = parse_ip(frame.data, frame.t)
                    if record is None or not flow.belongs(record):
                        continue
                    measurement.frames.append(frame)
                    measurement.packets.append(record)
                    if not frame.outgoing and not flow.sent_by_client(record):
                        send(connection.on_packet(record, time.monotonic()))

            start = time.monotonic()
            send(connection.start(start))
            hard_deadline = start + options.max_time
            while not connection.done and time.monotonic() < hard_deadline:
                now = time.monotonic()
                wait = (connection.deadline - now) if connection.deadline is not None else 0.2
                take(capture.read(min(max(wait, 0.0), hard_deadline - now)))
                send(connection.on_timer(time.monotonic()))
            if not connection.done:
                connection.progress.gave_up = "max-time"
            rtt = connection.rtt_estimate or 0.0
            linger = options.linger if options.linger is not None else max(0.5, 3 * rtt)
            linger_until = time.monotonic() + linger
            while (remaining := linger_until - time.monotonic()) > 0:
                take(capture.read(remaining))
            take(capture.read(0))
    finally:
        reservation.close()
    measurement.progress = connection.progress
    return measurement
