"""Hostile packets at the byte level (issue #8): the record builder, the engine and the client's
state machine survive anything a stranger can send, and traffic that is not the flow's (however
much, however odd) changes nothing about it.

tests/unit/test_record.py checks `parse_ip` against scapy and on random or mutated bytes;
test_robustness.py feeds the engine arbitrary *records*. Here the packets are bytes whose header
fields lie independently (see `hostile`), they go through `parse_ip` as a live or a file capture
would, and they land in the lab's real captures (tests/golden/captures).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from hypothesis import given, note, strategies as st

from probe.engine import analyze_flow
from probe.engine.model import ORIGINS, VERDICTS
from probe.protocol.http import HttpExchange, ResponseReader
from probe.files.pcap import ip_packets
from probe.record import ICMP_ERROR_TYPES, flag_letters, parse_ip
from probe.protocol.tcp import ClientConnection, Segment

from .exchanges import property_settings, table
from tests.golden.own_flow import own_flow

from .hostile import hostile_packets, packet_of, unrelated_to

CAPTURES = sorted((Path(__file__).parent.parent / "golden" / "captures").glob("*.pcap"))
PROPERTY = property_settings(150)
PARSE = property_settings(300)
FLOOD = property_settings(30)


@lru_cache(maxsize=None)
def golden(capture: Path):
    """(flow, raw packets with their times) of the probe's own flow in a lab capture."""
    raw = list(ip_packets(str(capture)))
    records = [parse_ip(data, t) for t, data in raw]
    flow = own_flow(capture).flow
    ours = [(t, data) for (t, data), record in zip(raw, records) if record is not None and flow.belongs(record)]
    return flow, ours


def records_of(timed_packets) -> list:
    records = (parse_ip(data, t) for t, data in timed_packets)
    return [record for record in records if record is not None]


def outcome(analysis):
    return analysis.verdict, analysis.direction, analysis.hop


# --- parse_ip: only what is there, as the headers say ------------------------------------------


@PARSE
@given(st.one_of(hostile_packets(), packet_of(golden(CAPTURES[0])[0])), st.floats(-1e9, 2e9))
def test_parse_ip_reads_every_hostile_packet_as_its_headers_say_and_no_further(raw, t):
    record = parse_ip(raw, t)
    if raw and raw[0] >> 4 == 6:  # IPv6, read too: its own properties are in tests/unit/test_record_ipv6.py
        assert (record is None) == (len(raw) < 40) and (record is None or record.version == 6)
        return
    ihl = (raw[0] & 0x0F) * 4 if raw else 0
    is_ipv4 = len(raw) >= 20 and raw[0] >> 4 == 4 and 20 <= ihl <= len(raw)
    assert (record is None) == (not is_ipv4)
    if record is None:
        return
    ip_len, ip_id, fragment, ttl, proto = struct.unpack("!2xHHHBB", raw[:10])
    assert (record.t, record.ttl, record.ip_id, record.ip_len) == (t, ttl, ip_id, ip_len)
    assert (record.src, record.dst) == (socket.inet_ntoa(raw[12:16]), socket.inet_ntoa(raw[16:20]))
    assert record.df == bool(fragment & 0x4000)
    end = min(len(raw), ip_len) if ip_len >= ihl else len(raw)
    l4 = raw[ihl:end]
    if record.proto == "tcp":
        assert proto == 6 and fragment & 0x1FFF == 0  # a later fragment has no TCP header to read
        offset = (l4[12] >> 4) * 4
        assert 20 <= offset <= len(l4)
        assert (record.sport, record.dport, record.seq, record.ack) == struct.unpack("!HHII", l4[:12])
        assert record.win == struct.unpack("!H", l4[14:16])[0]
        assert record.flags == flag_letters(l4[13])
        assert record.payload == l4[offset:]  # the payload ends where the IP total length says, or sooner
    elif record.proto == "icmp":
        assert proto == 1 and fragment & 0x1FFF == 0 and len(l4) >= 8
        assert (record.icmp_type, record.icmp_code) == (l4[0], l4[1])
        if record.quoted is not None:
            assert record.icmp_type in ICMP_ERROR_TYPES
            inner = l4[8:]
            assert (record.quoted.src, record.quoted.dst) == (socket.inet_ntoa(inner[12:16]),
                                                              socket.inet_ntoa(inner[16:20]))
    else:
        assert record.proto == "other" and record.flags == "" and record.payload == b""


# --- the engine: hostile packets of the flow itself ----------------------------------------------


@st.composite
def captures_with_hostile_packets(draw, packets, how_many, distinct=st.integers(1, 40)):
    """A lab capture with `how_many` packets mixed in at random places: drawn from a pool of
    `distinct` hostile packets (a flood repeats itself; drawing each of hundreds would exhaust
    hypothesis' budget for one example)."""
    capture = draw(st.sampled_from(CAPTURES))
    flow, ours = golden(capture)
    pool = [draw(packets(flow)) for _ in range(draw(distinct))]
    place = draw(st.randoms(use_true_random=False))
    start, end = ours[0][0], ours[-1][0]
    mixed = list(ours)
    for i in range(draw(how_many)):
        mixed.append((place.uniform(start - 0.01, end + 0.01), pool[i % len(pool)]))
    mixed.sort(key=lambda item: item[0])  # capture order is time order
    return capture, flow, ours, mixed


@PROPERTY
@given(captures_with_hostile_packets(packet_of, st.integers(1, 8), distinct=st.integers(1, 8)))
def test_the_engine_attributes_every_packet_of_a_capture_with_hostile_packets_of_its_own_flow(case):
    """Resets, data, SYNs with every flag combination and absurd options in the flow's own name,
    ICMP errors quoting it or garbage: the engine still gives a verdict and an origin to each."""
    _capture, flow, _ours, mixed = case
    packets = records_of(mixed)
    note(table(packets))
    analysis = analyze_flow(packets, flow)
    assert analysis.verdict in VERDICTS and len(analysis.attributions) == len(packets)
    assert all(a.origin in ORIGINS for a in analysis.attributions)
    assert all(a.origin == "self" for p, a in zip(packets, analysis.attributions) if flow.sent_by_client(p))


# --- the engine: a flood of traffic that is not the flow's -------------------------------------


@FLOOD
@given(captures_with_hostile_packets(unrelated_to, st.integers(20, 200)))
def test_a_flood_of_unrelated_traffic_changes_nothing_about_a_lab_capture(case):
    """Hundreds of packets of other flows between the same hosts, later fragments of the flow's own
    packets, ICMP quoting other flows or garbage, other protocols and non-IPv4 bytes, among the
    flow's packets: the same verdict, direction and hop, and the same origin for each of its packets."""
    _capture, flow, ours, mixed = case
    alone = analyze_flow(records_of(ours), flow)
    packets = records_of(mixed)
    flooded = analyze_flow(packets, flow)
    assert outcome(flooded) == outcome(alone)
    assert [a.origin for p, a in zip(packets, flooded.attributions) if flow.belongs(p)] == \
        [a.origin for a in alone.attributions]


# --- the client's state machine: anything in its flow's name -------------------------------------


def _connection(flow, capture, established: bool) -> ClientConnection:
    """A connection of the capture's flow, its SYN sent, and if `established` the capture's own
    SYN-ACK (acknowledging this SYN) taken in."""
    app = HttpExchange(b"HEAD / HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
                       ResponseReader("HEAD", "www.example.com", flow.server_port, "/"))
    connection = ClientConnection(flow.client, flow.client_port, flow.server, flow.server_port, app, isn=0)
    [syn] = connection.start(0.0)
    synack = next((r for r in records_of(golden(capture)[1]) if flow.toward_client(r) and r.has("SA")), None)
    if established and synack is not None:
        connection.on_packet(replace(synack, ack=(syn.seq + 1) % 2**32), 0.05)
    return connection


@PROPERTY
@given(st.sampled_from(CAPTURES), st.booleans(), st.data())
def test_the_client_state_machine_survives_any_packet_in_its_flows_name(capture, established, data):
    """What the live probe feeds its state machine: every received packet of the flow, hostile or not."""
    flow, _ = golden(capture)
    connection = _connection(flow, capture, established)
    now = 0.1
    for raw in data.draw(st.lists(packet_of(flow), min_size=1, max_size=12)):
        record = parse_ip(raw, now)
        if record is None or not flow.toward_client(record):
            continue
        note(f"{record.flags} seq={record.seq} ack={record.ack} len={record.length} options={record.options}")
        for segment in connection.on_packet(record, now) + connection.on_timer(now + 0.3):
            assert isinstance(segment, Segment)
            assert 0 <= segment.seq < 2**32 and 0 <= segment.ack < 2**32 and 0 <= segment.window < 2**16
        now += 0.5
