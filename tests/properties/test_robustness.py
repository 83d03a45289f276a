"""Property 6: the engine takes any sequence of records, however odd, and says something.

An exception from the engine means "no measurement at all" (STYLE.md, 5), so a capture with odd
packets in it (port reuse, a stray SYN-ACK, fuzzed input to `probe analyze`) must still give a
verdict and one attribution per packet. Records here are built from arbitrary field values, with
times in capture order and addresses, ports and numbers drawn often enough from our flow's that
the engine's flow logic is exercised, not just its "not part of this flow" branch.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import example, given, note, strategies as st

from probe.engine import analyze_flow
from probe.engine.model import ORIGINS, VERDICTS
from probe.record import PacketRecord, Quoted, flag_letters

from .exchanges import (CLIENT, CLIENT_PORT, ELSEWHERE, FLOW, ROUTER, SERVER, SERVER_PORT, forged_exchanges,
                        genuine_exchanges, property_settings, table, tcp_record)

PROPERTY = property_settings(600)

ADDRESSES = st.sampled_from((CLIENT, SERVER, ROUTER, ELSEWHERE))
PORTS = st.one_of(st.sampled_from((CLIENT_PORT, SERVER_PORT)), st.integers(0, 65535))
COMMON_FLAGS = st.sampled_from(("S", "SA", "A", "PA", "R", "RA", "FA", "FPA", ""))
FLAGS = st.one_of(COMMON_FLAGS, st.integers(0, 255).map(flag_letters))  # any subset of FSRPAUEC
NUMBERS = st.one_of(st.sampled_from((0, 1, 2, 1000, 1001, 1002, (1 << 32) - 1)), st.integers(0, (1 << 32) - 1))
OPTIONS = st.lists(st.sampled_from((("MSS", 1460), ("SAckOK", True), ("Timestamp", (1, 0)), ("NOP", None),
                                    ("WScale", 7), ("malformed", b"\x05"), ("EOL", None))), max_size=3)


@st.composite
def endpoints(draw):
    """Our flow's two directions most of the time, anything else otherwise."""
    way = draw(st.sampled_from(("ours", "theirs", "any")))
    if way == "ours":
        return CLIENT, SERVER, CLIENT_PORT, SERVER_PORT
    if way == "theirs":
        return SERVER, CLIENT, SERVER_PORT, CLIENT_PORT
    return draw(ADDRESSES), draw(ADDRESSES), draw(PORTS), draw(PORTS)


quoted_packets = st.one_of(
    st.none(),
    st.builds(Quoted, src=ADDRESSES, dst=ADDRESSES, proto=st.integers(0, 255), ttl=st.integers(0, 255),
              ip_id=st.integers(0, 65535), tos=st.integers(0, 255), ip_len=st.integers(0, 65535),
              sport=st.one_of(st.none(), PORTS), dport=st.one_of(st.none(), PORTS), seq=st.one_of(st.none(), NUMBERS)),
    st.just(Quoted(CLIENT, SERVER, 6, 1, 0, 0, 60, CLIENT_PORT, SERVER_PORT, 1000)),
)


@st.composite
def arbitrary_records(draw, max_size: int = 10, start=None):
    t = draw(st.floats(-1e9, 2e9)) if start is None else start
    packets = []
    for _ in range(draw(st.integers(0, max_size))):
        t += draw(st.one_of(st.just(0.0), st.floats(0.0, 0.001), st.floats(0.0, 10.0)))
        src, dst, sport, dport = draw(endpoints())
        packets.append(PacketRecord(
            t=t, src=src, dst=dst, proto=draw(st.sampled_from(("tcp", "tcp", "tcp", "icmp", "other"))),
            ttl=draw(st.integers(0, 255)), ip_id=draw(st.integers(0, 65535)), df=draw(st.booleans()),
            tos=draw(st.integers(0, 255)), ip_len=draw(st.integers(0, 65535)),
            flags=draw(FLAGS), sport=sport, dport=dport, seq=draw(NUMBERS),
            ack=draw(NUMBERS), win=draw(st.integers(0, 65535)), options=tuple(draw(OPTIONS)),
            payload=draw(st.sampled_from((b"", b"HTTP/1.1 200 OK\r\n\r\n"))) if draw(st.booleans())
            else draw(st.binary(max_size=20)),
            icmp_type=draw(st.one_of(st.none(), st.integers(0, 255))),
            icmp_code=draw(st.one_of(st.none(), st.integers(0, 255))),
            quoted=draw(quoted_packets)))
    return packets


MUTABLE_FIELDS = {
    "flags": FLAGS, "seq": NUMBERS, "ack": NUMBERS, "ttl": st.integers(0, 255), "ip_id": st.integers(0, 65535),
    "win": st.integers(0, 65535), "src": ADDRESSES, "dst": ADDRESSES, "sport": PORTS, "dport": PORTS,
    "proto": st.sampled_from(("tcp", "icmp", "other")), "payload": st.binary(max_size=20), "quoted": quoted_packets,
}


@st.composite
def mangled_exchanges(draw):
    """A realistic exchange (genuine, or with a forged reset) with packets moved, dropped, repeated and
    their fields overwritten; the timestamps are then handed out again in order."""
    exchange = draw(st.one_of(genuine_exchanges(), forged_exchanges()))
    packets = list(exchange.packets)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(packets) - 1))
        operation = draw(st.sampled_from(("move", "move", "drop", "repeat", "overwrite", "overwrite")))
        if operation == "move":
            packets.insert(draw(st.integers(0, len(packets) - 1)), packets.pop(i))
        elif operation == "drop" and len(packets) > 1:
            packets.pop(i)
        elif operation == "repeat":
            packets.insert(i, packets[i])
        else:
            name = draw(st.sampled_from(sorted(MUTABLE_FIELDS)))
            packets[i] = replace(packets[i], **{name: draw(MUTABLE_FIELDS[name])})
    times = sorted(p.t for p in packets)
    return [replace(p, t=t) for p, t in zip(packets, times)]


def says_something(packets):
    note(table(packets))
    analysis = analyze_flow(packets, FLOW)
    assert len(analysis.attributions) == len(packets)
    assert analysis.verdict in VERDICTS
    assert all(a.origin in ORIGINS for a in analysis.attributions)
    assert all(a.origin == "self" for p, a in zip(packets, analysis.attributions) if FLOW.sent_by_client(p))


def _ours(t, flags, seq, ack):
    return tcp_record(t, CLIENT, SERVER, CLIENT_PORT, SERVER_PORT, flags, seq, ack, ttl=64, ip_id=1, win=502)


def _theirs(t, flags, seq, ack):
    return tcp_record(t, SERVER, CLIENT, SERVER_PORT, CLIENT_PORT, flags, seq, ack, ttl=60, ip_id=0, win=0)


# Crashes found here, fixed in d2e77d9, kept as regression examples. A SYN-ACK that acknowledges our
# SYN but was recorded before it (same timestamp, or a stale one from an earlier connection on the
# same ports): build_baseline looked for the SYN before it and indexed an empty list (IndexError).
SYNACK_BEFORE_SYN = [_theirs(0.0, "SA", 0, 1), _ours(0.0, "S", 0, 0)]
# A bare RST in the server's name, seq = the ACK of an ACK of ours, recorded before the SYN-ACK:
# reset_in_our_name took the max() of the server's packets before it, and there were none (ValueError).
BARE_RST_BEFORE_SYNACK = [_ours(0.0, "S", 0, 0), _ours(0.0, "A", 0, 0), _theirs(0.0, "R", 0, 0),
                          _theirs(0.0, "SA", 0, 1)]


@PROPERTY
@example(SYNACK_BEFORE_SYN)
@example(BARE_RST_BEFORE_SYNACK)
@given(st.one_of(arbitrary_records(), mangled_exchanges()))
def test_the_engine_never_raises_and_attributes_every_packet(packets):
    says_something(packets)


@st.composite
def after_a_handshake(draw):
    """Our SYN and the server's SYN-ACK first (which ruled out both crashes above), then arbitrary
    records: the usual shape of a capture, kept apart so that a new crash here says so."""
    isn, irs, t = draw(NUMBERS), draw(NUMBERS), draw(st.floats(-1e9, 2e9))
    rtt = draw(st.floats(0.0, 0.3))
    handshake = [_ours(t, "S", isn, 0), _theirs(t + rtt, "SA", irs, (isn + 1) % (1 << 32))]
    rest = draw(st.one_of(arbitrary_records(start=t + rtt), mangled_exchanges()))
    return handshake + [replace(p, t=max(p.t, t + rtt)) for p in rest]


@PROPERTY
@given(after_a_handshake())
def test_the_engine_never_raises_after_a_handshake(packets):
    """With the handshake recorded first, anything may follow."""
    says_something(packets)
