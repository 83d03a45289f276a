"""The capture reader: IPv6 behind every link layer it reads IPv4 behind, and damaged files read as
tcpdump reads them (every complete record, then one warning).

The oracle for records is `parse_ip` on the packets as scapy built them; for link layers, the
headers as libpcap documents them (LINKTYPE_NULL/LOOP: the address family in host or network byte
order, AF_INET6 24, 28 or 30; Ethernet 0x86DD with 802.1Q/802.1ad tags; SLL and SLL2 protocol fields).
"""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import ICMPv6TimeExceeded, IPv6, IPv6ExtHdrHopByHop

from probe.errors import ProbeError
from probe.files.pcap import ip_packets, ip_payload, read_records
from probe.record import parse_ip

CLIENT6, SERVER6 = "2001:db8::10", "2001:db8:0:1::80"
GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "captures"


def exchange6() -> list[bytes]:
    """A short IPv6 exchange, with an extension header, an ICMPv6 error and an IPv4 packet among it."""
    syn = IPv6(src=CLIENT6, dst=SERVER6, fl=7) / TCP(sport=40000, dport=80, flags="S", seq=100)
    request = IPv6(src=CLIENT6, dst=SERVER6, hlim=3) / TCP(sport=40000, dport=80, flags="PA", seq=101,
                                                           ack=501) / b"GET / HTTP/1.1\r\n\r\n"
    return [bytes(syn),
            bytes(IPv6(src=SERVER6, dst=CLIENT6, hlim=58) / TCP(sport=80, dport=40000, flags="SA", seq=500, ack=101)),
            bytes(IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrHopByHop() / TCP(sport=40000, dport=80, flags="A",
                                                                               seq=101, ack=501)),
            bytes(request),
            bytes(IPv6(src="2001:db8::1", dst=CLIENT6) / ICMPv6TimeExceeded() / bytes(request)),
            bytes(IP(src="192.0.2.10", dst="198.51.100.80") / TCP(sport=40001, dport=80, flags="S"))]


def loopback(family: int, order: str) -> bytes:
    return struct.pack(order + "I", family)


def ipv4_or_6(ether4: bytes, ether6: bytes):
    return lambda packet: ether6 if packet[0] >> 4 == 6 else ether4


MAC = b"\x02" * 6 + b"\x04" * 6
LINK_HEADS = {  # link type -> (name, header for one packet)
    "ethernet": (1, ipv4_or_6(MAC + b"\x08\x00", MAC + b"\x86\xdd")),
    "ethernet-vlan": (1, ipv4_or_6(MAC + b"\x81\x00\x00\x05\x08\x00", MAC + b"\x81\x00\x00\x05\x86\xdd")),
    "ethernet-qinq": (1, ipv4_or_6(MAC + b"\x88\xa8\x00\x07\x81\x00\x00\x05\x08\x00",
                                   MAC + b"\x88\xa8\x00\x07\x81\x00\x00\x05\x86\xdd")),
    "sll": (113, ipv4_or_6(b"\x00\x00\x00\x01\x00\x06" + b"\x02" * 8 + b"\x08\x00",
                           b"\x00\x00\x00\x01\x00\x06" + b"\x02" * 8 + b"\x86\xdd")),
    "sll2": (276, ipv4_or_6(b"\x08\x00\x00\x00" + b"\x00\x00\x00\x02\x00\x01\x00\x06" + b"\x02" * 8,
                            b"\x86\xdd\x00\x00" + b"\x00\x00\x00\x02\x00\x01\x00\x06" + b"\x02" * 8)),
    "raw": (101, lambda packet: b""),
    "raw-12": (12, lambda packet: b""),
    "ipv4-ipv6": (229, lambda packet: b""),
    **{f"null-af{af}-{'le' if order == '<' else 'be'}": (0, ipv4_or_6(loopback(2, order), loopback(af, order)))
       for af in (24, 28, 30) for order in "<>"},
    **{f"loop-af{af}": (108, ipv4_or_6(loopback(2, ">"), loopback(af, ">"))) for af in (24, 28, 30)},
}


def write_capture(path: Path, link: int, frames: list[bytes], form: str = "pcap-micro") -> None:
    with open(path, "wb") as handle:
        writer = (dpkt.pcapng.Writer(handle, linktype=link) if form == "pcapng"
                  else dpkt.pcap.Writer(handle, linktype=link, nano=form == "pcap-nano"))
        for n, frame in enumerate(frames):
            writer.writepkt(frame, ts=1000.0 + n * 0.25)


@pytest.mark.parametrize("form", ["pcap-micro", "pcap-nano", "pcapng"])
@pytest.mark.parametrize("name", sorted(LINK_HEADS))
def test_ipv6_behind_every_link_layer_gives_the_records_of_the_packets_as_built(tmp_path, name, form):
    link, head = LINK_HEADS[name]
    packets = exchange6()
    path = tmp_path / "x.cap"
    write_capture(path, link, [head(packet) + packet for packet in packets], form)
    got = list(read_records(str(path)))
    expected = [parse_ip(packet, 1000.0 + n * 0.25) for n, packet in enumerate(packets)]
    assert [(r.version, r.proto, r.src, r.flags, r.seq, r.ttl, r.payload) for r in got] == \
        [(r.version, r.proto, r.src, r.flags, r.seq, r.ttl, r.payload) for r in expected]
    assert got[4].proto == "icmp" and got[4].quoted.seq == 101 and got[4].quoted.ttl == 3
    assert all(abs(a.t - b.t) < 2e-6 for a, b in zip(got, expected))


@pytest.mark.parametrize("name", ["ethernet", "ethernet-vlan", "sll", "sll2", "null-af30-le", "loop-af24"])
def test_the_fast_pcap_loop_peels_as_ip_payload_does(tmp_path, name):
    """The inlined link peeling of the classic-pcap loop against dpkt's reader and `ip_payload`,
    with frames that are not IP among them (ARP, an unknown address family)."""
    link, head = LINK_HEADS[name]
    other = {1: MAC + b"\x08\x06" + b"\x00" * 28, 113: b"\x00" * 14 + b"\x08\x06" + b"\x00" * 28,
             276: b"\x08\x06" + b"\x00" * 46, 0: loopback(7, "<") + bytes(exchange6()[0]),
             108: loopback(7, ">") + bytes(exchange6()[0])}[link]
    frames = [head(packet) + packet for packet in exchange6()]
    frames.insert(2, other)
    path = tmp_path / "x.pcap"
    write_capture(path, link, frames, "pcap-nano")
    with open(path, "rb") as handle:
        expected = [(float(ts), packet) for ts, frame in dpkt.pcap.Reader(handle)
                    if (packet := ip_payload(link, frame)) is not None]
    got = list(ip_packets(str(path)))
    assert [packet for _t, packet in got] == [packet for _t, packet in expected] == exchange6()


@pytest.mark.parametrize("family", [1, 7, 10, 23, 0x18000000 + 1])
def test_loopback_frames_of_other_families_are_skipped(family):
    frame = struct.pack("<I", family) + exchange6()[0]
    assert ip_payload(0, frame) is None and ip_payload(108, frame) is None


def test_frames_too_short_for_their_link_header_are_skipped():
    assert ip_payload(1, MAC + b"\x86") is None and ip_payload(1, MAC + b"\x81\x00\x00\x05") is None
    assert ip_payload(113, b"\x00" * 15) is None and ip_payload(276, b"\x86\xdd") is None
    assert ip_payload(0, b"\x1e\x00") is None


# --- damaged files --------------------------------------------------------------------------------


def record_offsets(data: bytes) -> list[int]:
    """Where each record of a little-endian classic pcap starts."""
    offsets, at = [], 24
    while at < len(data):
        offsets.append(at)
        at += 16 + struct.unpack_from("<I", data, at + 8)[0]
    return offsets


FIELD_REPORT = GOLDEN / "06-field-report.pcap"
LAST = record_offsets(FIELD_REPORT.read_bytes())[-1]


@pytest.mark.parametrize("keep", [0, 5, 15, 16, 17, 40, len(FIELD_REPORT.read_bytes()) - LAST - 1])
def test_a_pcap_cut_short_yields_its_complete_records_and_one_warning(tmp_path, keep):
    """The file ends `keep` bytes into its last record (header or data)."""
    good = FIELD_REPORT.read_bytes()
    complete = len(record_offsets(good)) - 1
    path = tmp_path / "cut.pcap"
    path.write_bytes(good[:LAST + keep])
    warnings: list[str] = []
    got = list(ip_packets(str(path), warnings))
    whole = list(ip_packets(str(FIELD_REPORT)))
    assert got == whole[:-1] and len(got) == complete
    if keep == 0:
        assert warnings == []  # a file that ends between records is whole
        return
    what = "a record header" if keep < 16 else "the last record"
    assert warnings == [f"{path} is truncated ({what} is cut short) after {complete} packet(s); "
                        f"the complete ones before it were read"]
    assert list(ip_packets(str(path))) == got  # without a list to hear it, the same packets


def test_a_corrupt_record_length_after_good_records_is_a_warning_before_it_an_error(tmp_path):
    good = bytearray((GOLDEN / "06-field-report.pcap").read_bytes())
    first_length = struct.unpack_from("<I", good, 24 + 8)[0]
    second = 24 + 16 + first_length
    struct.pack_into("<I", good, second + 8, 0x7FFFFFFF)
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(good))
    warnings: list[str] = []
    assert len(list(ip_packets(str(path), warnings))) == 1
    assert warnings and "is corrupt (a record claims 2147483647 bytes" in warnings[0] and "after 1 packet(s)" in \
        warnings[0]
    struct.pack_into("<I", good, 24 + 8, 0x7FFFFFFF)
    path.write_bytes(bytes(good))
    with pytest.raises(ProbeError, match="is corrupt"):
        list(ip_packets(str(path), []))


def test_nothing_complete_is_still_an_error(tmp_path):
    good = (GOLDEN / "06-field-report.pcap").read_bytes()
    for cut in (24 + 5, 24 + 16 + 5):
        path = tmp_path / "cut.pcap"
        path.write_bytes(good[:cut])
        warnings: list[str] = []
        with pytest.raises(ProbeError, match="is truncated"):
            list(ip_packets(str(path), warnings))
        assert warnings == []


def test_a_pcapng_cut_short_yields_its_complete_blocks_and_one_warning(tmp_path):
    path = tmp_path / "whole.pcapng"
    packets = exchange6()
    write_capture(path, 101, packets, "pcapng")
    data = path.read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[:-10])
    warnings: list[str] = []
    got = [packet for _t, packet in ip_packets(str(cut), warnings)]
    assert got == packets[:-1]
    assert warnings == [f"{cut} is truncated (the last block is cut short) after {len(packets) - 1} packet(s); "
                        f"the complete ones before it were read"]
    cut.write_bytes(data[:60])  # inside the header blocks: nothing to read
    with pytest.raises(ProbeError):
        list(ip_packets(str(cut), []))
