"""Capture files in, the same `PacketRecord`s the live probe makes out (pcap and pcapng, via dpkt).

Only the link layer is peeled here; the IPv4 packet itself goes through `record.parse_ip`, the
one record builder. Flows are keyed by their SYN: the side that sent the first SYN is the client.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from probe.engine.model import Flow
from probe.errors import ProbeError
from probe.record import PacketRecord, parse_ip

LINK_NULL, LINK_ETHERNET, LINK_RAW, LINK_LOOP, LINK_SLL, LINK_SLL2 = 0, 1, 101, 108, 113, 276
RAW_ALIASES = {12, 14, LINK_RAW}


def ip_payload(linktype: int, frame: bytes) -> bytes | None:
    """The IPv4 packet inside one frame, or None when the frame carries something else."""
    if linktype in RAW_ALIASES:
        return frame
    if linktype == LINK_ETHERNET:
        offset, ethertype = 12, None
        while len(frame) >= offset + 2:
            ethertype = struct.unpack("!H", frame[offset:offset + 2])[0]
            if ethertype in (0x8100, 0x88A8):  # VLAN tags
                offset += 4
                continue
            break
        return frame[offset + 2:] if ethertype == 0x0800 else None
    if linktype == LINK_SLL:
        return frame[16:] if len(frame) >= 16 and frame[14:16] == b"\x08\x00" else None
    if linktype == LINK_SLL2:
        return frame[20:] if len(frame) >= 20 and frame[0:2] == b"\x08\x00" else None
    if linktype in (LINK_NULL, LINK_LOOP):
        if len(frame) < 4:
            return None
        family = struct.unpack("<I", frame[:4])[0] if linktype == LINK_NULL else struct.unpack("!I", frame[:4])[0]
        if family not in (2, 0x02000000):
            return None
        return frame[4:]
    raise ProbeError(f"unsupported link type {linktype} (Ethernet, Linux cooked, raw IP and loopback are)")


def read_records(path: str) -> Iterator[PacketRecord]:
    """Stream the IPv4 packets of a pcap or pcapng file as records."""
    import dpkt

    try:
        handle = open(path, "rb")
    except OSError as error:
        raise ProbeError(f"cannot read {path}: {error.strerror}") from None
    with handle:
        magic = handle.read(4)
        handle.seek(0)
        try:
            reader = dpkt.pcapng.Reader(handle) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(handle)
        except (ValueError, dpkt.dpkt.Error, struct.error) as error:
            raise ProbeError(f"{path} is not a pcap or pcapng file ({error})") from None
        linktype = reader.datalink()
        try:
            for timestamp, frame in reader:
                packet = ip_payload(linktype, frame)
                if packet is not None:
                    record = parse_ip(packet, float(timestamp))
                    if record is not None:
                        yield record
        except (dpkt.dpkt.NeedData, struct.error, ValueError) as error:
            raise ProbeError(f"{path} is truncated or corrupt ({error})") from None


def split_flows(records: list[PacketRecord]) -> list[tuple[Flow, list[PacketRecord]]]:
    """Group the records of each TCP flow that starts with a SYN in the capture, in order."""
    flows: dict[tuple, Flow] = {}
    for record in records:
        if record.proto == "tcp" and record.flags.replace("E", "").replace("C", "") == "S":
            key = (record.src, record.sport, record.dst, record.dport)
            flows.setdefault(key, Flow(*key))
    return [(flow, [r for r in records if flow.belongs(r)]) for flow in flows.values()]
