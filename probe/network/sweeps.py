"""The I/O of localisation: TTL-limited SYNs and ICMP echoes toward the target, one TTL at a
time, each waited for with a bound. The reasoning is in `probe.engine.locate`.

Polite by construction: one probe per TTL (a second when the first drew nothing), a maximum
TTL, and it stops at the first answer.
Over IPv6 the TTL is the hop limit (RFC 8200 3), the echoes are ICMPv6's (RFC 4443 4.1, types
128/129), and since there is no IP-ID to tell the probes of one sweep apart in the packet an
ICMPv6 error quotes, each TTL's probe carries its own flow label instead (the quoted header
keeps it: RFC 4443 3 quotes as much of the packet as fits).
A SYN-ACK drawn by a TTL-limited SYN is answered by our kernel's own RST (no guard for this
port), which clears the half-open connection on the server.

Each TTL's packet and the wait for what it draws is a `_HopProbe` run by the one I/O loop
(`probe.network.loop`), which sends through the same send-error policy as every exchange.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field

from probe.engine.locate import HopReply
from probe.errors import ProbeError
from probe.protocol.exchange import Outgoing
from probe.protocol.craft import echo_request
from probe.network.loop import Loop, Network, hold_again
from probe.record import PacketRecord, is_time_exceeded
from probe.protocol.tcp import RECEIVE_WINDOW, Segment
from probe.network.wire import Frame, random_u32

ECHO_REPLY, ECHO_REQUEST = 0, 8
ECHO6_REQUEST, ECHO6_REPLY = 128, 129
SYN_OPTIONS = (("MSS", 1460), ("SAckOK", b""), ("NOP", None), ("WScale", 7))


def _echo_types(version: int) -> tuple[int, int]:
    """(request, reply) ICMP types of the family."""
    return (ECHO6_REQUEST, ECHO6_REPLY) if version == 6 else (ECHO_REQUEST, ECHO_REPLY)


def _mark(quoted, version: int) -> int | None:
    """What tells one TTL's probe from another in a quoted header: IPv4's IP-ID, IPv6's flow label."""
    return quoted.flow_label if version == 6 else quoted.ip_id


@dataclass
class Sweeps:
    tcp: list[HopReply] = field(default_factory=list)
    echo: list[HopReply] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    source_port: int | None = None  # the TCP sweep's (the exchange's own when it could be kept)


class _HopProbe:
    """One TTL's packet and the wait for its reply, for the loop: `match(record, frame)` says
    True for the reply, False for our own probe (kept for the pcap, and its kernel time is the
    send time), None for anything else. Ends at the reply or after `wait` seconds."""

    def __init__(self, packet: bytes, destination: str, wait: float, match, frames: list[Frame]):
        self.packet, self.destination, self.wait, self.match, self.frames = packet, destination, wait, match, frames
        self.deadline = 0.0
        self.sent_at: float | None = None
        self.found = None  # (reply, kernel time sent, kernel time received)
        self.error: str | None = None
        self.done = False

    def start(self, now: float) -> list[Outgoing]:
        self.deadline = now + self.wait
        return [Outgoing(self.packet, self.destination, None)]

    def claims(self, frame: Frame, record: PacketRecord) -> bool:
        return self.match(record, frame) is not None

    def on_packet(self, frame: Frame, record: PacketRecord, now: float) -> list[Outgoing]:
        verdict = self.match(record, frame)
        self.frames.append(frame)
        if verdict is False and self.sent_at is None:
            self.sent_at = frame.t
        if verdict:
            self.found, self.done = (record, self.sent_at, frame.t), True
        return []

    def on_timer(self, now: float) -> list[Outgoing]:
        self.done = self.done or now >= self.deadline
        return []

    def on_send_failed(self, outgoing: Outgoing, error: str | None) -> None:
        if error is not None:  # refused (no route, a local rule): the sweep cannot go on
            self.error, self.done = error, True

    def wake_at(self) -> float:
        return self.deadline


SWEEP_TRIES = 2  # probes per TTL at most: a second when the first drew nothing


def _probe(loop: Loop, make):
    """One TTL's probe (`make()` builds it), sent again when it drew nothing: a probe or a reply
    lost on the way is not a silent hop (traceroute sends three per TTL, mtr keeps sending; one
    more is enough to make a 3% loss a 0.1% one, and a hop that never answers costs one wait more)."""
    for _ in range(SWEEP_TRIES):
        probe = make()
        loop.add_claimer(probe)
        loop.run_until(lambda: probe.done)
        if probe.error is not None:
            raise ProbeError(probe.error)
        if probe.found is not None:
            return probe.found
    return None


def run_sweeps(client: str, server: str, port: int, max_ttl: int = 16, wait: float = 1.0,
               on_progress=None, network: Network | None = None, source_port: int | None = None) -> Sweeps:
    """TCP sweep up to the first TCP answer, then the echo sweep up to the first echo reply.

    `source_port`: the exchange's own, which the TCP sweep keeps when this host has not taken it
    meanwhile (Paris traceroute's principle: routers that balance on the 5-tuple send every SYN of
    the sweep the way the exchange's SYN went, so the sweep meets the box the exchange met). The
    exchange was reset or closed with resets, so the server holds nothing for that four-tuple."""
    network = network or Network.real()
    version = 6 if ":" in server else 4
    echo_request_type, echo_reply = _echo_types(version)
    echo_proto = 58 if version == 6 else 1
    sweeps = Sweeps()
    reservation = hold_again(network, client, source_port) if source_port is not None else None
    if reservation is None:  # something of this host took it: a fresh port, as before
        reservation = network.port(client)
    sweeps.source_port = reservation.port
    try:
        with ExitStack() as stack:
            loop = Loop.opened(network, stack, [server], guard=False)
            crafter = network.crafter(client, reservation.port, server, port, 0)
            isn = random_u32()
            base_id = random_u32() & 0xFF00
            for ttl in range(1, max_ttl + 1):
                crafter.next_ip_id = base_id + ttl
                crafter.flow_label = base_id + ttl if version == 6 else 0
                syn = crafter.build(Segment("S", isn, 0, RECEIVE_WINDOW, options=SYN_OPTIONS), ttl=ttl)

                def match_tcp(record: PacketRecord, frame: Frame, ttl=ttl):
                    if frame.outgoing:
                        return False if record.proto == "tcp" and record.sport == reservation.port else None
                    if record.proto == "tcp" and record.src == server and record.dport == reservation.port:
                        return True
                    quoted = record.quoted
                    if record.proto == "icmp" and quoted and quoted.sport == reservation.port \
                            and _mark(quoted, version) == base_id + ttl:
                        return True
                    return None

                found = _probe(loop, lambda: _HopProbe(syn, server, wait, match_tcp, sweeps.frames))
                sweeps.tcp.append(_hop_reply(ttl, found))
                if on_progress:
                    on_progress(f"  tcp ttl {ttl}: {sweeps.tcp[-1].kind} {sweeps.tcp[-1].source or ''}")
                if sweeps.tcp[-1].kind in ("tcp", "unreachable"):
                    break
            echo_id = random_u32() & 0xFFFF
            limit = min(max_ttl, (sweeps.tcp[-1].ttl if sweeps.tcp else max_ttl) + 8)
            silent = 0
            for ttl in range(1, limit + 1):
                echo = echo_request(client, server, ttl, echo_id, ttl, base_id + 0x80 + ttl)

                def match_echo(record: PacketRecord, frame: Frame, ttl=ttl):
                    if record.proto != "icmp":
                        return None
                    if frame.outgoing:
                        return False if record.icmp_type == echo_request_type and record.dst == server else None
                    if record.icmp_type == echo_reply and record.src == server:
                        return True
                    quoted = record.quoted
                    return True if quoted and quoted.proto == echo_proto \
                        and _mark(quoted, version) == base_id + 0x80 + ttl else None

                found = _probe(loop, lambda: _HopProbe(echo, server, wait, match_echo, sweeps.frames))
                sweeps.echo.append(_hop_reply(ttl, found))
                if on_progress:
                    on_progress(f"  echo ttl {ttl}: {sweeps.echo[-1].kind} {sweeps.echo[-1].source or ''}")
                kind = sweeps.echo[-1].kind
                silent = silent + 1 if kind == "none" else 0
                if kind in ("echo-reply", "unreachable") or silent >= 3:
                    break
    finally:
        reservation.close()
    return sweeps


def _hop_reply(ttl: int, found) -> HopReply:
    if found is None:
        return HopReply(ttl, "none")
    record, sent_at, at = found
    rtt = round((at - sent_at) * 1000, 3) if sent_at is not None else None
    if record.proto == "tcp":
        return HopReply(ttl, "tcp", record.src, record.ttl, record.flags, rtt)
    if is_time_exceeded(record):
        return HopReply(ttl, "time-exceeded", record.src, record.ttl, rtt_ms=rtt)
    if record.icmp_type == _echo_types(record.version)[1]:
        return HopReply(ttl, "echo-reply", record.src, record.ttl, rtt_ms=rtt)
    return HopReply(ttl, "unreachable", record.src, record.ttl, rtt_ms=rtt)
