"""Capture files in, IP packets (and then the live probe's own `PacketRecord`s) out.

Classic pcap is read here, by struct, a megabyte at a time: that is the bulk case, and the
loop must cost little per packet. pcapng goes through dpkt's reader. Either way only the link
layer is peeled here (Ethernet with VLAN tags, Linux cooked SLL and SLL2, raw IP, BSD null and
loopback), for IPv4 and IPv6 alike; the packet itself goes through `record.parse_ip`, the one
record builder.

Every way a file can be wrong before its first complete record (not a capture, cut short, a
record longer than any link could carry) becomes one `ProbeError` that names the file, never a
traceback. Damage after complete records (a capture still being written, or copied in part) is
what tcpdump reads past: every complete record is yielded, then one sentence goes to the
caller's `warnings` list.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator

from probe.errors import ProbeError
from probe.record import PacketRecord, parse_ip

LINK_NULL, LINK_ETHERNET, LINK_RAW, LINK_LOOP, LINK_SLL, LINK_SLL2 = 0, 1, 101, 108, 113, 276
LINK_IPV4, LINK_IPV6 = 228, 229
RAW_ALIASES = {12, 14, LINK_RAW, LINK_IPV4, LINK_IPV6}  # no link header: the version nibble decides
SUPPORTED = "Ethernet, Linux cooked (SLL, SLL2), raw IP and loopback"

ETHERTYPE_IPV4, ETHERTYPE_IPV6 = b"\x08\x00", b"\x86\xdd"
VLAN_TAGS = (0x8100, 0x88A8)
# BSD null/loopback: the address family in the sender's byte order (DLT_NULL) or in network
# order (DLT_LOOP), so both orders are taken. AF_INET is 2 everywhere; AF_INET6 is 24 on
# NetBSD and OpenBSD, 28 on FreeBSD and DragonFly, 30 on macOS (libpcap's LINKTYPE_NULL page).
LOOPBACK_FAMILIES = frozenset(struct.pack(order + "I", family) for order in "<>" for family in (2, 24, 28, 30))

MAX_RECORD = 1 << 18  # 256 KiB: Wireshark's largest snapshot length; a longer record is corruption
CHUNK = 1 << 20

_PCAP_MAGIC = {  # magic -> (byte order, fraction per second)
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000), b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000), b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


def _is_ip(ethertype: bytes) -> bool:
    return ethertype == ETHERTYPE_IPV4 or ethertype == ETHERTYPE_IPV6


def ip_payload(linktype: int, frame: bytes) -> bytes | None:
    """The IPv4 or IPv6 packet inside one frame, or None when the frame carries something else."""
    if linktype in RAW_ALIASES:
        return frame
    if linktype == LINK_ETHERNET:
        offset = 12
        while len(frame) >= offset + 2 and struct.unpack("!H", frame[offset:offset + 2])[0] in VLAN_TAGS:
            offset += 4
        return frame[offset + 2:] if len(frame) >= offset + 2 and _is_ip(frame[offset:offset + 2]) else None
    if linktype == LINK_SLL:
        return frame[16:] if len(frame) >= 16 and _is_ip(frame[14:16]) else None
    if linktype == LINK_SLL2:
        return frame[20:] if len(frame) >= 20 and _is_ip(frame[0:2]) else None
    if linktype in (LINK_NULL, LINK_LOOP):
        return frame[4:] if frame[:4] in LOOPBACK_FAMILIES else None
    raise ProbeError(f"unsupported link type {linktype} ({SUPPORTED} are)")


def _check_linktype(path: str, linktype: int) -> None:
    if linktype not in RAW_ALIASES and linktype not in (LINK_ETHERNET, LINK_SLL, LINK_SLL2, LINK_NULL, LINK_LOOP):
        raise ProbeError(f"{path}: unsupported link type {linktype} ({SUPPORTED} are)")


def ip_packets(path: str, warnings: list[str] | None = None,
               progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[float, bytes]]:
    """Stream (timestamp, IP packet) from a pcap or pcapng file; other frames are skipped. Damage
    after complete records ends the stream with one sentence appended to `warnings` (if given).
    `progress(bytes read, file size)` is called as the file is read (a megabyte at a time)."""
    note = warnings.append if warnings is not None else _ignore
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise ProbeError(f"cannot read {path}: {error.strerror}") from None
    with handle:
        if progress is not None:
            size = os.fstat(handle.fileno()).st_size
            handle = _Watched(handle, lambda position: progress(position, size))
        magic = handle.read(4)
        if magic == _PCAPNG_MAGIC:
            yield from _pcapng_packets(path, handle, note)
        elif magic in _PCAP_MAGIC:
            yield from _pcap_packets(path, handle, magic, note)
        elif not magic:
            raise ProbeError(f"{path} is empty, not a capture")
        else:
            from probe.files import text as textcap  # a capture pasted as text: tcpdump -x/-X, Wireshark's hex dump, text2pcap

            if textcap.looks_like_text(magic + handle.read(textcap.HEAD_BYTES - 4)):
                yield from textcap.ip_packets(path, note)
                return
            raise ProbeError(f"{path} is not a pcap or pcapng file (it starts with {magic.hex()})")


def _ignore(_sentence: str) -> None:
    pass


class _Watched:
    """A file that says how far it has been read after each read (for a progress bar)."""

    def __init__(self, handle, tell: Callable[[int], None]):
        self.handle, self.tell_progress = handle, tell

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.tell_progress(self.handle.tell())
        return data

    def __getattr__(self, name: str):
        return getattr(self.handle, name)


def _damaged(path: str, complete: int, problem: str, note: Callable[[str], None]) -> None:
    """Damage in the file after `complete` records: nothing readable at all is an error; after some
    records, tcpdump's way (they were read, and the user is told where the file ends)."""
    if not complete:
        raise ProbeError(f"{path} {problem}")
    note(f"{path} {problem} after {complete} packet(s); the complete ones before it were read")


def _pcap_packets(path: str, handle, magic: bytes, note: Callable[[str], None]) -> Iterator[tuple[float, bytes]]:
    """Classic pcap, by struct: the hot loop peels the common link layers inline."""
    order, per_second = _PCAP_MAGIC[magic]
    rest = handle.read(20)
    if len(rest) < 20:
        raise ProbeError(f"{path} is truncated inside its file header")
    _major, _minor, _zone, _sigfigs, _snaplen, linkfield = struct.unpack(order + "HHiIII", rest)
    linktype = linkfield & 0x0FFFFFFF
    _check_linktype(path, linktype)
    header = struct.Struct(order + "IIII")
    unpack_header = header.unpack_from
    fixed = {LINK_ETHERNET: 14, LINK_SLL: 16, LINK_SLL2: 20, LINK_NULL: 4, LINK_LOOP: 4}.get(linktype, 0)
    # where the two bytes that name the protocol sit, for links with a fixed header
    marker = {LINK_ETHERNET: 12, LINK_SLL: 14, LINK_SLL2: 0}.get(linktype)
    micro = per_second == 1_000_000
    ipv4, ipv6 = ETHERTYPE_IPV4, ETHERTYPE_IPV6  # locals: the loop runs once per record
    buffer, position, complete = b"", 0, 0
    while True:
        if len(buffer) - position < 16:
            buffer = buffer[position:] + handle.read(CHUNK)
            position = 0
            if not buffer:
                return
            if len(buffer) < 16:
                return _damaged(path, complete, "is truncated (a record header is cut short)", note)
        seconds, fraction, length, _original = unpack_header(buffer, position)
        if length > MAX_RECORD:
            return _damaged(path, complete, f"is corrupt (a record claims {length} bytes, at most {MAX_RECORD} make "
                                            f"sense)", note)
        start = position + 16
        end = start + length
        if end > len(buffer):
            buffer = buffer[position:] + handle.read(max(CHUNK, length + 16))
            position = 0
            start, end = 16, 16 + length
            if end > len(buffer):
                return _damaged(path, complete, "is truncated (the last record is cut short)", note)
        position = end
        complete += 1
        t = seconds + fraction / 1e6 if micro else (seconds * 1_000_000_000 + fraction) / 1_000_000_000
        if marker is not None:
            at = start + marker
            kind = buffer[at:at + 2]
            if kind == ipv4 or kind == ipv6:
                yield t, buffer[start + fixed:end]
                continue
            if linktype != LINK_ETHERNET:
                continue
        elif fixed == 0:
            yield t, buffer[start:end]
            continue
        packet = ip_payload(linktype, buffer[start:end])  # VLAN tags, loopback families
        if packet is not None:
            yield t, packet


def _pcapng_packets(path: str, handle, note: Callable[[str], None]) -> Iterator[tuple[float, bytes]]:
    import dpkt

    handle.seek(0)
    complete = 0
    try:
        reader = dpkt.pcapng.Reader(handle)
        linktype = reader.datalink()
        _check_linktype(path, linktype)
        for timestamp, frame in reader:
            complete += 1
            packet = ip_payload(linktype, frame)
            if packet is not None:
                yield float(timestamp), packet
    except ProbeError:
        raise
    except (ValueError, TypeError, IndexError, OverflowError, MemoryError, struct.error, dpkt.dpkt.Error) as error:
        if complete and isinstance(error, dpkt.dpkt.NeedData):
            return _damaged(path, complete, "is truncated (the last block is cut short)", note)
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        if complete:
            return _damaged(path, complete, f"is damaged ({detail[:120]})", note)
        raise ProbeError(f"{path} is not a readable pcapng file ({detail[:120]})") from None


def read_records(path: str, warnings: list[str] | None = None) -> Iterator[PacketRecord]:
    """Stream every IP packet of a pcap or pcapng file as the live probe's records."""
    for t, packet in ip_packets(path, warnings):
        record = parse_ip(packet, t)
        if record is not None:
            yield record
