"""The compiled flow table and pcap reader (`probe/files/_fastscan.pyx`) against the pure code it
mirrors (`analyze.FlowTable`, `ordinary.Ordinary`, `pcapfile.ip_packets`), and the parallel judging
(`analyze.Judges`) against judging one flow at a time: the same flows (kept packets, counts, close,
pre-judgement), the same totals and warnings, and the same verdicts, explanations and origins,
over every golden capture, every real capture of ../shared/realworld, the shapes of
`bench/analyze_shapes.py` (small), damaged files and property-generated exchanges.

`pip install .` builds the extension (pyproject.toml's build requirements bring Cython; CI has gcc);
a checkout where it is not built fails here rather than passing on the pure code alone."""

from __future__ import annotations

import struct
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import assume, given, strategies as st

from probe.files import flows as az
from probe.files.pcap import ip_packets
from tests.properties.exchanges import (forged_exchanges, genuine_exchanges, property_settings, suspects,
                                        with_suspect)
from tests.unit.test_ordinary import GOLDEN, REALWORLD, ROOT, record_bytes

try:
    from probe.files import _fastscan
except ImportError:  # pragma: no cover - reported by test_the_extension_is_built
    _fastscan = None

needs_fast = pytest.mark.skipif(_fastscan is None, reason="probe.files._fastscan is not built")
TWO_ENDED = sorted((ROOT / "tests" / "golden" / "two-ended").rglob("*.pcap"))


@needs_fast
def test_pipes_read_as_they_come(tmp_path):
    """A pipe cannot be read twice or at an offset: its packets are kept as bytes."""
    import os
    import threading

    fifo = tmp_path / "capture"
    os.mkfifo(fifo)
    source = ROOT / "tests" / "golden" / "captures" / "05-tap-rst-burst.pcap"
    writer = threading.Thread(target=lambda: fifo.write_bytes(source.read_bytes()))
    writer.start()
    table = _fastscan.FastFlowTable()
    flows = list(_fastscan.flows_of_file(str(fifo), table, table.totals.warnings))
    writer.join()
    assert [flow_state(f) for f in flows] == [flow_state(f) for f in pure_flows(source)[0]]
    assert flows and all(f.source is None for f in flows)


def test_the_extension_is_built():
    assert _fastscan is not None, ("probe.files._fastscan is not built: `pip install .` (or `python3 setup.py build_ext "
                                   "--inplace` in a checkout) builds it with Cython and a C compiler")
    assert az.fast_path() is _fastscan


def flow_state(flow) -> tuple:
    """Everything a finished flow carries to `analyze.judge`, and how it stood (its kept packets as
    the records they make: the compiled table keeps a classic pcap's packets by place, not bytes)."""
    ordinary = flow.ordinary
    return (flow.client, flow.client_port, flow.server, flow.server_port, flow.client_isn, flow.records,
            flow.count, flow.elided, flow.last_t, flow.closed_at, flow.wait, flow.fin_ends, flow.fins_acked,
            None if ordinary is None else (ordinary.still, ordinary.holds(), ordinary.verdict(), ordinary.syn_t))


def pure_flows(path: Path):
    table = az.FlowTable()
    return list(az.stream_flows(ip_packets(str(path), table.totals.warnings), table)), table.totals


def fast_flows(path: Path):
    table = _fastscan.FastFlowTable()
    return list(_fastscan.flows_of_file(str(path), table, table.totals.warnings)), table.totals


def assert_alike(path: Path) -> int:
    """Both tables over one file: the same flows in the same order, judged alike; the flows found."""
    pure, pure_totals = pure_flows(path)
    fast, fast_totals = fast_flows(path)
    assert [flow_state(f) for f in fast] == [flow_state(f) for f in pure]
    assert vars(fast_totals) == vars(pure_totals)
    for one, other in zip(pure, fast):
        assert az.judge(other) == az.judge(one)
        assert az.judge(other, summarise=True) == az.judge(one, summarise=True)
    return len(pure)


@needs_fast
@pytest.mark.parametrize("path", GOLDEN + TWO_ENDED, ids=[str(p.relative_to(ROOT / "tests" / "golden"))
                                                          for p in GOLDEN + TWO_ENDED])
def test_golden_captures_alike(path):
    assert_alike(path)


@needs_fast
@pytest.mark.skipif(not REALWORLD, reason="../shared/realworld is not there")
@pytest.mark.parametrize("path", REALWORLD, ids=[p.name for p in REALWORLD])
def test_real_captures_alike(path):
    assert_alike(path)


def shape(tmp_path_factory, name: str, packets: int) -> Path:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from analyze_shapes import write_shape
    finally:
        sys.path.remove(str(ROOT / "bench"))
    path = tmp_path_factory.mktemp("shapes") / f"{name}.pcap"
    write_shape(name, path, packets)
    return path


@needs_fast
@pytest.mark.parametrize("name", ["short", "long", "mix", "old"])
def test_benchmark_shapes_alike(tmp_path_factory, name):
    """The captures the speed is measured on (small: a few thousand packets), forged flows and all."""
    assert assert_alike(shape(tmp_path_factory, name, 20_000 if name == "long" else 4_000)) > 0


def microseconds(nano: bytes) -> bytes:
    """A nanosecond pcap (little-endian) as the same capture with microsecond timestamps."""
    out, position = bytearray(b"\xd4\xc3\xb2\xa1" + nano[4:24]), 24
    while position + 16 <= len(nano):
        seconds, fraction, length, original = struct.unpack_from("<IIII", nano, position)
        out += struct.pack("<IIII", seconds, fraction // 1000, length, original)
        out += nano[position + 16:position + 16 + length]
        position += 16 + length
    return bytes(out)


@needs_fast
@pytest.mark.parametrize("unit", ["ns", "us"])
@pytest.mark.parametrize("cut", [1, 10, 24, 30, 100, 1000, -3])
def test_damaged_files_alike(tmp_path, cut, unit):
    """Cut short anywhere (file header, record header, record), or corrupt (a record claiming 1 GB):
    the same flows, the same warning, or the same error (both timestamp units: both read in C)."""
    whole = (ROOT / "tests" / "golden" / "captures" / "05-tap-rst-burst.pcap").read_bytes()
    assert whole[:4] == b"\x4d\x3c\xb2\xa1"
    if unit == "us":
        whole = microseconds(whole)
    path = tmp_path / "damaged.pcap"
    path.write_bytes(whole[:cut])
    outcomes = []
    for read in (pure_flows, fast_flows):
        try:
            flows, totals = read(path)
            outcomes.append(([flow_state(f) for f in flows], vars(totals)))
        except Exception as error:  # noqa: BLE001 - the same error both ways is what is asserted
            outcomes.append((type(error), str(error)))
    assert outcomes[0] == outcomes[1]
    header = 24 + 16 + int.from_bytes(whole[24 + 8:24 + 12], "little")  # the second record's header
    corrupt = whole[:header + 8] + (1 << 30).to_bytes(4, "little") + whole[header + 12:]
    path.write_bytes(corrupt)
    pure, pure_totals = pure_flows(path)
    fast, fast_totals = fast_flows(path)
    assert pure_totals.warnings and vars(fast_totals) == vars(pure_totals)
    assert [flow_state(f) for f in fast] == [flow_state(f) for f in pure]


def check_exchange(packets) -> None:
    """Packet by packet through both tables' `feed`."""
    results = []
    for table in (az.FlowTable(), _fastscan.FastFlowTable()):
        flows = []
        for record in packets:
            flows += table.feed(record.t, record_bytes(record))
        flows += table.drain()
        results.append(([flow_state(f) for f in flows], [az.judge(f, summarise=True) for f in flows],
                        vars(table.totals)))
    assert results[1] == results[0]


@needs_fast
@given(genuine_exchanges())
@property_settings(200)
def test_genuine_exchanges_alike(exchange):
    check_exchange(exchange.packets)


@needs_fast
@given(forged_exchanges())
@property_settings(100)
def test_exchanges_with_a_forged_reset_alike(exchange):
    check_exchange(exchange.packets)


@needs_fast
@given(st.data())
@property_settings(200)
def test_exchanges_with_a_free_packet_in_the_servers_name_alike(data):
    exchange = data.draw(genuine_exchanges(min_data=1))
    assume(any(role == "server" and packet.length for packet, role in zip(exchange.packets, exchange.roles)))
    check_exchange(with_suspect(exchange, data.draw(suspects(exchange.script.rtt))).packets)


@pytest.mark.parametrize("summarise", [False, True])
def test_workers_hand_on_the_same_results_in_the_same_order(tmp_path_factory, summarise):
    """`Judges` with forked workers against one flow at a time, on a capture with forged flows and
    downloads (some flows go to the workers, some are summarised in the reader), with `prepare`."""
    path = shape(tmp_path_factory, "mix", 30_000)
    runs = []
    for workers in (0, 2):
        results = []
        az.analyze_stream(str(path), None, results.append, summarise=summarise, workers=workers,
                          prepare=lambda result: (result.flow.client_port, result.analysis.verdict))
        runs.append(results)
    alone, parallel = runs
    assert [r.analysis.verdict for r in alone].count("middlebox-reset") > 0
    assert len(parallel) == len(alone)
    sent = 0
    for one, other in zip(alone, parallel):
        assert one.prepared is None
        if other.prepared is None:
            assert other == one
            continue
        sent += 1  # prepared in a worker: packets and attributions left there, the rest alike
        assert other.prepared == (one.flow.client_port, one.analysis.verdict)
        assert (other.packets, other.analysis.attributions) == ([], ())
        assert (other.flow, other.vantage, other.start, other.packet_count, other.elided) == \
            (one.flow, one.vantage, one.start, one.packet_count, one.elided)
        assert other.analysis == replace(one.analysis, attributions=())
    assert sent


def choose_path(monkeypatch, pure: bool) -> None:
    """The pure code (`PROBE_PURE=1`) or the compiled one (skipped when not built)."""
    if pure:
        monkeypatch.setenv("PROBE_PURE", "1")
    elif _fastscan is None:
        pytest.skip("probe.files._fastscan is not built")


@pytest.mark.parametrize("pure", [False, True])
def test_progress_reaches_the_files_size(tmp_path_factory, monkeypatch, pure):
    """The progress bar's callback (bytes read, file size): it climbs to the whole file, either way."""
    choose_path(monkeypatch, pure)
    path = shape(tmp_path_factory, "short", 20_000)
    seen = []
    az.analyze_stream(str(path), None, lambda result: None, progress=lambda done, size: seen.append((done, size)))
    size = path.stat().st_size
    assert size > 2 * (1 << 20) and len(seen) >= 3  # a megabyte at a time
    assert all(total == size for _done, total in seen) and seen[-1][0] == size
    assert [done for done, _size in seen] == sorted(done for done, _size in seen)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("pure", [False, True])
def test_summaries_stand_for_the_summarised_results_in_their_place(tmp_path_factory, monkeypatch, workers, pure):
    """`analyze_stream`'s `on_summary`: every flow `judge(summarise=True)` summarises comes as an
    `analyze.Summary` with its start, ends and packets, in the place of its result; every other
    flow as before (with workers and without, compiled and pure)."""
    choose_path(monkeypatch, pure)
    path = shape(tmp_path_factory, "mix", 30_000)
    results = []
    az.analyze_stream(str(path), None, results.append, summarise=True)
    mixed = []
    az.analyze_stream(str(path), None, mixed.append, summarise=True, workers=workers, on_summary=mixed.append)
    assert len(mixed) == len(results)
    summaries = 0
    for result, item in zip(results, mixed):
        if result.summarised:
            summaries += 1
            assert type(item) is az.Summary
            assert (item.start, item.client, item.client_port, item.server, item.server_port, item.packet_count,
                    item.verdict, item.direction, item.vantage) == \
                (result.start, result.flow.client, result.flow.client_port, result.flow.server,
                 result.flow.server_port, result.packet_count, result.analysis.verdict, result.analysis.direction,
                 result.flow.vantage)
        else:
            assert item == result
    assert summaries and summaries < len(results)


def download(copied: int | None) -> list[tuple[float, bytes]]:
    """A download of 40 segments, each acknowledged by its own ACK of ours (40 IP-IDs of ours, more
    than the compiled pre-judgement keeps in its small array); with `copied`, the server's last
    segment carries the IP-ID of our ACK number `copied` (`ip_id_copied`, rule 6)."""
    from scapy.layers.inet import IP, TCP

    client, server, port = "192.0.2.1", "203.0.113.5", 40000
    ours = lambda ip_id, **kw: bytes(IP(src=client, dst=server, ttl=64, id=ip_id) / TCP(sport=port, dport=80, **kw))
    theirs = lambda ip_id, **kw: bytes(IP(src=server, dst=client, ttl=60, id=ip_id, flags="DF") /
                                       TCP(sport=80, dport=port, **kw))
    request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    packets = [(0.0, ours(100, flags="S", seq=1000)), (0.05, theirs(5000, flags="SA", seq=9000, ack=1001)),
               (0.051, ours(101, flags="A", seq=1001, ack=9001)),
               (0.052, bytes(IP(src=client, dst=server, ttl=64, id=102) /
                             TCP(sport=port, dport=80, flags="PA", seq=1001, ack=9001) / request))]
    end = 1001 + len(request)
    for n in range(40):
        ip_id = 200 + n if copied is None or n < 39 else 103 + copied
        packets.append((0.2 + n * 0.01, bytes(IP(src=server, dst=client, ttl=60, id=ip_id, flags="DF") /
                                              TCP(sport=80, dport=port, flags="A", seq=9001 + 100 * n, ack=end) /
                                              (b"x" * 100))))
        packets.append((0.201 + n * 0.01, ours(103 + n, flags="A", seq=end, ack=9001 + 100 * (n + 1))))
    return packets


@needs_fast
@pytest.mark.parametrize("copied", [None, 30, 3])
def test_a_long_flows_ip_ids_are_all_remembered(copied):
    """Past the small array (16 IP-IDs), the compiled table keeps our IP-IDs in a bitmap: a server
    segment that copies our 31st is caught as the pure set catches it, and the flow goes to the
    engine; without a copy the flow stays ordinary."""
    states = []
    for table in (az.FlowTable(), _fastscan.FastFlowTable()):
        flows = [flow for t, packet in download(copied) for flow in table.feed(t, packet)] + table.drain()
        assert len(flows) == 1
        states.append(flow_state(flows[0]))
    assert states[1] == states[0]
    assert states[0][-1][0] is (copied is None)  # `still`
