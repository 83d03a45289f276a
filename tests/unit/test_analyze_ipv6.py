"""`probe analyze` over IPv6 and over damaged files: the flow table keys IPv6 flows, ICMPv6 errors
join the flow they quote, the two families never mix; a capture cut short is judged on its complete
records and says so in one line (the command's exit code is the verdicts')."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import replace
from ipaddress import IPv6Address
from pathlib import Path

import dpkt
import pytest

from probe.files import flows as az

from .conftest import CLIENT, SERVER
from .test_analyze import handshake_flow, raw

CLIENT6, SERVER6, ROUTER6 = "2001:db8::10", "2001:db8:0:1::80", "2001:db8::1"
GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "captures"
REALWORLD = Path(__file__).resolve().parents[2] / ".." / "shared" / "realworld"


def raw6(record, extension: bytes = b"", flow_label: int = 0x5A5A5, extension_type: int = 0) -> bytes:
    """IPv6 bytes for a record of `handshake_flow` (its IPv4 addresses mapped to IPv6 ones), with an
    optional extension header of `extension_type` (hop-by-hop by default; its first byte is
    overwritten with TCP's next-header number)."""
    flags = sum(1 << "FSRPAUEC".index(letter) for letter in record.flags)
    tcp = struct.pack("!HHIIBBHHH", record.sport, record.dport, record.seq, record.ack, 5 << 4, flags, record.win,
                      0, 0) + record.payload
    if extension:
        extension = bytes([6]) + extension[1:]
    address = {CLIENT: CLIENT6, SERVER: SERVER6}
    header = struct.pack("!IHBB16s16s", (6 << 28) | flow_label, len(extension) + len(tcp),
                         extension_type if extension else 6,
                         record.ttl, IPv6Address(address[record.src]).packed, IPv6Address(address[record.dst]).packed)
    return header + extension + tcp


def icmp6_error(t: float, icmp_type: int, quoting: bytes, source: str = ROUTER6) -> bytes:
    body = struct.pack("!BBHI", icmp_type, 0, 0, 0) + quoting[:1232]
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), 58, 64, IPv6Address(source).packed,
                       IPv6Address(CLIENT6).packed) + body


def feed_all(table: az.FlowTable, packets: list[tuple[float, bytes]]) -> list[az.OpenFlow]:
    out = []
    for t, packet in packets:
        out += table.feed(t, packet)
    return out + table.drain()


def test_an_ipv6_exchange_is_one_flow_with_ipv6_addresses_and_is_judged_clean():
    records = handshake_flow(0.0, 40000)
    table = az.FlowTable()
    [flow] = feed_all(table, [(r.t, raw6(r)) for r in records])
    assert (flow.client, flow.client_port, flow.server, flow.server_port) == (CLIENT6, 40000, SERVER6, 80)
    assert len(flow.records) == 8 and all(r.version == 6 and r.flow_label == 0x5A5A5 for r in flow.records)
    assert table.totals.ipv6_packets == table.totals.tcp_packets == 8
    result = az.judge(flow)
    assert result.analysis.verdict == "clean"


def test_extension_headers_do_not_split_a_flow():
    records = handshake_flow(0.0, 40000)
    hop_by_hop = bytes([0, 0, 1, 4, 0, 0, 0, 0])  # next header, length 0, PadN of four bytes
    packets = [(r.t, raw6(r, hop_by_hop if n % 2 else b"")) for n, r in enumerate(records)]
    [flow] = feed_all(az.FlowTable(), packets)
    assert [r.flags for r in flow.records] == [r.flags for r in records]


def test_an_icmpv6_error_joins_the_flow_it_quotes_and_no_other():
    records = handshake_flow(0.0, 40000)
    request = raw6(records[3])
    other = raw6(replace(records[3], sport=40001))
    packets = [(r.t, raw6(r)) for r in records[:4]]
    packets += [(0.06, icmp6_error(0.06, 3, request)),  # time exceeded, quoting our request
                (0.061, icmp6_error(0.061, 1, other)),  # unreachable for a flow not in the file
                (0.062, icmp6_error(0.062, 128, request))]  # an echo request is no error
    packets += [(r.t, raw6(r)) for r in records[4:]]
    [flow] = feed_all(az.FlowTable(), packets)
    icmp = [r for r in flow.records if r.proto == "icmp"]
    assert [(r.icmp_type, r.version, r.src) for r in icmp] == [(3, 6, ROUTER6)]
    assert (icmp[0].quoted.sport, icmp[0].quoted.seq) == (40000, records[3].seq)
    assert az.Flow(CLIENT6, 40000, SERVER6, 80).quotes_flow(icmp[0])


def test_an_icmpv6_quote_cut_inside_its_ports_joins_nothing():
    records = handshake_flow(0.0, 40000)
    packets = [(r.t, raw6(r)) for r in records[:2]] + [(0.06, icmp6_error(0.06, 1, raw6(records[2])[:42]))]
    [flow] = feed_all(az.FlowTable(), packets)
    assert all(r.proto == "tcp" for r in flow.records)


def test_the_two_families_never_share_a_flow():
    records = handshake_flow(0.0, 40000)
    packets = sorted([(r.t, raw(r)) for r in records] + [(r.t + 0.0001, raw6(r)) for r in records])
    flows = feed_all(az.FlowTable(), packets)
    assert sorted(f.client for f in flows) == sorted([CLIENT, CLIENT6])
    assert all(len(f.records) == 8 and len({r.version for r in f.records}) == 1 for f in flows)


def test_a_later_ipv6_fragment_is_not_a_tcp_packet():
    records = handshake_flow(0.0, 40000)
    fragment = bytes([6, 0]) + struct.pack("!HI", 185 << 3, 1)  # offset 185, next header TCP
    table = az.FlowTable()
    flows = feed_all(table, [(r.t, raw6(r)) for r in records[:3]] + [(0.06, raw6(records[3], fragment, extension_type=44))])
    assert len(flows[0].records) == 3 and table.totals.tcp_packets == 3 and table.totals.ipv6_packets == 4


def test_hostile_ipv6_bytes_never_raise():
    table = az.FlowTable()
    for size in range(0, 80):
        table.feed(0.0, bytes([0x60]) + bytes(range(size)))
        table.feed(0.0, bytes([0x60, 0, 0, 0, 0, 40, 0, 64]) + b"\x00" * 32 + bytes([0, 255]) * size)
    table.feed(0.0, icmp6_error(0.0, 1, b"\x60" + b"\x00" * 50))
    assert table.drain() == []


def icmp4_error(icmp_type: int, quoting: bytes) -> bytes:
    body = struct.pack("!BBHI", icmp_type, 0, 0, 0) + quoting
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, 1, 0, bytes([192, 0, 2, 1]),
                       bytes([192, 0, 2, 10])) + body


def test_an_icmp_error_quoting_any_cut_of_our_packet_never_raises_and_joins_once_the_ports_are_there():
    records = handshake_flow(0.0, 40000)
    for family, build, error, ports_end in ((4, raw, icmp4_error, 24), (6, raw6, lambda k, q: icmp6_error(0.0, k, q),
                                                                         44)):
        for cut in range(0, 64):
            table = az.FlowTable()
            for record in records[:2]:
                table.feed(record.t, build(record))
            table.feed(0.06, error(3 if family == 4 else 1, build(records[2])[:cut]))
            [flow] = table.drain()
            joined = [r for r in flow.records if r.proto == "icmp"]
            assert len(joined) == (1 if cut >= ports_end else 0), (family, cut)


# --- the command ---------------------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "probe", "analyze", *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> None:
    with open(path, "wb") as handle:
        writer = dpkt.pcap.Writer(handle, linktype=101)
        for t, packet in packets:
            writer.writepkt(packet, ts=t)


def test_the_command_reads_an_ipv6_capture(tmp_path):
    path = tmp_path / "v6.pcap"
    write_pcap(path, [(1000.0 + r.t, raw6(r)) for r in handshake_flow(0.0, 40000)])
    done = run("--json", str(path))
    assert done.returncode == 0, done.stderr
    [flow] = json.loads(done.stdout)["flows"]
    assert flow["client"] == {"address": CLIENT6, "port": 40000} and flow["verdict"] == "clean"
    table = run(str(path))
    assert table.returncode == 0 and CLIENT6 in table.stdout
    assert "8 IP packet(s), 8 of them IPv6 read" in table.stderr


def test_ipv6_without_tcp_says_so(tmp_path):
    path = tmp_path / "udp6.pcap"
    udp = struct.pack("!IHBB16s16s", 6 << 28, 8, 17, 64, IPv6Address(CLIENT6).packed, IPv6Address(SERVER6).packed)
    write_pcap(path, [(1000.0, udp + b"\x00\x35\x00\x35\x00\x08\x00\x00")])
    done = run(str(path))
    assert done.returncode == 1
    assert done.stderr.strip() == f"probe: {path} holds no TCP packets (1 IP packet(s), 1 of them IPv6): nothing to analyse"


@pytest.mark.skipif(not (REALWORLD / "tripwire" / "full_http_request.pcap").exists(), reason="no realworld corpus")
def test_tripwires_ipv6_loopback_capture_is_one_clean_flow():
    """IPv6 over BSD loopback (AF_INET6 30, macOS), a whole HTTP exchange on port 8081."""
    path = REALWORLD / "tripwire" / "full_http_request.pcap"
    results, totals = az.analyze_file(str(path))
    assert [(r.flow.client, r.flow.server, r.flow.server_port, r.analysis.verdict) for r in results] == \
        [("::1", "::1", 8081, "clean")]
    assert totals.ipv6_packets == totals.packets == 12 and totals.without_handshake == 0
    done = run(str(path))
    assert done.returncode == 0 and "holds no TCP packets" not in done.stderr


# --- damaged files -------------------------------------------------------------------------------------


def cut_inside_last_record(source: Path, out: Path, keep: int = 30) -> Path:
    """`source` without its last record but for `keep` bytes of it; returns the file of the
    complete records alone, beside it, as the reference."""
    data = source.read_bytes()
    at, starts = 24, []
    while at < len(data):
        starts.append(at)
        at += 16 + struct.unpack_from("<I", data, at + 8)[0]
    out.write_bytes(data[:starts[-1] + keep])
    whole = out.with_name("complete-" + out.name)
    whole.write_bytes(data[:starts[-1]])
    return whole


@pytest.mark.parametrize("capture", ["06-field-report", "01-clean", "02-closed-port"])
def test_a_truncated_capture_is_judged_on_its_complete_records_with_one_warning(tmp_path, capture):
    path = tmp_path / "cut.pcap"
    complete = cut_inside_last_record(GOLDEN / f"{capture}.pcap", path)
    reference = run(str(complete))
    done = run(str(path))
    assert (done.returncode, done.stdout) == (reference.returncode, reference.stdout)
    assert done.returncode != 1
    warnings = [line for line in done.stderr.splitlines() if "truncated" in line]
    records = len(list(dpkt.pcap.Reader(open(complete, "rb"))))
    assert warnings == [f"probe: {path} is truncated (the last record is cut short) after {records} packet(s); "
                        f"the complete ones before it were read"]
    assert done.stderr.replace(warnings[0] + "\n", "") == reference.stderr
    document = run("--json", str(path))
    assert document.returncode == reference.returncode
    assert json.loads(document.stdout)["totals"]["warnings"] == [warnings[0].removeprefix("probe: ")]
    assert document.stderr.strip() == warnings[0]


def test_a_truncated_capture_without_flows_says_both_in_one_line(tmp_path):
    path = tmp_path / "cut.pcap"
    packets = [(1000.0, raw(r)) for r in handshake_flow(0.0, 40000)[2:4]]  # no handshake in the file
    write_pcap(path, packets)
    path.write_bytes(path.read_bytes()[:-5])
    done = run(str(path))
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert "holds no TCP handshake" in done.stderr and "is truncated (the last record is cut short) after 1" in \
        done.stderr


def test_two_ended_analysis_passes_the_warning_on(tmp_path):
    client = tmp_path / "client.pcap"
    cut_inside_last_record(GOLDEN / "06-field-report.pcap", client)
    done = run(str(client), str(GOLDEN / "06-field-report.pcap"))
    assert done.returncode != 1, done.stderr
    assert sum("is truncated" in line for line in done.stderr.splitlines()) == 1
