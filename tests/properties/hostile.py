"""Hostile IPv4 packets as bytes: what a stranger can put on the wire toward the client.

Every header field is drawn on its own, so that the lies combine: an IHL below 5 or past the end,
a total length that disagrees with the bytes, fragment offsets and the MF flag, any protocol
number, a TCP data offset below 5 or past the end, every one of the 256 flag combinations, TCP
options of absurd kinds and lengths, ICMP errors quoting garbage, a truncated packet or another
ICMP error; and any packet may be cut short anywhere. `packet_of`/`unrelated_to` aim the packets
at one flow or at everything but it.
"""

from __future__ import annotations

import socket
import struct

from hypothesis import strategies as st

from probe.engine.model import Flow

ERROR_TYPES = (3, 4, 5, 11, 12)
STRANGERS = ("203.0.113.7", "192.0.2.1", "198.51.100.1", "10.0.0.1", "0.0.0.0", "255.255.255.255")


def _address(text: str) -> bytes:
    return socket.inet_aton(text)


@st.composite
def tcp_options(draw) -> bytes:
    """Up to 40 bytes of options: sane ones, NOP and EOL, unknown kinds, and lengths of 0, 1, 255
    or past the end of the header."""
    chunks = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from((0, 1, 2, 3, 4, 5, 8, 28, 30, 34, 254, 255)))
        if kind in (0, 1):
            chunks.append(bytes([kind]))
            continue
        length = draw(st.one_of(st.sampled_from((0, 1, 2, 3, 4, 10, 18, 40, 255)), st.integers(0, 255)))
        body = draw(st.binary(min_size=0, max_size=max(0, min(length - 2, 38))))
        chunks.append(bytes([kind, length]) + body)
    return b"".join(chunks)[:40]


@st.composite
def tcp_header(draw, sport: int, dport: int) -> bytes:
    options = draw(tcp_options())
    options += b"\x00" * (-len(options) % 4)
    honest = 5 + len(options) // 4
    offset = draw(st.one_of(st.just(honest), st.integers(0, 15)))
    flags = draw(st.integers(0, 255))  # every combination of FSRPAUEC
    reserved = draw(st.integers(0, 15))  # the 4 reserved bits, and with them the AE (accurate ECN) bit
    header = struct.pack("!HHIIBBHHH", sport, dport, draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)),
                         (offset << 4) | reserved, flags, draw(st.integers(0, 65535)), draw(st.integers(0, 65535)),
                         draw(st.integers(0, 65535)))
    payload = draw(st.one_of(st.just(b""), st.just(b"HTTP/1.1 403 Forbidden\r\n\r\n"), st.binary(max_size=60)))
    return header + options + payload


ANY_FRAGMENT = st.one_of(
    st.just(0x4000),  # DF, the usual
    st.just(0),
    st.just(0x2000),  # MF, offset 0: a first fragment, transport header present
    st.integers(0, 0xFFFF),  # any flags (the evil bit too) and any offset
)
LATER_FRAGMENT = st.integers(0, 0xFFFF).filter(lambda field: field & 0x1FFF)  # offset 8 bytes or more


@st.composite
def ipv4(draw, src: str, dst: str, proto: int, body: bytes, fragment=ANY_FRAGMENT, honest: bool = False) -> bytes:
    """An IPv4 header in front of `body`, each field honest or not (all honest but the TTL, the
    IP-ID and the checksum with `honest`)."""
    options = b"" if honest else draw(st.one_of(st.just(b""), st.binary(min_size=1, max_size=40)))
    options += b"\x00" * (-len(options) % 4)
    honest_ihl = 5 + len(options) // 4
    ihl = honest_ihl if honest else draw(st.one_of(st.just(honest_ihl), st.integers(0, 15)))
    version = 4 if honest else draw(st.one_of(st.just(4), st.integers(0, 15)))
    honest_length = 4 * honest_ihl + len(body)
    total = honest_length if honest else draw(st.one_of(st.just(honest_length), st.sampled_from((0, 19, 20, 40, 65535)),
                                                        st.integers(0, 65535)))
    header = struct.pack("!BBHHHBBH4s4s", (version << 4) | (ihl & 0x0F), 0 if honest else draw(st.integers(0, 255)),
                         total, draw(st.integers(0, 65535)), 0x4000 if honest else draw(fragment),
                         draw(st.integers(0, 255)), proto, draw(st.integers(0, 65535)), _address(src), _address(dst))
    packet = header + options + body
    if not honest and draw(st.integers(0, 9)) == 0:  # cut short anywhere
        packet = packet[:draw(st.integers(0, len(packet)))]
    return packet


@st.composite
def icmp_body(draw, quote_src: str, quote_dst: str, sport: int, dport: int, depth: int = 0) -> bytes:
    """An ICMP message; errors quote a (hostile) packet, a truncated one, or garbage."""
    kind = draw(st.one_of(st.sampled_from(ERROR_TYPES), st.integers(0, 255)))
    header = struct.pack("!BBHI", kind, draw(st.integers(0, 255)), draw(st.integers(0, 65535)),
                         draw(st.integers(0, 2**32 - 1)))
    quote = draw(st.sampled_from(("tcp", "icmp", "garbage", "nothing") if depth == 0 else ("tcp", "garbage")))
    if quote == "tcp":
        inner = draw(ipv4(quote_src, quote_dst, 6, draw(tcp_header(sport, dport))))
        quoted = inner[:draw(st.sampled_from((8, 20, 24, 28, 40, len(inner))))]
    elif quote == "icmp":
        quoted = draw(ipv4(quote_src, quote_dst, 1, draw(icmp_body(quote_dst, quote_src, dport, sport, depth + 1))))
    elif quote == "garbage":
        quoted = draw(st.binary(max_size=60))
    else:
        quoted = b""
    return header + quoted


@st.composite
def hostile_packets(draw, addresses=STRANGERS, ports=(80, 443, 40000, 53, 0, 65535)) -> bytes:
    """Any packet among these addresses and ports: TCP, ICMP, UDP, another protocol, or not IPv4."""
    src, dst = draw(st.sampled_from(addresses)), draw(st.sampled_from(addresses))
    sport, dport = draw(st.sampled_from(ports)), draw(st.sampled_from(ports))
    kind = draw(st.sampled_from(("tcp", "tcp", "icmp", "icmp", "udp", "other", "not-ip")))
    if kind == "tcp":
        return draw(ipv4(src, dst, 6, draw(tcp_header(sport, dport))))
    if kind == "icmp":
        quote_src, quote_dst = draw(st.sampled_from(addresses)), draw(st.sampled_from(addresses))
        return draw(ipv4(src, dst, 1, draw(icmp_body(quote_src, quote_dst, sport, dport))))
    if kind == "udp":
        return draw(ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8, 0) + draw(st.binary(max_size=30))))
    if kind == "other":
        return draw(ipv4(src, dst, draw(st.integers(0, 255)), draw(st.binary(max_size=60))))
    return draw(st.binary(max_size=80))  # IPv6, ARP, a runt: whatever the capture hands over


def packet_of(flow: Flow):
    """Hostile packets among the flow's own addresses and ports (and strangers'), so that many of
    them claim to be the flow's."""
    return hostile_packets(addresses=(flow.client, flow.server) * 3 + STRANGERS[:2],
                           ports=(flow.client_port, flow.server_port) * 3 + (443, 0))


@st.composite
def unrelated_to(draw, flow: Flow) -> bytes:
    """A hostile packet that is not the flow's by construction (the test does not ask `parse_ip`
    or `Flow.belongs`, which are under test): TCP between the flow's two hosts with another port;
    a later fragment of a TCP packet with the flow's exact addresses and ports; an ICMP error that
    quotes a TCP packet between the flow's hosts on other ports, or quotes garbage; ICMP that is no
    error (echo) carrying the flow's own packet; UDP on the flow's ports; strangers; not IPv4."""
    ends = ((flow.client, flow.server, flow.client_port, flow.server_port),
            (flow.server, flow.client, flow.server_port, flow.client_port))
    src, dst, own_sport, own_dport = draw(st.sampled_from(ends))
    ports = st.sampled_from((flow.client_port, flow.server_port, 443, 0, 65535))
    kind = draw(st.sampled_from(("other-ports", "later-fragment", "icmp-other-flow", "icmp-garbage", "icmp-echo",
                                 "udp", "strangers")))
    if kind == "other-ports":
        sport, dport = draw(st.tuples(ports, ports).filter(lambda pair: pair != (own_sport, own_dport)))
        return draw(ipv4(src, dst, 6, draw(tcp_header(sport, dport))))
    if kind == "later-fragment":
        return draw(ipv4(src, dst, 6, draw(tcp_header(own_sport, own_dport)), fragment=LATER_FRAGMENT))
    router = draw(st.sampled_from((flow.server, STRANGERS[1], STRANGERS[0])))
    if kind == "icmp-other-flow":
        sport, dport = draw(st.tuples(ports, ports).filter(lambda pair: pair != (flow.client_port, flow.server_port)))
        inner = draw(ipv4(flow.client, flow.server, 6, draw(tcp_header(sport, dport)), honest=True))
        quote = inner[:draw(st.sampled_from((24, 28, 40, len(inner))))]
        icmp = struct.pack("!BBHI", draw(st.sampled_from(ERROR_TYPES)), draw(st.integers(0, 15)), 0, 0) + quote
        return draw(ipv4(router, flow.client, 1, icmp))
    if kind == "icmp-garbage":
        icmp = struct.pack("!BBHI", draw(st.sampled_from(ERROR_TYPES)), draw(st.integers(0, 15)), 0, 0)
        return draw(ipv4(router, flow.client, 1, icmp + draw(st.binary(max_size=60))))
    if kind == "icmp-echo":
        inner = draw(ipv4(flow.client, flow.server, 6, draw(tcp_header(flow.client_port, flow.server_port)),
                          honest=True))
        icmp = struct.pack("!BBHI", draw(st.sampled_from((0, 8, 13, 14))), 0, 0, 0) + inner[:28]
        return draw(ipv4(router, flow.client, 1, icmp))
    if kind == "udp":
        return draw(ipv4(src, dst, 17, struct.pack("!HHHH", own_sport, own_dport, 8, 0) + draw(st.binary(max_size=30))))
    return draw(hostile_packets())
