"""parse_ip against packets that scapy builds (and dissects), and against garbage.

Expected values come from the packets as built (what we asked scapy to put on the wire) and
from RFC 791 / 9293 / 792 layouts, and for generated packets from scapy's own dissection.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given, settings as hsettings, strategies as st
from scapy.layers.inet import ICMP, IP, TCP

from .scapycraft import Crafter
from probe.record import PacketRecord, flag_letters, parse_ip, parse_tcp_options
from probe.protocol.tcp import ClientConnection, Segment
from probe.protocol.http import HttpExchange, ResponseReader

from .conftest import CLIENT, CLIENT_PORT, ROUTER, SERVER, SERVER_PORT

LINUX_SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123456, 0)), ("NOP", None), ("WScale", 7)]


def syn_packet(**ip_fields):
    return IP(src=CLIENT, dst=SERVER, ttl=64, id=4711, flags="DF", **ip_fields) / TCP(
        sport=CLIENT_PORT, dport=SERVER_PORT, flags="S", seq=2466954207, window=64240, options=LINUX_SYN_OPTIONS)


def request_packet(ttl=64, payload=b"HEAD / HTTP/1.1\r\nHost: www.example.com\r\n\r\n"):
    return IP(src=CLIENT, dst=SERVER, ttl=ttl, id=4712, flags="DF") / TCP(
        sport=CLIENT_PORT, dport=SERVER_PORT, flags="PA", seq=2466954208, ack=1000001, window=502) / payload


# --- TCP -----------------------------------------------------------------------------------------


def test_tcp_syn_with_linux_options():
    raw = bytes(syn_packet())
    record = parse_ip(raw, 12.5)
    assert record.proto == "tcp" and record.t == 12.5
    assert (record.src, record.dst, record.sport, record.dport) == (CLIENT, SERVER, CLIENT_PORT, SERVER_PORT)
    assert (record.ttl, record.ip_id, record.df, record.ip_len) == (64, 4711, True, len(raw))
    assert (record.flags, record.seq, record.ack, record.win) == ("S", 2466954207, 0, 64240)
    assert record.options == (("MSS", 1460), ("SAckOK", True), ("Timestamp", (123456, 0)), ("NOP", None),
                              ("WScale", 7))
    assert record.option("WScale") == 7 and record.option("SAck") is None
    assert record.payload == b"" and record.length == 0


def test_tcp_with_payload_and_sack_blocks():
    packet = IP(src=SERVER, dst=CLIENT, ttl=60, id=0) / TCP(
        sport=SERVER_PORT, dport=CLIENT_PORT, flags="PA", seq=7, ack=9,
        options=[("NOP", None), ("NOP", None), ("SAck", (100, 200, 300, 400))]) / b"HTTP/1.1 200 OK\r\n"
    record = parse_ip(bytes(packet), 0.0)
    assert record.df is False and record.ip_id == 0 and record.ttl == 60
    assert record.option("SAck") == ((100, 200), (300, 400))
    assert record.payload == b"HTTP/1.1 200 OK\r\n" and record.length == 17
    assert record.has("PA") and not record.has("F")


def test_trailing_link_layer_padding_is_not_payload():
    # A 40-byte packet padded to Ethernet's 46-byte minimum: the IP total length says where it ends.
    raw = bytes(IP(src=SERVER, dst=CLIENT) / TCP(flags="R", seq=5)) + b"\x00" * 6
    assert parse_ip(raw, 0.0).payload == b""


def test_ip_total_length_bounds_the_payload():
    raw = bytes(request_packet(payload=b"0123456789"))
    shortened = raw[:2] + struct.pack("!H", len(raw) - 4) + raw[4:]
    assert parse_ip(shortened, 0.0).payload == b"012345"


@pytest.mark.parametrize("flags", ["F", "S", "R", "P", "A", "U", "E", "C", "SA", "FA", "RA", "PA", "FSRPAUEC"])
def test_flag_letters_in_scapy_order(flags):
    raw = bytes(IP() / TCP(flags=flags))
    assert parse_ip(raw, 0.0).flags == flags  # the parametrized strings are already in FSRPAUEC order


def test_flag_letters_bit_positions():
    # RFC 9293 3.1 / RFC 3168: FIN is bit 0, CWR bit 7.
    assert flag_letters(0x01) == "F" and flag_letters(0x02) == "S" and flag_letters(0x04) == "R"
    assert flag_letters(0x08) == "P" and flag_letters(0x10) == "A" and flag_letters(0x20) == "U"
    assert flag_letters(0x40) == "E" and flag_letters(0x80) == "C" and flag_letters(0x12) == "SA"


def test_malformed_option_tail_is_kept_not_raised():
    assert parse_tcp_options(bytes([2, 4, 5, 0xB4, 8, 10, 0, 0])) == (("MSS", 1460), ("malformed", bytes([8, 10, 0, 0])))
    assert parse_tcp_options(bytes([3, 1, 7])) == (("malformed", bytes([3, 1, 7])),)  # length < 2
    assert parse_tcp_options(bytes([1, 0, 2, 4, 5, 0xB4])) == (("NOP", None), ("EOL", None))  # EOL ends the list


# --- ICMP ----------------------------------------------------------------------------------------


def test_icmp_time_exceeded_quoting_our_request():
    quoted_request = bytes(request_packet(ttl=1))
    packet = IP(src=ROUTER, dst=CLIENT, ttl=64, id=999) / ICMP(type=11, code=0) / quoted_request[:28]
    record = parse_ip(bytes(packet), 3.0)
    assert record.proto == "icmp" and (record.icmp_type, record.icmp_code) == (11, 0)
    assert (record.src, record.dst, record.ttl) == (ROUTER, CLIENT, 64)
    quoted = record.quoted
    assert (quoted.src, quoted.dst, quoted.proto) == (CLIENT, SERVER, 6)
    assert (quoted.sport, quoted.dport, quoted.seq) == (CLIENT_PORT, SERVER_PORT, 2466954208)
    assert quoted.ttl == 1 and quoted.ip_id == 4712 and quoted.ip_len == len(quoted_request)


def test_icmp_unreachable_admin_prohibited_quoting_the_whole_packet():
    quoted_request = bytes(request_packet(ttl=62))
    packet = IP(src=ROUTER, dst=CLIENT, ttl=63) / ICMP(type=3, code=13) / quoted_request
    record = parse_ip(bytes(packet), 0.0)
    assert (record.icmp_type, record.icmp_code, record.ttl) == (3, 13, 63)
    assert (record.quoted.sport, record.quoted.dport, record.quoted.seq, record.quoted.ttl) == (
        CLIENT_PORT, SERVER_PORT, 2466954208, 62)
    assert record.flags == "" and record.payload == b""


def test_icmp_quote_of_only_four_transport_bytes_has_ports_but_no_seq():
    quoted_request = bytes(request_packet())
    packet = IP(src=ROUTER, dst=CLIENT) / ICMP(type=3, code=1) / quoted_request[:24]
    quoted = parse_ip(bytes(packet), 0.0).quoted
    assert (quoted.sport, quoted.dport, quoted.seq) == (CLIENT_PORT, SERVER_PORT, None)


def test_icmp_quote_with_ip_options_uses_the_quoted_ihl():
    inner = IP(src=CLIENT, dst=SERVER, ttl=5, options=b"\x01\x01\x01\x00") / TCP(sport=1234, dport=80, seq=42)
    packet = IP(src=ROUTER, dst=CLIENT) / ICMP(type=11, code=0) / bytes(inner)[:32]
    quoted = parse_ip(bytes(packet), 0.0).quoted
    assert (quoted.sport, quoted.dport, quoted.seq, quoted.ttl) == (1234, 80, 42, 5)


def test_icmp_echo_reply_quotes_nothing():
    record = parse_ip(bytes(IP(src=SERVER, dst=CLIENT) / ICMP(type=0) / (b"\x45" + b"\x00" * 40)), 0.0)
    assert record.proto == "icmp" and record.icmp_type == 0 and record.quoted is None


def test_icmp_error_quoting_garbage_has_no_quote():
    record = parse_ip(bytes(IP(src=ROUTER, dst=CLIENT) / ICMP(type=3, code=3) / (b"\x60" + b"\x00" * 30)), 0.0)
    assert record.proto == "icmp" and record.quoted is None


# --- what is not a TCP or ICMP packet ------------------------------------------------------------


def test_ipv6_with_a_zero_tcp_data_offset_is_other():
    ipv6_header = bytes([0x60, 0, 0, 0, 0, 20, 6, 64]) + bytes(32)
    record = parse_ip(ipv6_header + bytes(20), 0.0)
    assert (record.proto, record.version, record.ttl) == ("other", 6, 64)  # IPv6 itself: tests/unit/test_record_ipv6.py


@pytest.mark.parametrize("size", [0, 1, 19])
def test_truncated_ip_header(size):
    assert parse_ip(bytes(syn_packet())[:size], 0.0) is None


@pytest.mark.parametrize("ihl", [0, 1, 4])
def test_ihl_below_five_words(ihl):
    raw = bytearray(bytes(syn_packet()))
    raw[0] = 0x40 | ihl
    assert parse_ip(bytes(raw), 0.0) is None


def test_ihl_beyond_the_packet():
    raw = bytearray(bytes(IP(src=CLIENT, dst=SERVER, proto=6)))  # 20 bytes, no transport
    raw[0] = 0x46  # 24-byte header claimed
    assert parse_ip(bytes(raw), 0.0) is None


def test_ip_options_shift_the_tcp_header():
    packet = IP(src=CLIENT, dst=SERVER, options=b"\x01\x01\x01\x00") / TCP(flags="S", seq=77, sport=1, dport=2)
    record = parse_ip(bytes(packet), 0.0)
    assert (record.proto, record.seq, record.sport, record.dport, record.flags) == ("tcp", 77, 1, 2, "S")


@pytest.mark.parametrize("size", [21, 39])
def test_truncated_tcp_header_is_other(size):
    record = parse_ip(bytes(syn_packet())[:size], 0.0)
    assert record.proto == "other" and (record.src, record.dst) == (CLIENT, SERVER)


@pytest.mark.parametrize("dataofs", [0, 4])
def test_tcp_data_offset_below_five_words_is_other(dataofs):
    assert parse_ip(bytes(IP() / TCP(dataofs=dataofs)), 0.0).proto == "other"


def test_tcp_data_offset_beyond_the_segment_is_other():
    assert parse_ip(bytes(IP() / TCP(dataofs=15) / b"abc"), 0.0).proto == "other"


def test_first_fragment_still_has_its_tcp_header():
    record = parse_ip(bytes(IP(flags="MF", frag=0) / TCP(flags="PA", seq=9) / (b"x" * 100)), 0.0)
    assert record.proto == "tcp" and record.seq == 9 and not record.df


def test_later_fragment_is_other_even_if_it_looks_like_tcp():
    looks_like_tcp = bytes(TCP(flags="R", seq=5))
    record = parse_ip(bytes(IP(proto=6, frag=185) / looks_like_tcp), 0.0)
    assert record.proto == "other" and record.flags == ""


def test_other_protocols_are_other():
    record = parse_ip(bytes(IP(src=CLIENT, dst=SERVER, proto=17) / (b"\x00" * 8)), 0.0)
    assert record.proto == "other" and record.src == CLIENT and record.dst == SERVER


# --- properties ----------------------------------------------------------------------------------

option_strategy = st.one_of(
    st.tuples(st.just("MSS"), st.integers(0, 65535)),
    st.tuples(st.just("WScale"), st.integers(0, 14)),
    st.tuples(st.just("SAckOK"), st.just(b"")),
    st.tuples(st.just("Timestamp"), st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))),
    st.tuples(st.just("NOP"), st.none()),
    st.tuples(st.just("SAck"), st.lists(st.integers(0, 2**32 - 1), min_size=2, max_size=6)
              .filter(lambda edges: len(edges) % 2 == 0).map(tuple)),
)
OPTION_SIZE = {"MSS": 4, "WScale": 3, "SAckOK": 2, "Timestamp": 10, "NOP": 1}


def option_size(option) -> int:
    name, value = option
    return 2 + 4 * len(value) if name == "SAck" else OPTION_SIZE[name]


@st.composite
def tcp_packets(draw):
    options = draw(st.lists(option_strategy, max_size=6))
    assume(sum(option_size(o) for o in options) <= 40)
    ip = IP(src=draw(st.sampled_from([CLIENT, SERVER, "10.1.2.3"])), dst=draw(st.sampled_from([CLIENT, SERVER])),
            ttl=draw(st.integers(0, 255)), id=draw(st.integers(0, 65535)), tos=draw(st.integers(0, 255)),
            flags=draw(st.sampled_from(["", "DF"])))
    tcp = TCP(sport=draw(st.integers(0, 65535)), dport=draw(st.integers(0, 65535)), flags=draw(st.integers(0, 255)),
              seq=draw(st.integers(0, 2**32 - 1)), ack=draw(st.integers(0, 2**32 - 1)),
              window=draw(st.integers(0, 65535)), options=options)
    payload = draw(st.binary(max_size=64))
    return ip / tcp / payload if payload else ip / tcp


def normalized(options) -> list:
    """scapy's spelling of options, in the record's: SAckOK is True, SAck a tuple of (left, right)."""
    result = []
    for name, value in options:
        if name == "SAckOK":
            value = True
        elif name == "SAck":
            value = tuple(zip(value[0::2], value[1::2]))
        result.append((name, value))
    return result


@hsettings(max_examples=300)
@given(tcp_packets())
def test_parse_ip_agrees_with_scapy(packet):
    raw = bytes(packet)
    record = parse_ip(raw, 1.0)
    dissected = IP(raw)
    assert record.proto == "tcp"
    assert record.flags == str(dissected[TCP].flags)  # scapy's letters, FSRPAUEC order
    assert (record.src, record.dst) == (dissected.src, dissected.dst)
    assert (record.sport, record.dport) == (dissected[TCP].sport, dissected[TCP].dport)
    assert (record.seq, record.ack, record.win) == (dissected[TCP].seq, dissected[TCP].ack, dissected[TCP].window)
    assert (record.ttl, record.ip_id, record.tos) == (dissected.ttl, dissected.id, dissected.tos)
    assert record.df == bool(dissected.flags.DF)
    assert record.payload == bytes(dissected[TCP].payload)
    assert list(record.options) == normalized(dissected[TCP].options)


@given(st.binary(max_size=200), st.floats(allow_nan=False))
def test_parse_ip_never_raises_on_arbitrary_bytes(raw, t):
    record = parse_ip(raw, t)
    assert record is None or isinstance(record, PacketRecord)


@st.composite
def mutated_packets(draw):
    kind = draw(st.sampled_from(["syn", "request", "icmp"]))
    if kind == "syn":
        raw = bytes(syn_packet())
    elif kind == "request":
        raw = bytes(request_packet())
    else:
        raw = bytes(IP(src=ROUTER, dst=CLIENT) / ICMP(type=11) / bytes(request_packet(ttl=1))[:28])
    raw = bytearray(raw)
    for _ in range(draw(st.integers(0, 6))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw[:draw(st.integers(0, len(raw)))])


@hsettings(max_examples=500)
@given(mutated_packets())
def test_parse_ip_never_raises_on_mutated_packets_and_never_reads_past_them(raw):
    record = parse_ip(raw, 0.0)
    if record is None:
        return
    assert record.proto in ("tcp", "icmp", "other")
    if record.proto == "tcp":
        start = (raw[0] & 0x0F) * 4 + (raw[(raw[0] & 0x0F) * 4 + 12] >> 4) * 4  # IP header + TCP header
        assert start + len(record.payload) <= len(raw)
        assert record.payload == raw[start:start + len(record.payload)]


# --- the crafting layer writes what the Segment says ---------------------------------------------


def test_crafter_builds_the_segment_that_parse_ip_reads_back():
    connection = ClientConnection(CLIENT, CLIENT_PORT, SERVER, SERVER_PORT,
                                  HttpExchange(b"", ResponseReader("HEAD", "h", 80, "/")), isn=2**32 - 1)
    [syn] = connection.start(0.0)
    crafter = Crafter(CLIENT, CLIENT_PORT, SERVER, SERVER_PORT, first_ip_id=0xFFFF, ttl=7)
    first = parse_ip(crafter.build(syn), 0.0)
    assert (first.flags, first.seq, first.ack, first.win) == ("S", syn.seq, 0, syn.window)
    assert [name for name, _ in first.options] == [name for name, _ in syn.options]
    assert first.option("MSS") == 1460 and first.option("Timestamp") == syn.options[2][1]
    assert (first.src, first.dst, first.sport, first.dport) == (CLIENT, SERVER, CLIENT_PORT, SERVER_PORT)
    assert first.ttl == 7 and first.df and first.ip_id == 0xFFFF
    data = parse_ip(crafter.build(Segment("PA", 5, 6, 501, b"GET"), ttl=3), 0.0)
    assert data.ip_id == 0  # a per-flow counter that wraps at 16 bits
    assert (data.ttl, data.flags, data.payload) == (3, "PA", b"GET")
