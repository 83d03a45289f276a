"""Realistic TCP exchanges for the property tests: a script of numbers, and `play` that makes the records.

The model. We are CLIENT:40000 and send with TTL 64; the server SERVER:80 is `rtt` away and its
packets arrive with TTL `server_ttl`. We send a SYN (earlier copies may be lost), the server's
SYN-ACK comes one round trip later, we send the handshake ACK and the request. Copies of the
request may be lost (we retransmit with a doubling timeout that is never shorter than two round
trips, so no retransmission is spurious); the first copy that gets through is answered, one round
trip plus some think time later, by an ACK and/or data segments (we acknowledge each), and then
the server ends in one of `ENDINGS`. Every server packet arrives at least one round trip after
the segment of ours that drew it, and numbers its IP-IDs by one habit: all zero, a counter, or
Linux's (SYN-ACK 0, then a per-connection counter). Resets carry 0 or the counter's next value.

A script is plain data, so a counterexample hypothesis finds can be written back as an
`@example(...)` and read as a packet table (`table`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from itertools import cycle

from hypothesis import HealthCheck, assume, settings, strategies as st

from probe.engine import Flow
from probe.engine.baseline import TIMESTAMP_NOISE, seq_end
from probe.record import PacketRecord, Quoted, flag_letters
from probe.protocol.tcp import seq_add, seq_diff

CLIENT, CLIENT_PORT = "192.0.2.10", 40000
SERVER, SERVER_PORT = "198.51.100.80", 80
ROUTER = "192.0.2.1"
ELSEWHERE = "203.0.113.7"
OUR_TTL = 64
FLOW = Flow(CLIENT, CLIENT_PORT, SERVER, SERVER_PORT)

SYN_OPTIONS = (("MSS", 1460), ("SAckOK", True), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7))
SYN_RETRY = 1.0  # our SYN timeout, doubling

# How the server ends the exchange after answering the request:
#   open              nothing more (a kept-alive connection)
#   close             FIN; we acknowledge it with our FIN; the server acknowledges ours
#   close-then-reset  FIN; a late ACK of ours 300 ms later draws a bare RST (the server had closed)
#   abort             RST/ACK at the server's next sequence number (an application abort)
#   reset-unknown     a bare RST, seq = the ACK of the segment of ours it answers, window 0
#                     (RFC 9293: a stack that has no such connection)
#   silent            no copy of the request ever reaches the server: no answer at all
#   overflow          the server has no room for the connection when our handshake ACK arrives and
#                     answers it with a bare RST (Linux with tcp_abort_on_overflow and a full accept
#                     queue), then the request, which reached a server without the connection, with
#                     another; nothing else (the handshake ACK and the request carry the same ACK,
#                     so both resets have the same seq)
ENDINGS = ("open", "close", "close-then-reset", "abort", "reset-unknown", "silent", "overflow")


@dataclass(frozen=True)
class Script:
    rtt: float  # seconds
    server_ttl: int  # as the server's packets arrive here
    t0: float
    isn: int
    irs: int
    lost_syns: int
    ip_ids: str  # "zero", "counter" or "linux"
    ip_id_start: int
    ip_id_steps: tuple[int, ...]
    request_len: int
    lost_requests: int  # copies of the request lost before one gets through
    rto: float  # first retransmission timeout of the request
    think: float  # 0..1: how much of the time before our next retransmission the server takes
    react: float  # how long we take to send the next segment (ACK, request, FIN)
    server_acks_first: bool  # a pure ACK of the request before the data
    data: tuple[int, ...]  # lengths of the response segments
    data_gaps: tuple[float, ...]  # time from each response segment to the next server packet
    ending: str
    reset_window: int  # window of an abort's RST/ACK
    reset_ip_id_zero: bool  # resets carry IP-ID 0 (Linux) instead of the counter's next value


@dataclass(frozen=True)
class ForgedReset:
    """A reset in the server's name from a box closer than the server, soon after the request."""

    share_of_soonest: float  # arrives this share (0..1, exclusive) of `soonest_forged(rtt)` after its cause
    ttl: int
    flags: str  # "R" or "RA"
    seq_offset: int  # from the server's next sequence number (injectors: +1460, +4380)
    ip_id: int
    win: int


@dataclass(frozen=True)
class Suspect:
    """A packet in the server's name whose fields are drawn freely near the server's own."""

    delay: float  # after the first response segment
    flags: str
    ttl_delta: int
    seq_offset: int
    ip_id: int
    win: int
    length: int


@dataclass(frozen=True)
class Exchange:
    packets: tuple[PacketRecord, ...]
    roles: tuple[str, ...]  # per packet: "self", "server" (genuine), "forged", "suspect", "other"
    script: Script

    def indexes(self, role: str) -> list[int]:
        return [i for i, r in enumerate(self.roles) if r == role]


# PROBE_PROPERTY_SCALE=10 runs ten times the examples (a nightly run; the default keeps the
# whole directory near 30 s).
SCALE = float(os.environ.get("PROBE_PROPERTY_SCALE", "1"))


def property_settings(max_examples: int) -> settings:
    return settings(deadline=None, database=None, max_examples=max(1, int(max_examples * SCALE)),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# --- records -------------------------------------------------------------------------------------


def tcp_record(t, src, dst, sport, dport, flags, seq, ack, *, ttl, ip_id, win, payload=b"", options=()):
    return PacketRecord(t=t, src=src, dst=dst, proto="tcp", ttl=ttl, ip_id=ip_id, df=True, tos=0,
                        ip_len=40 + len(payload), flags=flags, sport=sport, dport=dport,
                        seq=seq % (1 << 32), ack=ack % (1 << 32), win=win, options=tuple(options),
                        payload=bytes(payload))


class _ServerIpIds:
    def __init__(self, script: Script):
        self.kind = script.ip_ids
        self.next = script.ip_id_start
        self.steps = cycle(script.ip_id_steps)

    def _count(self) -> int:
        value = self.next
        self.next = (self.next + next(self.steps)) % 65536
        return value

    def synack(self) -> int:
        return self._count() if self.kind == "counter" else 0

    def packet(self) -> int:
        return 0 if self.kind == "zero" else self._count()

    def reset(self, zero: bool) -> int:
        return 0 if self.kind == "zero" or zero else self._count()


class _Recorder:
    """Collects the packets of one exchange with their roles; `exchange()` orders them by time."""

    def __init__(self, script: Script):
        self.script = script
        self.ids = _ServerIpIds(script)
        self.our_ip_id = 4711
        self.events: list[tuple[float, int, PacketRecord, str]] = []
        self.last_ours: PacketRecord | None = None

    def add(self, packet: PacketRecord, role: str) -> PacketRecord:
        self.events.append((packet.t, len(self.events), packet, role))
        return packet

    def ours(self, t, flags, seq, ack, payload=b"", options=()) -> PacketRecord:
        self.our_ip_id = (self.our_ip_id + 1) % 65536
        packet = tcp_record(t, CLIENT, SERVER, CLIENT_PORT, SERVER_PORT, flags, seq, ack, ttl=OUR_TTL,
                            ip_id=self.our_ip_id, win=502, payload=payload, options=options)
        if self.last_ours is None or t >= self.last_ours.t:
            self.last_ours = packet
        return self.add(packet, "self")

    def servers(self, t, flags, seq, ack, *, ip_id, win=64, payload=b"", options=()) -> PacketRecord:
        packet = tcp_record(t, SERVER, CLIENT, SERVER_PORT, CLIENT_PORT, flags, seq, ack,
                            ttl=self.script.server_ttl, ip_id=ip_id, win=win, payload=payload, options=options)
        return self.add(packet, "server")

    def exchange(self) -> Exchange:
        ordered = sorted(self.events, key=lambda event: (event[0], event[1]))
        return Exchange(tuple(e[2] for e in ordered), tuple(e[3] for e in ordered), self.script)


def request_bytes(length: int) -> bytes:
    head = b"HEAD / HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
    return (head * (length // len(head) + 1))[:length]


def play(script: Script) -> Exchange:
    """The genuine exchange the script describes, as the capture on our side would record it."""
    out = _Recorder(script)
    rtt, isn, irs = script.rtt, script.isn, script.irs
    t = script.t0
    for attempt in range(script.lost_syns):
        out.ours(t, "S", isn, 0, options=SYN_OPTIONS)
        t += SYN_RETRY * 2 ** attempt
    out.ours(t, "S", isn, 0, options=SYN_OPTIONS)
    synack = out.servers(t + rtt, "SA", irs, seq_add(isn, 1), ip_id=out.ids.synack(), win=65160,
                         options=SYN_OPTIONS)
    handshake_ack = out.ours(synack.t + script.react, "A", seq_add(isn, 1), seq_add(irs, 1))
    payload = request_bytes(script.request_len)
    request_end = seq_add(isn, 1 + len(payload))
    sent = synack.t + 2 * script.react
    if script.ending == "overflow":  # `scripts` keeps react under the round trip: we send the request first
        request = out.ours(sent, "PA", seq_add(isn, 1), seq_add(irs, 1), payload=payload)
        for answered in (handshake_ack, request):
            out.servers(answered.t + rtt + script.think * 0.001, "R", answered.ack, 0,
                        ip_id=out.ids.reset(script.reset_ip_id_zero), win=0)
        return out.exchange()
    copies = script.lost_requests + 1
    timeout = script.rto
    for copy in range(copies):
        received = out.ours(sent, "PA", seq_add(isn, 1), seq_add(irs, 1), payload=payload)
        if copy < copies - 1:
            sent += timeout
            timeout *= 2
    if script.ending == "silent":
        return out.exchange()

    # The server answers `received`, the first copy to get through, before our next timeout.
    t = received.t + rtt + script.think * 0.9 * (timeout - rtt)
    server_next = seq_add(irs, 1)
    if script.server_acks_first:
        out.servers(t, "A", server_next, request_end, ip_id=out.ids.packet())
        t += script.data_gaps[0] if script.data_gaps else 0.0001
    for i, length in enumerate(script.data):
        flags = "PA" if i == len(script.data) - 1 else "A"
        out.servers(t, flags, server_next, request_end, ip_id=out.ids.packet(), payload=bytes(length))
        server_next = seq_add(server_next, length)
        out.ours(t + script.react, "A", request_end, server_next)
        t += script.data_gaps[i]

    if script.ending in ("close", "close-then-reset"):
        fin = out.servers(t, "FA", server_next, request_end, ip_id=out.ids.packet())
        fin_end = seq_add(server_next, 1)
        if script.ending == "close":
            ours = out.ours(fin.t + script.react, "FA", request_end, fin_end)
            out.servers(ours.t + rtt + script.think * 0.001, "A", fin_end, seq_add(request_end, 1),
                        ip_id=out.ids.packet())
        else:
            late = out.ours(fin.t + 0.3, "A", request_end, fin_end)
            out.servers(late.t + rtt + script.think * 0.001, "R", fin_end, 0,
                        ip_id=out.ids.reset(script.reset_ip_id_zero), win=0)
    elif script.ending == "abort":
        out.servers(t, "RA", server_next, request_end, ip_id=out.ids.reset(script.reset_ip_id_zero),
                    win=script.reset_window)
    elif script.ending == "reset-unknown":
        answered = out.last_ours
        at = max(t, answered.t + rtt + script.think * 0.001)
        out.servers(at, "R", answered.ack, 0, ip_id=out.ids.reset(script.reset_ip_id_zero), win=0)
    return out.exchange()


def soonest_forged(rtt: float) -> float:
    """How soon after its cause a reset must arrive to be "sooner than the path allows": half the
    round trip, less the timestamp noise (`probe.engine.baseline.TIMESTAMP_NOISE`)."""
    return rtt / 2 - TIMESTAMP_NOISE


def with_forged_reset(exchange: Exchange, forged: ForgedReset) -> Exchange:
    """The exchange with a reset forged toward us, in the server's name, soon after its cause: the
    earliest segment of ours it can answer. For a RST/ACK (it acknowledges the request) that is the
    request; for a bare RST, which copies an ACK we sent and nothing else, it is the handshake ACK,
    the first of our segments to carry the ACK that the request carries too."""
    script = exchange.script
    request = first_request(exchange.packets)
    cause = request if "A" in forged.flags else next(p for p in exchange.packets
                                                     if FLOW.sent_by_client(p) and p.flags == "A")
    t = cause.t + forged.share_of_soonest * soonest_forged(script.rtt)
    seq = seq_add(script.irs, 1 + forged.seq_offset)
    ack = seq_end(request) if "A" in forged.flags else 0
    packet = tcp_record(t, SERVER, CLIENT, SERVER_PORT, CLIENT_PORT, forged.flags, seq, ack, ttl=forged.ttl,
                        ip_id=forged.ip_id, win=forged.win)
    return insert_by_time(exchange, packet, "forged")


def with_suspect(exchange: Exchange, suspect: Suspect) -> Exchange:
    """The exchange with one more packet in the server's name, with freely drawn fields."""
    script = exchange.script
    first = next(p for p, r in zip(exchange.packets, exchange.roles) if r == "server" and p.length)
    request = first_request(exchange.packets)
    ttl = min(255, max(0, script.server_ttl + suspect.ttl_delta))
    seq = seq_add(first.seq, suspect.seq_offset)
    packet = tcp_record(first.t + suspect.delay, SERVER, CLIENT, SERVER_PORT, CLIENT_PORT, suspect.flags, seq,
                        seq_end(request) if "A" in suspect.flags else 0, ttl=ttl, ip_id=suspect.ip_id,
                        win=suspect.win, payload=bytes(suspect.length))
    return insert_by_time(exchange, packet, "suspect")


def insert_by_time(exchange: Exchange, packet: PacketRecord, role: str) -> Exchange:
    """Insert after every packet recorded no later than it (capture order is time order)."""
    at = sum(1 for p in exchange.packets if p.t <= packet.t)
    return replace(exchange, packets=exchange.packets[:at] + (packet,) + exchange.packets[at:],
                   roles=exchange.roles[:at] + (role,) + exchange.roles[at:])


def first_request(packets) -> PacketRecord:
    return next(p for p in packets if FLOW.sent_by_client(p) and p.length)


# --- what the exception is ---------------------------------------------------------------


def field_report_signature(packets, flow: Flow = FLOW) -> bool:
    """The field report's signature, as the issue states it: a bare RST in the server's name (no ACK
    flag) answering a retransmission of our request, i.e. arriving after a later copy of the
    request and carrying that copy's ACK as its seq, when nothing in the server's name had
    acknowledged the request before it."""
    request = next((p for p in packets if flow.sent_by_client(p) and p.length), None)
    if request is None:
        return False
    for index, packet in enumerate(packets):
        if not (flow.toward_client(packet) and "R" in packet.flags and "A" not in packet.flags):
            continue
        earlier = packets[:index]
        retransmissions = [p for p in earlier if flow.sent_by_client(p) and p.length and p.seq == request.seq
                           and p is not request]
        acknowledged = any(flow.toward_client(p) and "A" in p.flags and seq_diff(p.ack, seq_end(request)) >= 0
                           for p in earlier)
        if retransmissions and not acknowledged and packet.seq == retransmissions[-1].ack:
            return True
    return False


# --- strategies ----------------------------------------------------------------------------------

u32 = st.integers(0, (1 << 32) - 1)
near_wrap = st.one_of(u32, st.integers((1 << 32) - 3000, (1 << 32) - 1))
rtts = st.floats(0.001, 0.300)
# back-to-back segments (often within 0.1 ms), or spread out
gaps = st.one_of(st.floats(0.00001, 0.0001), st.floats(0.0001, 0.05))


@st.composite
def scripts(draw, *, rtt=rtts, endings=st.sampled_from(ENDINGS), min_data=0) -> Script:
    round_trip = draw(rtt)
    ending = draw(endings)
    ip_ids = draw(st.sampled_from(("zero", "counter", "linux")))
    data = tuple(draw(st.lists(st.integers(1, 1460), min_size=min_data, max_size=max(4, min_data))))
    return Script(
        rtt=round_trip,
        server_ttl=draw(st.integers(1, 255)),
        t0=draw(st.one_of(st.just(0.0), st.floats(0, 2e9))),
        isn=draw(near_wrap),
        irs=draw(near_wrap),
        lost_syns=draw(st.integers(0, 2)),
        ip_ids=ip_ids,
        ip_id_start=draw(st.one_of(st.integers(0, 65535), st.integers(65500, 65535))),
        ip_id_steps=tuple(draw(st.lists(st.one_of(st.integers(1, 3), st.integers(1, 3000)), min_size=1,
                                        max_size=4))),
        request_len=draw(st.integers(1, 1460)),
        lost_requests=draw(st.integers(0, 3)),
        rto=max(0.2, 2 * round_trip) * draw(st.floats(1.0, 2.0)),
        think=draw(st.floats(0.0, 1.0)),
        react=draw(st.floats(0.00005, min(0.001, 0.9 * round_trip if ending == "overflow" else 1.0))),
        server_acks_first=draw(st.booleans()),
        data=data,
        data_gaps=tuple(draw(gaps) for _ in data),
        ending=ending,
        reset_window=draw(st.sampled_from((0, 64, 502, 65535))),
        reset_ip_id_zero=draw(st.booleans()),
    )


def genuine_exchanges(**kwargs):
    return scripts(**kwargs).map(play)


@st.composite
def forged_resets(draw, server_ttl: int) -> ForgedReset:
    ttl = draw(st.integers(0, 255).filter(lambda ttl: abs(ttl - server_ttl) >= 2))
    return ForgedReset(
        share_of_soonest=draw(st.floats(0.0, 0.99)),  # "sooner than", clear of float rounding
        ttl=ttl,
        flags=draw(st.sampled_from(("R", "RA"))),
        seq_offset=draw(st.one_of(st.sampled_from((0, 1460, 4380)), u32)),
        ip_id=draw(st.integers(0, 65535)),
        win=draw(st.sampled_from((0, 64, 501, 8192, 65535))),
    )


@st.composite
def forged_exchanges(draw, *, rtt=rtts) -> Exchange:
    exchange = draw(genuine_exchanges(rtt=rtt))
    return with_forged_reset(exchange, draw(forged_resets(exchange.script.server_ttl)))


@st.composite
def suspects(draw, rtt: float) -> Suspect:
    return Suspect(
        delay=draw(st.floats(0.0, 2 * rtt)),
        flags=draw(st.sampled_from(("R", "RA", "A", "PA", "FA"))),
        ttl_delta=draw(st.integers(-3, 3)),
        seq_offset=draw(st.one_of(st.integers(-3000, 3000), st.sampled_from((1460, 4380)))),
        ip_id=draw(st.integers(0, 65535)),
        win=draw(st.sampled_from((0, 64, 501, 65535))),
        length=draw(st.sampled_from((0, 0, 100))),
    )


@st.composite
def other_flow_packets(draw, packets, flow: Flow = FLOW) -> PacketRecord:
    """A packet (time 0) of some other flow than `flow`: TCP between the same hosts on other ports,
    or with a router or a stranger, often with `packets`' own sequence numbers and any flags; ICMP
    that quotes another flow, or nothing; or another protocol altogether."""
    addresses = st.sampled_from((flow.client, flow.server, ROUTER, ELSEWHERE))
    ports = st.sampled_from((flow.client_port, flow.server_port, flow.client_port + 1, 443, 53))
    numbers = st.one_of(st.sampled_from([p.seq for p in packets] + [p.ack for p in packets]),
                        st.integers(0, (1 << 32) - 1))
    kind = draw(st.sampled_from(("tcp", "icmp", "other")))
    src, dst = draw(addresses), draw(addresses)
    ttl, ip_id = draw(st.integers(0, 255)), draw(st.integers(0, 65535))
    packet = tcp_record(0.0, src, dst, draw(ports), draw(ports), flag_letters(draw(st.integers(0, 255))),
                        draw(numbers), draw(numbers), ttl=ttl, ip_id=ip_id, win=draw(st.integers(0, 65535)),
                        payload=draw(st.sampled_from((b"", b"HTTP/1.1 403 Forbidden\r\n\r\n"))))
    if kind == "icmp":
        quoted = draw(st.one_of(st.none(), st.builds(
            Quoted, src=addresses, dst=addresses, proto=st.sampled_from((6, 17)), ttl=st.integers(0, 255),
            ip_id=st.integers(0, 65535), tos=st.just(0), ip_len=st.integers(20, 1500), sport=ports, dport=ports,
            seq=numbers)))
        packet = replace(packet, proto="icmp", flags="", sport=0, dport=0, seq=0, ack=0, payload=b"",
                         icmp_type=draw(st.sampled_from((0, 3, 5, 8, 11))), icmp_code=draw(st.integers(0, 15)),
                         quoted=quoted)
    elif kind == "other":
        packet = replace(packet, proto="other", flags="", sport=0, dport=0, seq=0, ack=0)
    assume(not flow.belongs(packet))
    return packet


# --- reading a failure ---------------------------------------------------------------------------


def table(packets, analysis=None) -> str:
    """The packet table of an exchange (times in ms from the first packet), with origins if given."""
    if not packets:
        return "(no packets)"
    start = packets[0].t
    origins = [a.origin for a in analysis.attributions] if analysis is not None else [""] * len(packets)
    lines = []
    for packet, origin in zip(packets, origins):
        way = ">" if FLOW.sent_by_client(packet) else "<" if FLOW.toward_client(packet) else "?"
        if packet.proto == "tcp":
            what = (f"{packet.src}:{packet.sport}->{packet.dst}:{packet.dport} {packet.flags or '-':4} "
                    f"seq={packet.seq} ack={packet.ack} win={packet.win} len={packet.length}")
        else:
            what = f"{packet.proto} {packet.src}->{packet.dst} type={packet.icmp_type} quoted={packet.quoted}"
        lines.append(f"{(packet.t - start) * 1000:10.4f} {way} ttl={packet.ttl:3} id={packet.ip_id:5} {what} "
                     f"{origin}")
    if analysis is not None:
        lines.append(f"verdict {analysis.verdict} direction {analysis.direction}: {analysis.explanation}")
    return "\n".join(lines)


__all__ = ["CLIENT", "CLIENT_PORT", "ELSEWHERE", "ENDINGS", "FLOW", "ROUTER", "SERVER", "SERVER_PORT",
           "Exchange", "ForgedReset", "Script", "Suspect", "field_report_signature", "first_request",
           "flag_letters", "forged_exchanges", "forged_resets", "genuine_exchanges", "insert_by_time",
           "other_flow_packets", "play", "property_settings", "soonest_forged",
           "scripts", "suspects", "table", "tcp_record", "with_forged_reset", "with_suspect"]
