"""When a flow is over, in the flow table: at a reset or when both FINs are acknowledged, then
LINGER for injected packets; a FIN nobody acknowledges keeps the flow open for its retransmissions
and the reset that ends them; packets that keep coming after a close, at the pace of doubling
retransmission timeouts, stay with their flow; later ones are counted as late, not as packets
whose handshake is not in the file. Built from the cases of ../shared/realworld (CenTrace's
nifty.org and sohu.com runs: the server's FIN retransmitted at 3 and 9 s, its reset at 17.5 s)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import dpkt
import pytest

from probe.files import flows as az

from .conftest import from_client, from_server
from .test_analyze import handshake_flow, raw


def clock(times, first_port: int = 50000) -> list:
    """SYNs of other connections at these times: capture time passes, the table sweeps."""
    return [replace(from_client(t, "S", 7), sport=first_port + n) for n, t in enumerate(times)]


def run_table(records, table: az.FlowTable | None = None):
    table = table or az.FlowTable()
    judged = []
    for record in records:
        judged += [(record.t, flow) for flow in table.feed(record.t, raw(record))]
    judged += [(None, flow) for flow in table.drain()]
    return table, judged


def unanswered_server_fin(t0: float = 0.0):
    """The request went nowhere; the client closes; the server acknowledges, sends its FIN, which
    the client never acknowledges (its kernel knows no such connection): FIN retransmitted at 3 and
    9 s, then the server gives up with a reset at 17.5 s (nifty.org, CenTrace)."""
    return [from_client(t0, "S", 1000), from_server(t0 + 0.25, "SA", 5000, 1001),
            from_client(t0 + 0.26, "A", 1001, 5001),
            from_client(t0 + 7.1, "FA", 1001, 5001), from_server(t0 + 7.35, "A", 5001, 1002, ip_id=1),
            from_server(t0 + 7.351, "FA", 5001, 1002, ip_id=2),
            from_server(t0 + 10.35, "FA", 5001, 1002, ip_id=3), from_server(t0 + 16.35, "FA", 5001, 1002, ip_id=4),
            from_server(t0 + 24.9, "RA", 5002, 1002, ip_id=5, win=0)]


def test_a_fin_nobody_acknowledges_keeps_the_flow_open_for_its_retransmissions_and_the_final_reset():
    records = unanswered_server_fin()
    table, judged = run_table(records)
    [(when, flow)] = judged
    assert flow.records == records
    assert table.totals.late == 0 and table.totals.without_handshake == 0
    assert az.judge(flow).analysis.verdict == "server-reset"  # before: "dropped", the reset never seen


def test_both_fins_acknowledged_is_over_linger_seconds_later():
    records = handshake_flow(0.0, 40000)  # FIN both ways, the last one acknowledged at 0.154
    other = handshake_flow(0.0, 40001)[:3]
    table, judged = run_table(sorted(records + other + clock((1.0, 2.0, 2.2, 3.0)), key=lambda r: r.t))
    when = next(t for t, flow in judged if flow.client_port == 40000)
    assert when is not None and 0.154 + az.LINGER < when <= 0.154 + az.LINGER + az.SWEEP_EVERY


def test_fins_both_ways_without_the_last_ack_is_not_over():
    records = handshake_flow(0.0, 40000)[:-1]  # the server's FIN is never acknowledged
    table = az.FlowTable()
    for record in records + clock((10.0, 60.0)):
        table.feed(record.t, raw(record))
    assert any(flow.client_port == 40000 for flow in table.open.values())  # still waiting at 60 s
    assert [f.client_port for f in table.sweep(0.153 + az.IDLE + 1)][:1] == [40000]  # silent IDLE seconds: over


def test_retransmissions_after_a_reset_at_a_doubling_pace_stay_with_the_flow():
    """A reset forged toward the client closes the flow; the server never sent it and retransmits
    its data after silences of 1.5, 2.9 and 5.6 s (RTO backoff): evidence of who closed, kept in the flow."""
    start = handshake_flow(0.0, 40000)[:4]
    forged = from_server(0.06, "R", 5001, 0, ttl=50, win=0)
    data = [from_server(0.06 + dt, "PA", 5001, 1020, payload=b"HTTP/1.1 200 OK\r\n\r\n", ip_id=1)
            for dt in (1.5, 4.4, 10.0)]
    table, judged = run_table(start + [forged] + data)
    [(_, flow)] = judged
    assert flow.records[-3:] == data and table.totals.late == 0


def test_a_packet_long_after_the_flow_was_judged_is_late_not_without_handshake():
    start = handshake_flow(0.0, 40000)[:4]
    reset = from_server(0.1, "RA", 5001, 1020)
    much_later = [from_client(40.0, "A", 1020, 5001), from_server(40.2, "R", 5001, 0)]
    other = handshake_flow(30.0, 40001)[:1]  # something else keeps the clock moving
    table, judged = run_table(start + [reset] + other + much_later)
    flow = next(flow for _t, flow in judged if flow.client_port == 40000)
    assert flow.records[-1] == reset
    assert (table.totals.late, table.totals.without_handshake) == (2, 0)


def test_late_packets_after_a_close_wait_at_most_late_max_and_idle_after_the_close():
    start = handshake_flow(0.0, 40000)[:4]
    reset = from_server(0.1, "RA", 5001, 1020)
    # retransmissions after silences of 1, 1.9, 3.7, ... 28.9 s, then 50 s each: the wait grows to LATE_MAX,
    # and the flow is over IDLE seconds after its close however they keep coming
    times, t = [], 0.1
    for silence in (1, 1.9, 3.7, 7.3, 14.5, 28.9, 50, 50, 50):
        t += silence
        times.append(t)
    retries = [from_server(t, "PA", 5001, 1020, payload=b"x") for t in times]
    table, judged = run_table(start + [reset] + retries)
    [(when, flow)] = judged
    assert flow.wait == az.LATE_MAX
    assert [r.t for r in flow.records[5:]] == [t for t in times if t <= 0.1 + az.IDLE]
    assert table.totals.late == len([t for t in times if t > 0.1 + az.IDLE]) == 2


def test_the_memory_of_finished_flows_is_bounded(monkeypatch):
    monkeypatch.setattr(az, "FINISHED_KEYS", 5)
    table = az.FlowTable()
    records = []
    for n in range(20):
        records += handshake_flow(float(n * 5), 30000 + n)
    for record in records:
        table.feed(record.t, raw(record))
    assert len(table._finished) == 5


# --- the command ---------------------------------------------------------------------------------------


def test_the_totals_line_counts_late_packets(tmp_path):
    start = handshake_flow(0.0, 40000)[:4]
    records = start + [from_server(0.1, "RA", 5001, 1020)] + handshake_flow(30.0, 40001) + \
        [from_client(40.0, "A", 1020, 5001)]
    path = tmp_path / "late.pcap"
    with open(path, "wb") as handle:
        writer = dpkt.pcap.Writer(handle, linktype=101)
        for record in sorted(records, key=lambda r: r.t):
            writer.writepkt(raw(record), ts=1000.0 + record.t)
    done = subprocess.run([sys.executable, "-m", "probe", "analyze", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode in (0, 3, 4), done.stderr
    assert "1 TCP packet(s) came after their flow was over and judged" in done.stderr
    assert "handshake is not in the file" not in done.stderr


@pytest.mark.parametrize("pace", [1.0, 2.5])
def test_the_next_late_packet_may_come_after_twice_the_silence_before_it(pace):
    start = handshake_flow(0.0, 40000)[:4]
    reset = from_server(0.1, "RA", 5001, 1020)
    first = from_server(0.1 + pace, "PA", 5001, 1020, payload=b"x")
    within = from_server(first.t + 2 * max(pace, az.LINGER / 2) - 0.01, "PA", 5001, 1020, payload=b"y")
    beyond = from_server(within.t + 2 * (within.t - first.t) + az.SWEEP_EVERY + 0.5, "PA", 5001, 1020, payload=b"z")
    ticks = clock(range(1, int(beyond.t) + 2))
    table, judged = run_table(sorted(start + [reset, first, within, beyond] + ticks, key=lambda r: r.t))
    flow = next(flow for _t, flow in judged if flow.client_port == 40000)
    assert flow.records[-1] == within and table.totals.late == 1


def test_past_the_cap_the_acks_that_end_a_flow_are_kept_so_it_can_end(monkeypatch):
    monkeypatch.setattr(az, "KEEP_ALL", 6)
    records = handshake_flow(0.0, 40000)[:4]
    records += [from_server(0.1 + n * 0.001, "A", 5001 + 100 * n, 1020, payload=b"x" * 100, ip_id=n)
                for n in range(20)]
    end = 5001 + 2000
    records += [from_server(0.2, "FA", end, 1020), from_client(0.201, "FA", 1020, end + 1),
                from_server(0.25, "A", end + 1, 1021)]  # a plain ACK, as elidable as the bulk before it
    table = az.FlowTable()
    for record in records:
        table.feed(record.t, raw(record))
    [flow] = table.open.values()
    assert flow.records[-1] == records[-1] and flow.closed_at == 0.25 and flow.elided > 0
