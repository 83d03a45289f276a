"""The struct crafter makes exactly scapy's bytes (probe.craft.Crafter) for every segment the
state machine can ask for, and a record parsed from them says what the segment said."""

from __future__ import annotations

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from .scapycraft import Crafter
from probe.protocol.craft import StructCrafter, tcp_options
from probe.record import parse_ip
from probe.protocol.tcp import RECEIVE_WINDOW, Segment

u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)
SYN_OPTIONS = (("MSS", 1460), ("SAckOK", b""), ("Timestamp", (12345, 0)), ("NOP", None), ("WScale", 7))
option_lists = st.sampled_from([
    (),
    SYN_OPTIONS,
    (("MSS", 1460), ("SAckOK", b""), ("NOP", None), ("WScale", 7)),  # the locate sweep's SYN
    (("NOP", None), ("NOP", None), ("Timestamp", (2**32 - 1, 7))),
    (("MSS", 536),),
    (("WScale", 14),),  # 3 bytes: padded
])
flag_sets = st.sampled_from(["S", "A", "PA", "FA", "R", "RA", "FPA", "SA", "SEC", "U", ""])


@hsettings(max_examples=300, deadline=None)
@given(flags=flag_sets, seq=u32, ack=u32, window=u16, options=option_lists,
       payload=st.binary(max_size=1500), ip_id=u16, ttl=st.integers(1, 255), override_ttl=st.none() | st.integers(1, 255),
       sport=st.integers(1, 65535), dport=st.integers(1, 65535))
def test_same_bytes_as_scapy(flags, seq, ack, window, options, payload, ip_id, ttl, override_ttl, sport, dport):
    segment = Segment(flags, seq, ack, window, payload, options)
    slow = Crafter("192.0.2.10", sport, "203.0.113.80", dport, ip_id, ttl=ttl)
    fast = StructCrafter("192.0.2.10", sport, "203.0.113.80", dport, ip_id, ttl=ttl)
    for _ in range(2):  # the IP-ID counter advances the same way
        assert fast.build(segment, ttl=override_ttl) == slow.build(segment, ttl=override_ttl)


def test_ip_id_wraps_like_scapy():
    slow = Crafter("192.0.2.10", 40000, "203.0.113.80", 80, 0xFFFF)
    fast = StructCrafter("192.0.2.10", 40000, "203.0.113.80", 80, 0xFFFF)
    segment = Segment("S", 1, 0, RECEIVE_WINDOW, options=SYN_OPTIONS)
    assert [fast.build(segment) for _ in range(3)] == [slow.build(segment) for _ in range(3)]
    assert fast.next_ip_id == 2


def test_record_of_the_bytes_says_what_the_segment_said():
    segment = Segment("PA", 1000, 2000, 502, b"HEAD / HTTP/1.1\r\n\r\n",
                      (("NOP", None), ("NOP", None), ("Timestamp", (5, 6))))
    record = parse_ip(StructCrafter("192.0.2.10", 40000, "203.0.113.80", 80, 7).build(segment), 0.0)
    assert (record.flags, record.seq, record.ack, record.win, record.payload, record.ip_id, record.df) == \
        ("PA", 1000, 2000, 502, segment.payload, 7, True)
    assert record.option("Timestamp") == (5, 6)


def test_unknown_option_is_refused():
    with pytest.raises(ValueError):
        tcp_options((("SAck", ((1, 2),)),))


@hsettings(max_examples=200, deadline=None)
@given(flags=flag_sets, seq=u32, ack=u32, window=u16, options=option_lists, payload=st.binary(max_size=1400),
       flow_label=st.integers(0, 0xFFFFF), ttl=st.integers(1, 255), override_ttl=st.none() | st.integers(1, 255),
       sport=st.integers(1, 65535), dport=st.integers(1, 65535))
def test_same_ipv6_bytes_as_scapy(flags, seq, ack, window, options, payload, flow_label, ttl, override_ttl, sport,
                                  dport):
    """Over IPv6, scapy (IPv6()/TCP()) is the byte oracle: fixed header, hop limit, flow label,
    and the TCP checksum over IPv6's pseudo-header (RFC 8200 8.1)."""
    segment = Segment(flags, seq, ack, window, payload, options)
    slow = Crafter("2001:db8::10", sport, "2001:db8:2::80", dport, 0, ttl=ttl, flow_label=flow_label)
    fast = StructCrafter("2001:db8::10", sport, "2001:db8:2::80", dport, 0, ttl=ttl, flow_label=flow_label)
    assert fast.build(segment, ttl=override_ttl) == slow.build(segment, ttl=override_ttl)


def test_ipv6_record_of_the_bytes_says_what_the_segment_said():
    """One flow label for every packet of the flow (RFC 6437), the hop limit as the record's ttl."""
    from scapy.layers.inet6 import IPv6

    segment = Segment("PA", 1000, 2000, 502, b"HEAD / HTTP/1.1\r\n\r\n")
    crafter = StructCrafter("2001:db8::10", 40000, "2001:db8:2::80", 80, 7, ttl=3)
    first, second = (parse_ip(crafter.build(segment), 0.0) for _ in range(2))
    assert (first.version, first.src, first.dst, first.flags, first.payload, first.ttl) == \
        (6, "2001:db8::10", "2001:db8:2::80", "PA", segment.payload, 3)
    assert 0 < first.flow_label == second.flow_label <= 0xFFFFF
    assert IPv6(crafter.build(segment)).fl == first.flow_label  # scapy reads what we wrote


@hsettings(max_examples=200, deadline=None)
@given(ttl=st.integers(1, 255), ident=u16, seq=u16, mark=st.integers(0, 0xFFFFF), v6=st.booleans())
def test_sweep_echo_is_scapys_echo(ttl, ident, seq, mark, v6):
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

    from probe.protocol.craft import echo_request

    if v6:
        slow = IPv6(src="2001:db8::10", dst="2001:db8:1::80", hlim=ttl, fl=mark) / ICMPv6EchoRequest(id=ident, seq=seq)
        assert echo_request("2001:db8::10", "2001:db8:1::80", ttl, ident, seq, mark) == bytes(slow)
    else:
        slow = IP(src="192.0.2.10", dst="203.0.113.80", ttl=ttl, id=mark & 0xFFFF) / ICMP(type=8, id=ident, seq=seq)
        assert echo_request("192.0.2.10", "203.0.113.80", ttl, ident, seq, mark & 0xFFFF) == bytes(slow)
