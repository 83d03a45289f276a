"""The one packet record, and the one function that makes it from IPv4 or IPv6 bytes.

Live captures and capture files both go through `parse_ip`, so the engine sees the same
records whichever way a packet arrived. The parser is struct-level (fast enough for bulk
files, and it cannot be talked into trusting a length field: every slice is bounded by
what is really there). Anything it cannot make sense of becomes `proto="other"`, never an
exception.

IPv6 fills the same fields: the hop limit is `ttl`, the traffic class `tos`, `ip_len` the
whole datagram (40 + payload length); there is no IP-ID (`ip_id` 0) and routers never
fragment (`df` True). `version` and `flow_label` say what IPv4 has no word for. ICMPv6 errors
are `proto="icmp"` records that keep ICMPv6's own type numbers, which are not IPv4's (3 is
time exceeded in ICMPv6, unreachable in ICMP): ask `is_unreachable`, `is_time_exceeded`,
`is_packet_too_big`, `is_prohibited`, not the numbers.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field, replace
from functools import lru_cache

TCP_FLAG_LETTERS = "FSRPAUEC"  # scapy's order: bit 0 is FIN, bit 7 is CWR

ICMP_UNREACHABLE = 3
ICMP_TIME_EXCEEDED = 11
ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
ICMP_FRAGMENTATION_NEEDED = 4  # code of ICMP_UNREACHABLE: IPv4's "packet too big"
ICMP_PROHIBITED_CODES = frozenset({9, 10, 13})  # net, host, communication administratively prohibited

ICMP6_UNREACHABLE, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED, ICMP6_PARAMETER_PROBLEM = 1, 2, 3, 4
ICMP6_ERROR_TYPES = frozenset({1, 2, 3, 4})
ICMP6_PROHIBITED_CODES = frozenset({1, 5, 6})  # administratively prohibited, source policy, reject route

IPV6_HEADER = 40
IPV6_SKIPPED = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options: length in 8-octet units
IPV6_FRAGMENT, IPV6_AUTH = 44, 51
MAX_EXTENSION_HEADERS = 8  # a real packet has a few; a longer chain is hostile

_OPTION_NAMES = {2: "MSS", 3: "WScale", 4: "SAckOK", 5: "SAck", 8: "Timestamp"}


@dataclass(frozen=True, slots=True)
class Quoted:
    """The start of the packet that an ICMP error quotes (what the router saw of it)."""

    src: str
    dst: str
    proto: int
    ttl: int
    ip_id: int
    tos: int
    ip_len: int
    sport: int | None = None
    dport: int | None = None
    seq: int | None = None
    version: int = 4
    flow_label: int = 0


@dataclass(frozen=True, slots=True)
class PacketRecord:
    """One IPv4 or IPv6 packet as the engine sees it. `t` is a kernel timestamp in seconds."""

    t: float
    src: str
    dst: str
    proto: str  # "tcp", "icmp" or "other"
    ttl: int
    ip_id: int
    df: bool
    tos: int
    ip_len: int
    flags: str = ""
    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    win: int = 0
    options: tuple = field(default=())
    payload: bytes = b""
    icmp_type: int | None = None
    icmp_code: int | None = None
    quoted: Quoted | None = None
    version: int = 4  # IP version; for IPv6 `ttl` is the hop limit, `ip_id` 0 and `df` True
    flow_label: int = 0  # IPv6 only
    cut: int = 0  # payload bytes the IP length announces that the capture did not keep (a snaplen)

    @property
    def length(self) -> int:
        """The payload's length on the wire: what was captured, and what a snaplen cut off."""
        return len(self.payload) + self.cut

    def has(self, letters: str) -> bool:
        return all(letter in self.flags for letter in letters)

    def option(self, name: str):
        for option_name, value in self.options:
            if option_name == name:
                return value
        return None


def flag_letters(bits: int) -> str:
    return "".join(letter for i, letter in enumerate(TCP_FLAG_LETTERS) if bits & (1 << i))


def _addr(raw: bytes) -> str:
    return "%d.%d.%d.%d" % (raw[0], raw[1], raw[2], raw[3])


@lru_cache(maxsize=4096)
def _addr6(raw: bytes) -> str:
    return str(ipaddress.IPv6Address(raw))


def address_text(raw: bytes) -> str:
    """An address as records spell it: dotted quad for 4 bytes, compressed IPv6 text for 16."""
    return _addr(raw) if len(raw) == 4 else _addr6(bytes(raw))


# --- what a record is, whichever family carried it ----------------------------------------------


def is_icmp_error(record: PacketRecord) -> bool:
    """An ICMP or ICMPv6 error message (those quote the packet that drew them)."""
    if record.proto != "icmp":
        return False
    return record.icmp_type in (ICMP6_ERROR_TYPES if record.version == 6 else ICMP_ERROR_TYPES)


def is_unreachable(record: PacketRecord) -> bool:
    """Destination unreachable: ICMP type 3, ICMPv6 type 1 (any code; IPv4's fragmentation-needed too)."""
    return record.proto == "icmp" and record.icmp_type == (
        ICMP6_UNREACHABLE if record.version == 6 else ICMP_UNREACHABLE)


def is_time_exceeded(record: PacketRecord) -> bool:
    """Time (hop limit) exceeded: ICMP type 11, ICMPv6 type 3."""
    return record.proto == "icmp" and record.icmp_type == (
        ICMP6_TIME_EXCEEDED if record.version == 6 else ICMP_TIME_EXCEEDED)


def is_packet_too_big(record: PacketRecord) -> bool:
    """ICMPv6 packet too big (type 2), or IPv4's unreachable with fragmentation needed (type 3 code 4)."""
    if record.proto != "icmp":
        return False
    if record.version == 6:
        return record.icmp_type == ICMP6_PACKET_TOO_BIG
    return record.icmp_type == ICMP_UNREACHABLE and record.icmp_code == ICMP_FRAGMENTATION_NEEDED


def is_prohibited(record: PacketRecord) -> bool:
    """An unreachable that says a filter refused the packet: ICMP type 3 code 9, 10 or 13; ICMPv6
    type 1 code 1 (administratively prohibited), 5 (source address failed policy) or 6 (reject route)."""
    if not is_unreachable(record):
        return False
    return record.icmp_code in (ICMP6_PROHIBITED_CODES if record.version == 6 else ICMP_PROHIBITED_CODES)


def parse_tcp_options(raw: bytes) -> tuple:
    """Decode TCP options into (name, value) pairs; a malformed tail ends as ("malformed", bytes)."""
    options = []
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            options.append(("EOL", None))
            break
        if kind == 1:
            options.append(("NOP", None))
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2 or i + raw[i + 1] > len(raw):
            options.append(("malformed", bytes(raw[i:])))
            break
        size = raw[i + 1]
        body = raw[i + 2:i + size]
        name = _OPTION_NAMES.get(kind, f"opt{kind}")
        if kind == 2 and size == 4:
            value = struct.unpack("!H", body)[0]
        elif kind == 3 and size == 3:
            value = body[0]
        elif kind == 4 and size == 2:
            value = True
        elif kind == 8 and size == 10:
            value = struct.unpack("!II", body)
        elif kind == 5 and (size - 2) % 8 == 0:
            value = tuple(struct.unpack("!II", body[j:j + 8]) for j in range(0, len(body), 8))
        else:
            value = bytes(body)
        options.append((name, value))
        i += size
    return tuple(options)


def _ip_header(raw: bytes) -> tuple | None:
    """(header length, tos, total length, IP-ID, fragment field, TTL, protocol), or None."""
    if len(raw) < 20 or raw[0] >> 4 != 4:
        return None
    ihl = (raw[0] & 0x0F) * 4
    if ihl < 20 or len(raw) < ihl:
        return None
    return (ihl, *struct.unpack("!xBHHHBB", raw[:10]))


def ipv6_transport(raw: bytes) -> tuple[int, int] | None:
    """(protocol, offset) of the upper-layer header of an IPv6 packet, past its extension headers
    (hop-by-hop, routing, destination options, authentication, fragment); None when there is none
    to read: not IPv6, cut short, a chain longer than MAX_EXTENSION_HEADERS, or a fragment other
    than the first (only the first carries the transport header)."""
    if len(raw) < IPV6_HEADER or raw[0] >> 4 != 6:
        return None
    protocol, offset = raw[6], IPV6_HEADER
    for _ in range(MAX_EXTENSION_HEADERS + 1):
        if protocol in IPV6_SKIPPED:
            if len(raw) < offset + 2:
                return None
            protocol, offset = raw[offset], offset + (raw[offset + 1] + 1) * 8
        elif protocol == IPV6_FRAGMENT:
            if len(raw) < offset + 8 or struct.unpack_from("!H", raw, offset + 2)[0] & 0xFFF8:
                return None
            protocol, offset = raw[offset], offset + 8
        elif protocol == IPV6_AUTH:
            if len(raw) < offset + 2:
                return None
            protocol, offset = raw[offset], offset + (raw[offset + 1] + 2) * 4
        else:
            return (protocol, offset) if offset <= len(raw) else None
    return None


def _parse_quoted(raw: bytes) -> Quoted | None:
    if raw and raw[0] >> 4 == 6:
        return _parse_quoted6(raw)
    header = _ip_header(raw)
    if header is None:
        return None
    ihl, tos, ip_len, ip_id, _frag, ttl, proto = header
    quoted = Quoted(_addr(raw[12:16]), _addr(raw[16:20]), proto, ttl, ip_id, tos, ip_len)
    return replace(quoted, **_quoted_ports(proto, raw[ihl:]))


def _quoted_ports(proto: int, l4: bytes) -> dict:
    """The ports (and for TCP the sequence number) of a quoted transport header, as far as quoted."""
    if proto not in (6, 17) or len(l4) < 4:
        return {}
    sport, dport = struct.unpack("!HH", l4[:4])
    return dict(sport=sport, dport=dport, seq=struct.unpack("!I", l4[4:8])[0] if proto == 6 and len(l4) >= 8 else None)


def _parse_quoted6(raw: bytes) -> Quoted | None:
    """The quoted start of an IPv6 packet: its header, and the ports and sequence number of the
    TCP or UDP header behind its extension headers when enough of it is quoted."""
    if len(raw) < IPV6_HEADER:
        return None
    first, payload_len, next_header, hop_limit = struct.unpack_from("!IHBB", raw)
    common = dict(src=_addr6(raw[8:24]), dst=_addr6(raw[24:40]), ttl=hop_limit, ip_id=0, tos=(first >> 20) & 0xFF,
                  ip_len=IPV6_HEADER + payload_len, version=6, flow_label=first & 0xFFFFF)
    found = ipv6_transport(raw)
    if found is None:
        return Quoted(proto=next_header, **common)
    proto, offset = found
    return Quoted(proto=proto, **common, **_quoted_ports(proto, raw[offset:]))


def _upper_layer(proto: int, l4: bytes, base: dict, icmp_proto: int, error_types: frozenset,
                 wire: int) -> PacketRecord:
    """The record of what the IP header `base` carries: TCP, the family's ICMP (errors with their
    quote), or "other"; `wire` is the transport's length as the IP header announces it."""
    if proto == 6:
        return _tcp_record(l4, base, wire)
    if proto == icmp_proto and len(l4) >= 8:
        icmp_type, icmp_code = l4[0], l4[1]
        quoted = _parse_quoted(l4[8:]) if icmp_type in error_types else None
        return PacketRecord(proto="icmp", icmp_type=icmp_type, icmp_code=icmp_code, quoted=quoted, **base)
    return PacketRecord(proto="other", **base)


def _tcp_record(l4: bytes, base: dict, wire: int) -> PacketRecord:
    """The record of a TCP segment (`l4`, bounded by the IP length) behind the IP fields `base`;
    `wire` is the segment's length as the IP header announces it (more than `l4` holds when the
    capture kept only the first bytes of each frame, as `tcpdump -s 96` does)."""
    if len(l4) < 20:
        return PacketRecord(proto="other", **base)
    sport, dport, seq, ack, offset_flags, win = struct.unpack("!HHIIHH", l4[:16])
    offset = (offset_flags >> 12) * 4
    if offset < 20 or offset > len(l4):
        return PacketRecord(proto="other", **base)
    return PacketRecord(proto="tcp", flags=flag_letters(offset_flags & 0xFF), sport=sport, dport=dport,
                        seq=seq, ack=ack, win=win, options=parse_tcp_options(l4[20:offset]),
                        payload=bytes(l4[offset:]), cut=max(0, wire - len(l4)), **base)


def _parse_ipv6(raw: bytes, t: float) -> PacketRecord | None:
    if len(raw) < IPV6_HEADER:
        return None
    first, payload_len, _next_header, hop_limit = struct.unpack_from("!IHBB", raw)
    end = min(len(raw), IPV6_HEADER + payload_len) if payload_len else len(raw)  # 0: a jumbogram
    packet = raw[:end]
    base = dict(t=t, src=_addr6(raw[8:24]), dst=_addr6(raw[24:40]), ttl=hop_limit, ip_id=0, df=True,
                tos=(first >> 20) & 0xFF, ip_len=IPV6_HEADER + payload_len if payload_len else len(raw),
                version=6, flow_label=first & 0xFFFFF)
    found = ipv6_transport(packet)
    if found is None:
        return PacketRecord(proto="other", **base)
    proto, offset = found
    return _upper_layer(proto, packet[offset:], base, 58, ICMP6_ERROR_TYPES, base["ip_len"] - offset)


def parse_ip(raw: bytes, t: float) -> PacketRecord | None:
    """Make the record for one IPv4 or IPv6 packet; None when it is neither (or its fixed header
    is cut short)."""
    if raw and raw[0] >> 4 == 6:
        return _parse_ipv6(raw, t)
    header = _ip_header(raw)
    if header is None:
        return None
    ihl, tos, ip_len, ip_id, frag, ttl, proto = header
    src, dst = _addr(raw[12:16]), _addr(raw[16:20])
    df = bool(frag & 0x4000)
    base = dict(t=t, src=src, dst=dst, ttl=ttl, ip_id=ip_id, df=df, tos=tos, ip_len=ip_len)
    end = min(len(raw), ip_len) if ip_len >= ihl else len(raw)
    l4 = raw[ihl:end]
    if frag & 0x1FFF:  # a later fragment carries no transport header
        return PacketRecord(proto="other", **base)
    return _upper_layer(proto, l4, base, 1, ICMP_ERROR_TYPES, ip_len - ihl)
