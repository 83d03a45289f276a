"""`probe analyze` without root: the streaming reader against dpkt and parse_ip, the flow table,
vantage, filters, the command's output and exit codes, and hostile files (fuzzed, bounded)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from probe.files import flows as az
from probe.errors import ProbeError
from probe.files.pcap import ip_packets, ip_payload, read_records
from probe.record import parse_ip

from .conftest import CLIENT, CLIENT_PORT, SERVER, SERVER_PORT, from_client, from_server

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "captures"
CAPTURES = sorted(GOLDEN.glob("*.pcap"))


def dpkt_records(path: Path) -> list:
    """The reference: dpkt's own reader, the old link peeling, then parse_ip."""
    with open(path, "rb") as handle:
        reader = dpkt.pcap.Reader(handle)
        linktype = reader.datalink()
        return [r for ts, frame in reader if (p := ip_payload(linktype, frame)) is not None
                and (r := parse_ip(p, float(ts))) is not None]


@pytest.mark.parametrize("capture", CAPTURES, ids=[c.stem for c in CAPTURES])
def test_fast_reader_makes_the_same_records_as_dpkt_and_parse_ip(capture):
    records = list(read_records(str(capture)))
    assert records and records == dpkt_records(capture)


def rewrap(capture: Path, out: Path, link: int, nano: bool = True, pcapng: bool = False) -> None:
    """The same packets behind another link layer (or in pcapng), as tcpdump would write them."""
    heads = {1: b"\x02" * 6 + b"\x04" * 6 + b"\x81\x00\x00\x05\x08\x00",  # Ethernet with a VLAN tag
             113: b"\x00\x00\x00\x01\x00\x06" + b"\x02" * 8 + b"\x08\x00",
             276: b"\x08\x00\x00\x00" + b"\x00\x00\x00\x02\x00\x01\x00\x06" + b"\x02" * 8,
             0: struct.pack("<I", 2), 108: struct.pack("!I", 2), 101: b""}
    with open(capture, "rb") as handle:
        packets = [(ts, frame) for ts, frame in dpkt.pcap.Reader(handle)]
    with open(out, "wb") as handle:
        writer = (dpkt.pcapng.Writer(handle, linktype=link) if pcapng
                  else dpkt.pcap.Writer(handle, linktype=link, nano=nano))
        for ts, frame in packets:
            writer.writepkt(heads[link] + frame, ts=float(ts))


@pytest.mark.parametrize("link", [1, 113, 276, 0, 108, 101])
@pytest.mark.parametrize("form", ["pcap-nano", "pcap-micro", "pcapng"])
def test_every_link_type_and_format_gives_the_same_records(tmp_path, link, form):
    capture = GOLDEN / "06-field-report.pcap"
    out = tmp_path / "x.cap"
    rewrap(capture, out, link, nano=form == "pcap-nano", pcapng=form == "pcapng")
    expected = list(read_records(str(capture)))
    got = list(read_records(str(out)))
    assert [(r.src, r.flags, r.seq, r.ttl, r.payload) for r in got] == \
        [(r.src, r.flags, r.seq, r.ttl, r.payload) for r in expected]
    assert all(abs(a.t - b.t) < 2e-6 for a, b in zip(got, expected))
    if form == "pcap-nano":
        assert got == expected


@pytest.mark.parametrize("capture", CAPTURES, ids=[c.stem for c in CAPTURES])
def test_client_side_golden_captures_analyse_to_the_live_verdicts(capture):
    expected = json.loads(capture.with_suffix(".json").read_text())
    results, _totals = az.analyze_file(str(capture))
    first = results[0]  # the probe's own flow
    assert first.flow.vantage == "client"
    assert (first.analysis.verdict, first.analysis.direction) == (expected["verdict"], expected["direction"])
    assert [a.origin for a in first.analysis.attributions] == expected["origins"]


# --- the flow table -------------------------------------------------------------------------------


def handshake_flow(t0: float, client_port: int, isn: int = 1000):
    """A clean exchange as the client captures it, as records."""
    records = [from_client(t0, "S", isn), from_server(t0 + 0.05, "SA", 5000, isn + 1),
               from_client(t0 + 0.051, "A", isn + 1, 5001),
               from_client(t0 + 0.052, "PA", isn + 1, 5001, payload=b"HEAD / HTTP/1.1\r\n\r\n"),
               from_server(t0 + 0.102, "PA", 5001, isn + 20, payload=b"HTTP/1.1 200 OK\r\n\r\n", ip_id=1),
               from_client(t0 + 0.103, "FA", isn + 20, 5020), from_server(t0 + 0.153, "FA", 5020, isn + 21, ip_id=2),
               from_client(t0 + 0.154, "A", isn + 21, 5021)]
    return [replace(r, sport=client_port) if r.src == CLIENT else replace(r, dport=client_port) for r in records]


def raw(record) -> bytes:
    """IPv4 bytes for a record (inverse of parse_ip for the fields the tests use)."""
    flags = sum(1 << "FSRPAUEC".index(letter) for letter in record.flags)
    tcp = struct.pack("!HHIIBBHHH", record.sport, record.dport, record.seq, record.ack, 5 << 4, flags, record.win,
                      0, 0) + record.payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), record.ip_id, 0x4000, record.ttl, 6, 0,
                     bytes(map(int, record.src.split("."))), bytes(map(int, record.dst.split("."))))
    return ip + tcp


def test_memory_is_bounded_by_open_flows_not_packets():
    table = az.FlowTable()
    most_open, judged = 0, []
    for n in range(300):  # one flow a second, each over in 0.2 s
        for record in handshake_flow(float(n), 30000 + n):
            judged += table.feed(record.t, raw(record))
            most_open = max(most_open, len(table.open))
    judged += table.drain()
    assert len(judged) == 300
    assert most_open <= az.LINGER + 3  # flows are evicted LINGER seconds after they close
    assert all(len(f.records) == 8 for f in judged)


def test_port_reuse_starts_a_new_flow_and_judges_the_old_one():
    table = az.FlowTable()
    out = []
    for record in handshake_flow(0.0, 40000, isn=1000) + handshake_flow(1.0, 40000, isn=90000):
        out += table.feed(record.t, raw(record))
    out += table.drain()
    assert [f.client_isn for f in out] == [1000, 90000]


def test_packets_without_a_handshake_are_counted_not_kept():
    table = az.FlowTable()
    for record in handshake_flow(0.0, 40000)[2:]:
        assert table.feed(record.t, raw(record)) == []
    assert table.open == {} and table.totals.without_handshake == 6


def test_filters():
    wanted = az.FlowFilter(hosts=(SERVER,), flows=(((CLIENT, 40001),),))
    assert wanted.wants(CLIENT, 40001, SERVER, SERVER_PORT)
    assert not wanted.wants(CLIENT, 40002, SERVER, SERVER_PORT)
    assert not az.FlowFilter(hosts=("192.0.2.99",)).wants(CLIENT, 40001, SERVER, SERVER_PORT)
    both_ends = az.FlowFilter(flows=(((SERVER, SERVER_PORT), (CLIENT, None)),))
    assert both_ends.wants(CLIENT, 1, SERVER, SERVER_PORT) and not both_ends.wants(CLIENT, 1, SERVER, 81)


def test_vantage_by_ttl_and_by_timing():
    flow = az.Flow(CLIENT, CLIENT_PORT, SERVER, SERVER_PORT)
    client_side = handshake_flow(0.0, CLIENT_PORT)
    assert az.find_vantage(client_side, flow).side == "client"
    server_side = [from_client(0.0, "S", 1, ttl=57), from_server(0.0001, "SA", 9, 2, ttl=64),
                   from_client(0.05, "A", 2, 10, ttl=57)]
    assert az.find_vantage(server_side, flow).side == "server"
    same_ttls = [from_client(0.0, "S", 1, ttl=64), from_server(0.0001, "SA", 9, 2, ttl=64),
                 from_client(0.05, "A", 2, 10, ttl=64)]
    assert az.find_vantage(same_ttls, flow).side == "server"


def test_server_side_sees_a_reset_forged_in_the_clients_name():
    """The field report from the server's seat: a RST 'from the client' at another distance,
    then the client's request, answered by the server's own RST."""
    records = [from_client(0.0, "S", 1, ttl=60), from_server(0.0001, "SA", 9, 2, ttl=64),
               from_client(0.05, "A", 2, 10, ttl=60), from_client(0.051, "R", 2, 0, ttl=63, win=0),
               from_client(0.30, "PA", 2, 10, ttl=60, payload=b"HEAD / HTTP/1.1\r\n\r\n"),
               from_server(0.3001, "R", 10, 0, ttl=64, win=0)]
    flow = az.Flow(CLIENT, CLIENT_PORT, SERVER, SERVER_PORT, "server")
    analysis = az.judge_from_server(records, flow, az.analyze_flow(records, flow))
    assert (analysis.verdict, analysis.direction) == ("middlebox-reset", "to-server")
    assert analysis.attributions[3].origin == "middlebox"
    assert "TTL 63" in analysis.attributions[3].evidence[0]


# --- the command ---------------------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "probe", "analyze", *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_json_document_and_exit_code(tmp_path):
    done = run("--json", str(GOLDEN / "06-field-report.pcap"))
    assert done.returncode == 3, done.stderr
    document = json.loads(done.stdout)
    assert (document["schema"], document["command"]) == ("probe/1", "analyze")
    [flow] = document["flows"]
    assert flow["client"] == {"address": "192.0.2.10", "port": flow["client"]["port"]}
    assert flow["server"] == {"address": "203.0.113.80", "port": 80}
    assert (flow["verdict"], flow["direction"], flow["vantage"]) == ("middlebox-reset", "to-server", "client")
    assert [p["dir"] for p in flow["packets"]] == ["sent", "received", "sent", "sent", "sent", "received"]
    assert flow["explanation"]


def test_worst_exit_code_over_several_captures_and_the_table():
    clean = run(str(GOLDEN / "01-clean.pcap"))
    packet_evidence = "SYN-ACK acknowledging our SYN"  # a line of the packet table
    assert clean.returncode == 0 and "clean" in clean.stdout and packet_evidence not in clean.stdout
    verbose = run("-v", str(GOLDEN / "01-clean.pcap"))
    assert packet_evidence in verbose.stdout
    assert run(str(GOLDEN / "02-closed-port.pcap")).returncode == 4
    from probe.outcome import worst as worst_exit_code
    assert worst_exit_code([0, 4, 3, 0]) == 3 and worst_exit_code([0, 4]) == 4 and worst_exit_code([0]) == 0


def test_filters_on_the_command_line():
    assert run("--host", "198.51.100.7", str(GOLDEN / "01-clean.pcap")).returncode == 1
    assert run("--flow", "192.0.2.10-203.0.113.80:81", str(GOLDEN / "02-closed-port.pcap")).returncode == 4
    assert run("--flow", "203.0.113.80:80", str(GOLDEN / "02-closed-port.pcap")).returncode == 1
    bad = run("--flow", "not-an-address", str(GOLDEN / "01-clean.pcap"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def hostile_files(tmp_path: Path) -> dict[str, Path]:
    good = (GOLDEN / "01-clean.pcap").read_bytes()
    files = {"empty": b"", "text": b"hello, not a capture\n", "header-only": good[:24], "truncated": good[:70],
             "cut-header": good[:30], "huge-record": good[:32] + struct.pack("<I", 0x7FFFFFFF) + good[36:],
             "bad-link": good[:20] + struct.pack("<I", 147) + good[24:], "pcapng-garbage": b"\x0a\x0d\x0d\x0a" + b"\xff" * 40}
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.pcap"
        paths[name].write_bytes(data)
    return paths


def test_hostile_files_give_one_line_and_exit_1(tmp_path):
    for name, path in hostile_files(tmp_path).items():
        done = run(str(path))
        assert done.returncode == 1, (name, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("probe: "), (name, done.stderr)
        assert done.stdout == ""


def test_huge_snaplen_in_the_header_is_only_a_number(tmp_path):
    good = (GOLDEN / "01-clean.pcap").read_bytes()
    path = tmp_path / "snap.pcap"
    path.write_bytes(good[:16] + struct.pack("<I", 0xFFFFFFFF) + good[20:])
    assert run(str(path)).returncode == 0


def _consume(path: str) -> None:
    try:
        results, _ = az.analyze_file(path)
    except ProbeError as error:
        assert "\n" not in str(error)


@hsettings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_the_reader_with_mutated_captures(tmp_path, data):
    """Any bytes: records and verdicts, or one ProbeError line; never another exception."""
    source = data.draw(st.sampled_from(["06-field-report", "09-icmp-prohibited", "05-tap-rst-burst"]))
    blob = bytearray((GOLDEN / f"{source}.pcap").read_bytes())
    if data.draw(st.booleans()):
        blob = blob[:data.draw(st.integers(0, len(blob)))]
    for _ in range(data.draw(st.integers(0, 12))):
        if blob:
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "fuzz.pcap"
    path.write_bytes(bytes(blob))
    _consume(str(path))


@hsettings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=400), pcapng=st.booleans())
def test_fuzz_the_reader_with_random_bytes(tmp_path, blob, pcapng):
    path = tmp_path / "fuzz.pcap"
    path.write_bytes((b"\x0a\x0d\x0d\x0a" if pcapng else b"\xd4\xc3\xb2\xa1") + blob)
    _consume(str(path))


def test_ip_packets_rejects_a_directory(tmp_path):
    with pytest.raises(ProbeError):
        list(ip_packets(str(tmp_path)))


def test_a_long_flow_is_kept_whole_up_to_the_cap():
    """A segment deep into a transfer, at the server's TTL, reaches the engine as the live probe
    would have recorded it (the cap is far beyond a flow of hundreds of packets)."""
    table = az.FlowTable()
    records = handshake_flow(0.0, 40000)[:4]
    for n in range(600):
        records.append(from_server(0.2 + n * 0.001, "A", 5001 + 1448 * n, 1020, payload=b"x" * 1448, ip_id=n))
    for record in records:
        table.feed(record.t, raw(record))
    [flow] = table.drain()
    assert flow.records == records and flow.elided == 0


def test_a_long_flow_keeps_its_start_its_resets_and_ttl_changes():
    table = az.FlowTable()
    records = handshake_flow(0.0, 40000)[:4]
    for n in range(az.KEEP_ALL + 300):
        records.append(from_server(0.2 + n * 0.00001, "A", 5001 + 1448 * n, 1020, payload=b"x" * 1448,
                                   ip_id=n % 65536))
    records.append(from_server(0.6, "A", 9, 1020, payload=b"y" * 10, ttl=63))  # another distance
    records.append(from_server(0.7, "R", 10, 0, ip_id=999))
    for record in records:
        table.feed(record.t, raw(record))
    [flow] = table.drain()
    assert len(flow.records) == az.KEEP_ALL + 2 and flow.elided == len(records) - az.KEEP_ALL - 2
    assert flow.records[-2].ttl == 63 and flow.records[-1].flags == "R"
