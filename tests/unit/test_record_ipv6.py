"""parse_ip over IPv6: packets that scapy builds (and dissects) as the oracle, extension headers,
ICMPv6 errors and their quotes, the family-aware ICMP helpers, and garbage (never an exception).

Expected values come from the packets as built and from RFC 8200 (IPv6 and its extension headers)
and RFC 4443 (ICMPv6) layouts.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings as hsettings, strategies as st
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoRequest, ICMPv6PacketTooBig, ICMPv6ParamProblem,
                                ICMPv6TimeExceeded, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting)
from scapy.layers.ipsec import AH

from probe.record import (PacketRecord, ipv6_transport, is_icmp_error, is_packet_too_big, is_prohibited,
                          is_time_exceeded, is_unreachable, parse_ip)

CLIENT6, SERVER6, ROUTER6 = "2001:db8::10", "2001:db8:0:1::80", "2001:db8::1"
CLIENT_PORT, SERVER_PORT = 40000, 80
OPTIONS = [("MSS", 1440), ("SAckOK", b""), ("Timestamp", (123456, 0)), ("NOP", None), ("WScale", 7)]


def syn6(**ip_fields):
    fields = dict(src=CLIENT6, dst=SERVER6, hlim=64, tc=0x28, fl=0xABCDE) | ip_fields
    return IPv6(**fields) / TCP(sport=CLIENT_PORT, dport=SERVER_PORT, flags="S", seq=2466954207, window=64800,
                                options=OPTIONS)


def request6(hlim=64, payload=b"HEAD / HTTP/1.1\r\nHost: www.example.com\r\n\r\n"):
    return IPv6(src=CLIENT6, dst=SERVER6, hlim=hlim, fl=0x12345) / TCP(
        sport=CLIENT_PORT, dport=SERVER_PORT, flags="PA", seq=2466954208, ack=1000001, window=502) / payload


# --- TCP ------------------------------------------------------------------------------------------


def test_tcp_syn_over_ipv6_fills_the_same_fields():
    raw = bytes(syn6())
    record = parse_ip(raw, 7.25)
    assert (record.proto, record.version, record.t) == ("tcp", 6, 7.25)
    assert (record.src, record.dst, record.sport, record.dport) == (CLIENT6, SERVER6, CLIENT_PORT, SERVER_PORT)
    assert (record.ttl, record.tos, record.flow_label) == (64, 0x28, 0xABCDE)
    assert (record.ip_id, record.df, record.ip_len) == (0, True, len(raw))
    assert (record.flags, record.seq, record.ack, record.win) == ("S", 2466954207, 0, 64800)
    assert record.options == (("MSS", 1440), ("SAckOK", True), ("Timestamp", (123456, 0)), ("NOP", None),
                              ("WScale", 7))


def test_addresses_are_compressed_text_as_ipaddress_spells_them():
    record = parse_ip(bytes(syn6(src="2001:0db8:0000:0000:0000:0000:0000:0010", dst="2001:DB8:0:1:0:0:0:80")), 0.0)
    assert (record.src, record.dst) == ("2001:db8::10", "2001:db8:0:1::80")


@hsettings(max_examples=60, deadline=None)
@given(src=st.binary(min_size=16, max_size=16), dst=st.binary(min_size=16, max_size=16))
def test_any_address_reads_as_ipaddress_reads_it(src, dst):
    raw = bytes(IPv6(src=str(ipaddress.IPv6Address(src)), dst=str(ipaddress.IPv6Address(dst))) / TCP())
    record = parse_ip(raw, 0.0)
    assert (record.src, record.dst) == (str(ipaddress.IPv6Address(src)), str(ipaddress.IPv6Address(dst)))


def test_payload_is_bounded_by_the_payload_length_not_by_trailing_bytes():
    raw = bytes(request6(payload=b"012345")) + b"\x00" * 12  # Ethernet padding after the datagram
    record = parse_ip(raw, 0.0)
    assert record.payload == b"012345" and record.ip_len == len(raw) - 12


def test_a_captured_packet_cut_short_keeps_what_is_there():
    raw = bytes(request6(payload=b"0123456789"))[:-4]  # snap length shorter than the packet
    assert parse_ip(raw, 0.0).payload == b"012345"


@pytest.mark.parametrize("chain", [
    IPv6ExtHdrHopByHop(),
    IPv6ExtHdrDestOpt(),
    IPv6ExtHdrRouting(addresses=["2001:db8::99"]),
    IPv6ExtHdrFragment(offset=0, m=1, id=77),
    IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=["2001:db8::99"]) / IPv6ExtHdrDestOpt(),
    IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(offset=0, m=1) / IPv6ExtHdrDestOpt(),
], ids=["hop-by-hop", "destination", "routing", "first-fragment", "three", "four"])
def test_extension_headers_are_skipped_to_reach_tcp(chain):
    tcp = TCP(sport=CLIENT_PORT, dport=SERVER_PORT, flags="PA", seq=99, ack=7) / b"data"
    packet = IPv6(src=CLIENT6, dst=SERVER6, hlim=61) / chain / tcp
    raw = bytes(packet)
    record = parse_ip(raw, 0.0)
    assert record.proto == "tcp", packet.summary()
    assert (record.sport, record.dport, record.seq, record.ack, record.payload) == (CLIENT_PORT, SERVER_PORT, 99, 7,
                                                                                   b"data")
    assert ipv6_transport(raw) == (6, len(raw) - len(tcp))


def test_authentication_header_is_skipped_in_four_octet_units():
    tcp = TCP(sport=CLIENT_PORT, dport=SERVER_PORT, flags="S", seq=5)
    raw = bytes(IPv6(src=CLIENT6, dst=SERVER6) / AH(nh=6, payloadlen=4, spi=1, seq=1, icv=b"\x00" * 12) / tcp)
    assert ipv6_transport(raw) == (6, len(raw) - len(tcp))
    assert parse_ip(raw, 0.0).seq == 5


def test_a_later_fragment_carries_no_tcp_header():
    raw = bytes(IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrFragment(offset=185, m=0, nh=6) / (b"\x00" * 40))
    record = parse_ip(raw, 0.0)
    assert (record.proto, record.version, record.src) == ("other", 6, CLIENT6)
    assert ipv6_transport(raw) is None


def test_an_endless_chain_of_extension_headers_is_other():
    chain = IPv6ExtHdrDestOpt()
    for _ in range(20):
        chain = chain / IPv6ExtHdrDestOpt()
    raw = bytes(IPv6(src=CLIENT6, dst=SERVER6) / chain / TCP())
    assert parse_ip(raw, 0.0).proto == "other" and ipv6_transport(raw) is None


@pytest.mark.parametrize("cut", range(40, 80))
def test_every_cut_through_the_extension_headers_is_other_or_tcp_never_an_error(cut):
    raw = bytes(IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() /
                TCP(sport=1, dport=2))[:cut]
    record = parse_ip(raw, 0.0)
    assert record.proto == ("tcp" if cut >= 56 + 20 else "other") and record.version == 6


def test_an_ipv6_header_cut_short_is_not_a_packet():
    assert parse_ip(bytes(syn6())[:39], 0.0) is None


def test_udp_over_ipv6_is_other():
    raw = bytes(IPv6(src=CLIENT6, dst=SERVER6, nh=17) / (b"\x00\x35\x00\x35\x00\x08\x00\x00"))
    assert parse_ip(raw, 0.0).proto == "other"


# --- ICMPv6 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer, icmp_type, code", [
    (ICMPv6DestUnreach(code=1), 1, 1),
    (ICMPv6DestUnreach(code=4), 1, 4),
    (ICMPv6PacketTooBig(mtu=1280), 2, 0),
    (ICMPv6TimeExceeded(code=0), 3, 0),
    (ICMPv6ParamProblem(code=0, ptr=6), 4, 0),
])
def test_icmpv6_errors_keep_their_numbers_and_quote_the_tcp_packet(layer, icmp_type, code):
    sent = request6(hlim=3)
    packet = IPv6(src=ROUTER6, dst=CLIENT6, hlim=62) / layer / bytes(sent)[:1232]
    record = parse_ip(bytes(packet), 4.0)
    assert (record.proto, record.version, record.icmp_type, record.icmp_code) == ("icmp", 6, icmp_type, code)
    assert (record.src, record.ttl) == (ROUTER6, 62)
    quoted = record.quoted
    assert (quoted.src, quoted.dst, quoted.sport, quoted.dport) == (CLIENT6, SERVER6, CLIENT_PORT, SERVER_PORT)
    assert (quoted.seq, quoted.ttl, quoted.proto, quoted.version, quoted.flow_label) == (2466954208, 3, 6, 6,
                                                                                         0x12345)
    assert quoted.ip_len == len(sent) and quoted.ip_id == 0


def test_icmpv6_quote_with_an_extension_header_and_only_the_tcp_ports():
    sent = bytes(IPv6(src=CLIENT6, dst=SERVER6, hlim=2) / IPv6ExtHdrDestOpt() /
                 TCP(sport=CLIENT_PORT, dport=SERVER_PORT, seq=42))
    record = parse_ip(bytes(IPv6(src=ROUTER6, dst=CLIENT6) / ICMPv6TimeExceeded() / sent[:40 + 8 + 6]), 0.0)
    quoted = record.quoted
    assert (quoted.sport, quoted.dport, quoted.seq, quoted.proto) == (CLIENT_PORT, SERVER_PORT, None, 6)


def test_icmpv6_quote_cut_inside_the_ipv6_header_is_no_quote():
    raw = bytes(IPv6(src=ROUTER6, dst=CLIENT6) / ICMPv6DestUnreach() / bytes(request6())[:30])
    record = parse_ip(raw, 0.0)
    assert record.proto == "icmp" and record.quoted is None


def test_icmpv6_echo_is_icmp_without_a_quote():
    record = parse_ip(bytes(IPv6(src=SERVER6, dst=CLIENT6) / ICMPv6EchoRequest() / bytes(request6())), 0.0)
    assert (record.proto, record.icmp_type, record.quoted) == ("icmp", 128, None)


# --- the family-aware helpers ---------------------------------------------------------------------


def icmp4(icmp_type: int, code: int = 0) -> PacketRecord:
    return parse_ip(bytes(IP(src="192.0.2.1", dst="192.0.2.10") / ICMP(type=icmp_type, code=code) /
                          bytes(IP(src="192.0.2.10", dst="198.51.100.80") / TCP())[:28]), 0.0)


def icmp6(layer) -> PacketRecord:
    return parse_ip(bytes(IPv6(src=ROUTER6, dst=CLIENT6) / layer / bytes(request6())[:60]), 0.0)


def test_ipv6_numbers_are_not_read_as_ipv4_numbers():
    time_exceeded6 = icmp6(ICMPv6TimeExceeded())  # type 3, which is "unreachable" in ICMP
    assert time_exceeded6.icmp_type == 3
    assert is_time_exceeded(time_exceeded6) and not is_unreachable(time_exceeded6)
    unreachable4 = icmp4(3, 3)
    assert is_unreachable(unreachable4) and not is_time_exceeded(unreachable4)
    assert is_time_exceeded(icmp4(11)) and not is_unreachable(icmp4(11))
    unreachable6 = icmp6(ICMPv6DestUnreach(code=4))
    assert is_unreachable(unreachable6) and not is_time_exceeded(unreachable6)
    assert not is_unreachable(icmp4(1)) and not is_time_exceeded(icmp6(ICMPv6DestUnreach()))


def test_errors_too_big_and_prohibited_in_both_families():
    assert all(is_icmp_error(r) for r in (icmp4(3), icmp4(11), icmp4(12), icmp6(ICMPv6DestUnreach()),
                                          icmp6(ICMPv6PacketTooBig()), icmp6(ICMPv6TimeExceeded()),
                                          icmp6(ICMPv6ParamProblem())))
    assert not is_icmp_error(icmp4(0)) and not is_icmp_error(icmp6(ICMPv6EchoRequest()))
    assert is_packet_too_big(icmp6(ICMPv6PacketTooBig())) and is_packet_too_big(icmp4(3, 4))
    assert not is_packet_too_big(icmp4(3, 3)) and not is_packet_too_big(icmp6(ICMPv6DestUnreach(code=4)))
    assert is_prohibited(icmp4(3, 13)) and is_prohibited(icmp4(3, 10)) and not is_prohibited(icmp4(3, 3))
    assert is_prohibited(icmp6(ICMPv6DestUnreach(code=1))) and not is_prohibited(icmp6(ICMPv6DestUnreach(code=4)))
    assert not is_prohibited(icmp6(ICMPv6TimeExceeded(code=1)))  # code 1 of another type
    tcp = parse_ip(bytes(syn6()), 0.0)
    assert not any(f(tcp) for f in (is_icmp_error, is_unreachable, is_time_exceeded, is_packet_too_big,
                                    is_prohibited))


# --- garbage --------------------------------------------------------------------------------------


@hsettings(max_examples=400, deadline=None)
@given(body=st.binary(max_size=160), first=st.integers(0x60, 0x6F))
def test_any_bytes_with_version_six_give_a_record_or_none_never_an_exception(body, first):
    raw = bytes([first]) + body
    record = parse_ip(raw, 0.0)
    assert record is None if len(raw) < 40 else record.version == 6


@hsettings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_icmpv6_errors_never_raise(data):
    raw = bytearray(bytes(IPv6(src=ROUTER6, dst=CLIENT6) / ICMPv6TimeExceeded() /
                          bytes(IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrHopByHop() / TCP())))
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[:data.draw(st.integers(0, len(raw)))]
    record = parse_ip(bytes(raw), 0.0)
    assert record is None or isinstance(record, PacketRecord)


def test_a_hop_by_hop_length_that_points_past_the_end_is_other():
    raw = bytearray(bytes(IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrHopByHop() / TCP()))
    raw[41] = 255  # (255 + 1) * 8 bytes of options claimed
    assert parse_ip(bytes(raw), 0.0).proto == "other"
    struct.pack_into("!H", raw, 4, 0)  # payload length 0 (a jumbogram's): read to the end, still bounded
    assert parse_ip(bytes(raw), 0.0).proto == "other"
