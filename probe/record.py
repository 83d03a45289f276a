"""The one packet record, and the one function that makes it from IPv4 bytes.

Live captures and capture files both go through `parse_ip`, so the engine sees the same
records whichever way a packet arrived. The parser is struct-level (fast enough for bulk
files, and it cannot be talked into trusting a length field: every slice is bounded by
what is really there). Anything it cannot make sense of becomes `proto="other"`, never an
exception.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

TCP_FLAG_LETTERS = "FSRPAUEC"  # scapy's order: bit 0 is FIN, bit 7 is CWR

ICMP_UNREACHABLE = 3
ICMP_TIME_EXCEEDED = 11
ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})

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


@dataclass(frozen=True, slots=True)
class PacketRecord:
    """One IPv4 packet as the engine sees it. `t` is a kernel timestamp in seconds."""

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

    @property
    def length(self) -> int:
        return len(self.payload)

    def has(self, letters: str) -> bool:
        return all(letter in self.flags for letter in letters)

    def option(self, name: str):
        for option_name, value in self.options:
            if option_name == name:
                return value
        return None


def is_time_exceeded(record: PacketRecord) -> bool:
    """An ICMP (type 11) or ICMPv6 (type 3) time exceeded message."""
    return record.proto == "icmp" and record.icmp_type == (3 if record.version == 6 else ICMP_TIME_EXCEEDED)


def is_unreachable(record: PacketRecord) -> bool:
    """An ICMP (type 3) or ICMPv6 (type 1) destination unreachable message."""
    return record.proto == "icmp" and record.icmp_type == (1 if record.version == 6 else ICMP_UNREACHABLE)


def flag_letters(bits: int) -> str:
    return "".join(letter for i, letter in enumerate(TCP_FLAG_LETTERS) if bits & (1 << i))


def _addr(raw: bytes) -> str:
    return "%d.%d.%d.%d" % (raw[0], raw[1], raw[2], raw[3])


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


def _parse_quoted(raw: bytes) -> Quoted | None:
    header = _ip_header(raw)
    if header is None:
        return None
    ihl, tos, ip_len, ip_id, _frag, ttl, proto = header
    quoted = Quoted(_addr(raw[12:16]), _addr(raw[16:20]), proto, ttl, ip_id, tos, ip_len)
    l4 = raw[ihl:]
    if proto in (6, 17) and len(l4) >= 4:
        sport, dport = struct.unpack("!HH", l4[:4])
        seq = struct.unpack("!I", l4[4:8])[0] if proto == 6 and len(l4) >= 8 else None
        quoted = Quoted(quoted.src, quoted.dst, proto, ttl, ip_id, tos, ip_len, sport, dport, seq)
    return quoted


def parse_ip(raw: bytes, t: float) -> PacketRecord | None:
    """Make the record for one IPv4 packet; None when it is not IPv4 at all."""
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
    if proto == 6 and len(l4) >= 20:
        sport, dport, seq, ack, offset_flags, win = struct.unpack("!HHIIHH", l4[:16])
        offset = (offset_flags >> 12) * 4
        if offset < 20 or offset > len(l4):
            return PacketRecord(proto="other", **base)
        return PacketRecord(proto="tcp", flags=flag_letters(offset_flags & 0xFF), sport=sport, dport=dport,
                            seq=seq, ack=ack, win=win, options=parse_tcp_options(l4[20:offset]),
                            payload=bytes(l4[offset:]), **base)
    if proto == 1 and len(l4) >= 8:
        icmp_type, icmp_code = l4[0], l4[1]
        quoted = _parse_quoted(l4[8:]) if icmp_type in ICMP_ERROR_TYPES else None
        return PacketRecord(proto="icmp", icmp_type=icmp_type, icmp_code=icmp_code, quoted=quoted, **base)
    return PacketRecord(proto="other", **base)
