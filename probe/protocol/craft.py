"""Turn `Segment`s (and the sweeps' ICMP echoes) into IPv4 or IPv6 packets with `struct`: the
one crafter of everything the probe sends. It makes scapy's bytes, about fifty times faster
than scapy (whose millisecond per packet would dominate a batch of a thousand targets);
scapy stays as the test oracle (tests/unit/scapycraft.py). Builds bytes; sends nothing.

The bytes are scapy's, field for field: IPv4 header without options (DF set, TOS 0, a
per-flow IP-ID counter), or the IPv6 fixed header (RFC 8200 3: traffic class 0, one flow
label for the whole flow as RFC 6437 asks and Linux does, next header TCP, the hop limit where
IPv4 has its TTL, no extension headers); TCP header with the urgent pointer 0, options encoded
in the order given and padded with zero bytes (EOL) to a multiple of four, checksums over the
result (IPv6's pseudo-header: RFC 8200 8.1). `tests/unit/test_fastcraft.py` holds it to
scapy's bytes over many segments and echoes.
"""

from __future__ import annotations

import os
import socket
import struct

from probe.record import TCP_FLAG_LETTERS
from probe.protocol.tcp import Segment

_FLAG_BITS = {letter: 1 << i for i, letter in enumerate(TCP_FLAG_LETTERS)}
_DF = 0x4000


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _option_bytes(name: str, value) -> bytes:
    if name == "NOP":
        return b"\x01"
    if name == "EOL":
        return b"\x00"
    if name == "MSS":
        return struct.pack("!BBH", 2, 4, value)
    if name == "WScale":
        return struct.pack("!BBB", 3, 3, value)
    if name == "SAckOK":
        return b"\x04\x02" + bytes(value or b"")
    if name == "Timestamp":
        return struct.pack("!BBII", 8, 10, *value)
    raise ValueError(f"TCP option {name!r} is not supported by the struct crafter")


def tcp_options(options) -> bytes:
    """Options as scapy encodes them: in order, zero-padded to a multiple of four bytes."""
    raw = b"".join(_option_bytes(name, value) for name, value in options)
    return raw + b"\x00" * (-len(raw) % 4)


def flag_bits(flags: str) -> int:
    return sum(_FLAG_BITS[letter] for letter in set(flags))


def new_flow_label() -> int:
    """A random non-zero 20-bit flow label for one flow (RFC 6437 3: uniformly distributed,
    0 meaning unlabelled; Linux labels every flow so by default, net.ipv6.auto_flowlabels)."""
    return int.from_bytes(os.urandom(3), "big") % 0xFFFFF + 1


class StructCrafter:
    """Drop-in for `Crafter`: builds the packets of one flow the way Linux would. An IPv6 flow
    (`src` holds a colon) carries `flow_label` (a random one if None) instead of an IP-ID."""

    def __init__(self, src: str, sport: int, dst: str, dport: int, first_ip_id: int, ttl: int = 64,
                 flow_label: int | None = None):
        self.src, self.sport, self.dst, self.dport = src, sport, dst, dport
        self.next_ip_id = first_ip_id & 0xFFFF
        self.ttl = ttl
        self.version = 6 if ":" in src else 4
        family = socket.AF_INET6 if self.version == 6 else socket.AF_INET
        self._src_raw, self._dst_raw = socket.inet_pton(family, src), socket.inet_pton(family, dst)
        self.flow_label = (new_flow_label() if flow_label is None else flow_label) if self.version == 6 else 0

    def build(self, segment: Segment, ttl: int | None = None) -> bytes:
        options = tcp_options(segment.options)
        header_len = 20 + len(options)
        tcp = struct.pack("!HHIIBBHHH", self.sport, self.dport, segment.seq, segment.ack, (header_len // 4) << 4,
                          flag_bits(segment.flags), segment.window, 0, 0) + options + segment.payload
        if self.version == 6:
            pseudo = self._src_raw + self._dst_raw + struct.pack("!I3xB", len(tcp), socket.IPPROTO_TCP)
        else:
            pseudo = self._src_raw + self._dst_raw + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
        if self.version == 6:
            return struct.pack("!IHBB16s16s", (6 << 28) | self.flow_label, len(tcp), socket.IPPROTO_TCP,
                               ttl or self.ttl, self._src_raw, self._dst_raw) + tcp
        ip_id = self.next_ip_id
        self.next_ip_id = (self.next_ip_id + 1) & 0xFFFF
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ip_id, _DF, ttl or self.ttl, socket.IPPROTO_TCP, 0,
                         self._src_raw, self._dst_raw)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        return ip + tcp


ICMP_ECHO_REQUEST, ICMPV6_ECHO_REQUEST = 8, 128


def echo_request(src: str, dst: str, ttl: int, ident: int, seq: int, mark: int) -> bytes:
    """An ICMP echo request with no payload, as scapy builds `IP(id=mark)/ICMP(id, seq)`
    (TOS 0, no DF) or `IPv6(fl=mark)/ICMPv6EchoRequest(id, seq)` (RFC 4443 4.1; its checksum
    over the pseudo-header, RFC 8200 8.1). `mark` is what tells the sweep's probes apart in a
    quoted header: the IP-ID over IPv4, the flow label over IPv6."""
    if ":" in dst:
        src_raw, dst_raw = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
        icmp = struct.pack("!BBHHH", ICMPV6_ECHO_REQUEST, 0, 0, ident, seq)
        pseudo = src_raw + dst_raw + struct.pack("!I3xB", len(icmp), socket.IPPROTO_ICMPV6)
        icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
        return struct.pack("!IHBB16s16s", (6 << 28) | (mark & 0xFFFFF), len(icmp), socket.IPPROTO_ICMPV6, ttl,
                           src_raw, dst_raw) + icmp
    icmp = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), mark & 0xFFFF, 0, ttl, socket.IPPROTO_ICMP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:] + icmp
