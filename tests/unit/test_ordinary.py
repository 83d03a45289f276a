"""The pre-judgement (`probe.files.ordinary`) against the engine: a flow it summarises must be one the
engine calls clean with every packet its sender's own, and every other flow must come out exactly as
the engine alone judges it. Over every golden capture (the lab scenarios' recordings, both ends of
the two-ended ones), every real capture of ../shared/realworld, and property-generated exchanges
(genuine, with a forged reset, with a packet in the server's name drawn freely)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import assume, given, strategies as st

from probe.files import flows as az
from probe.record import TCP_FLAG_LETTERS
from tests.properties.exchanges import (forged_exchanges, genuine_exchanges, property_settings, suspects,
                                        with_suspect)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = sorted((ROOT / "tests" / "golden").rglob("*.pcap"))
REALWORLD = sorted(p for p in (ROOT.parent / "shared" / "realworld").rglob("*") if p.suffix in (".pcap", ".pcapng"))


def judged_both_ways(feed) -> tuple[list[az.FlowResult], list[az.FlowResult]]:
    """`feed(table)` fills a FlowTable; the flows judged by the engine alone, and with the pre-judgement."""
    table = az.FlowTable()
    flows = feed(table)
    return [az.judge(f) for f in flows], [az.judge(f, summarise=True) for f in flows]


def assert_same(engine: az.FlowResult, fast: az.FlowResult) -> None:
    assert (fast.flow, fast.vantage, fast.start, fast.packet_count) == \
        (engine.flow, engine.vantage, engine.start, engine.packet_count)
    a, b = engine.analysis, fast.analysis
    assert (b.verdict, b.direction, b.hop, b.rtt_ms, b.explanation, b.notes, b.hop_basis) == \
        (a.verdict, a.direction, a.hop, a.rtt_ms, a.explanation, a.notes, a.hop_basis)
    if fast.summarised:
        own = ["self" if engine.flow.sent_by_client(p) else "server" for p in engine.packets]
        assert [attribution.origin for attribution in a.attributions] == own
    else:
        assert fast == engine


def check_file(path: Path) -> int:
    """Both ways over one capture; the number of flows summarised."""
    from probe.files.pcap import ip_packets

    engine, fast = judged_both_ways(lambda table: list(az.stream_flows(ip_packets(str(path)), table)))
    assert len(engine) == len(fast)
    for one, other in zip(engine, fast):
        assert_same(one, other)
    return sum(result.summarised for result in fast)


@pytest.mark.parametrize("path", GOLDEN, ids=[str(p.relative_to(ROOT / "tests" / "golden")) for p in GOLDEN])
def test_golden_captures_judged_alike(path):
    check_file(path)


@pytest.mark.skipif(not REALWORLD, reason="../shared/realworld is not there")
@pytest.mark.parametrize("path", REALWORLD, ids=[p.name for p in REALWORLD])
def test_real_captures_judged_alike(path):
    check_file(path)


def test_a_clean_exchange_is_summarised():
    """Else the tests above would pass with a pre-judgement that never says yes."""
    assert check_file(ROOT / "tests" / "golden" / "captures" / "01-clean.pcap") == 1


def record_bytes(record) -> bytes:
    """An IPv4 packet carrying what `record` says (TCP without options, or an ICMP error and its quote)."""
    def ip(proto: int, body: bytes, src: str, dst: str, ttl: int, ip_id: int, df: bool, tos: int = 0) -> bytes:
        return struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(body), ip_id, 0x4000 if df else 0, ttl, proto, 0,
                           bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))) + body

    if record.proto == "icmp":
        q = record.quoted
        quote = ip(q.proto, struct.pack("!HHI", q.sport or 0, q.dport or 0, q.seq or 0), q.src, q.dst, q.ttl,
                   q.ip_id, True, q.tos)
        return ip(1, struct.pack("!BBHI", record.icmp_type, record.icmp_code, 0, 0) + quote, record.src, record.dst,
                  record.ttl, record.ip_id, record.df)
    flags = sum(1 << TCP_FLAG_LETTERS.index(letter) for letter in record.flags)
    tcp = struct.pack("!HHIIBBHHH", record.sport, record.dport, record.seq, record.ack, 5 << 4, flags, record.win,
                      0, 0) + record.payload
    return ip(6, tcp, record.src, record.dst, record.ttl, record.ip_id, record.df, record.tos)


def check_exchange(packets) -> None:
    def feed(table):
        flows = []
        for record in packets:
            flows += table.feed(record.t, record_bytes(record))
        return flows + table.drain()

    engine, fast = judged_both_ways(feed)
    for one, other in zip(engine, fast):
        assert_same(one, other)


@given(genuine_exchanges())
@property_settings(300)
def test_genuine_exchanges_judged_alike(exchange):
    check_exchange(exchange.packets)


@given(forged_exchanges())
@property_settings(150)
def test_exchanges_with_a_forged_reset_judged_alike(exchange):
    check_exchange(exchange.packets)


@given(st.data())
@property_settings(400)
def test_exchanges_with_a_free_packet_in_the_servers_name_judged_alike(data):
    exchange = data.draw(genuine_exchanges(min_data=1))
    assume(any(role == "server" and packet.length for packet, role in zip(exchange.packets, exchange.roles)))
    check_exchange(with_suspect(exchange, data.draw(suspects(exchange.script.rtt))).packets)
