"""Where a capture was taken, by the handshake's timing, on paths of any length: the two intervals
against each other, with a floor set by the timestamps' resolution. The LAN numbers are those of
the Practical Packet Analysis SMTP captures in ../shared/realworld/ppa (43 µs SYN to SYN-ACK and
140 µs SYN-ACK to ACK at the server's seat, every TTL still initial)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from probe.files import flows as az

from .conftest import CLIENT, CLIENT_PORT, SERVER, SERVER_PORT, from_client, from_server

FLOW = az.Flow(CLIENT, CLIENT_PORT, SERVER, SERVER_PORT)
REALWORLD = Path(__file__).resolve().parents[2] / ".." / "shared" / "realworld"
EPOCH = 1451416431.539639  # a real capture's time: the float's own precision is part of the test


def handshake(to_synack: float, to_ack: float, *, start: float = EPOCH, syn_ttl: int = 128, synack_ttl: int = 64,
              grid: float | None = None):
    """SYN, SYN-ACK and ACK with these intervals (on a timestamp grid, if given), TTLs all initial."""
    times = [start, start + to_synack, start + to_synack + to_ack]
    if grid is not None:
        times = [round(t / grid) * grid for t in times]
    return [from_client(times[0], "S", 1, ttl=syn_ttl), from_server(times[1], "SA", 9, 2, ttl=synack_ttl),
            from_client(times[2], "A", 2, 10, ttl=syn_ttl)]


@pytest.mark.parametrize("to_synack, to_ack, side", [
    (43e-6, 140e-6, "server"),  # the SMTP server's seat on a LAN (the old 1 ms floor hid it)
    (40e-6, 97e-6, "server"),
    (223e-6, 48e-6, "client"),  # the SMTP client's seat
    (177e-6, 17e-6, "client"),
    (0.0504, 0.0001, "client"),  # a continent away, as before
    (0.00005, 0.0142, "server"),
])
def test_lan_and_wan_seats_by_timing(to_synack, to_ack, side):
    vantage = az.find_vantage(handshake(to_synack, to_ack), FLOW)
    assert vantage.side == side and "TTLs and timing do not tell" not in vantage.evidence


@pytest.mark.parametrize("to_synack, to_ack", [
    (100e-6, 80e-6),  # loopback-like: both ends answer at once
    (190e-6, 100e-6),  # less than twice
    (15e-6, 2e-6),  # a large ratio of a few ticks: noise
])
def test_intervals_that_do_not_tell(to_synack, to_ack):
    vantage = az.find_vantage(handshake(to_synack, to_ack), FLOW)
    assert vantage.side == "client" and "do not tell" in vantage.evidence


def test_a_coarse_clock_needs_a_difference_of_more_than_its_ticks():
    """Timestamps in whole milliseconds (old Windows captures): 1 ms against 0 could be 1.99 against
    0.99, and 3 ms is a few ticks; 31 ms against 0 can only be the server's seat."""
    assert az.timestamp_tick(handshake(0.001, 0.0, grid=1e-3)) == 1e-3
    assert az.find_vantage(handshake(0.001, 0.0, grid=1e-3), FLOW).side == "client"
    assert "do not tell" in az.find_vantage(handshake(0.001, 0.0, grid=1e-3), FLOW).evidence
    assert az.find_vantage(handshake(0.0, 0.003, grid=1e-3), FLOW).evidence.startswith("TTLs and timing")
    assert az.timestamp_tick(handshake(0.0, 0.031, grid=1e-3)) == 1e-3
    assert az.find_vantage(handshake(0.0, 0.031, grid=1e-3), FLOW).side == "server"


@pytest.mark.parametrize("grid, expected", [(1e-2, 1e-2), (1e-3, 1e-3), (1e-4, 1e-4), (1e-5, 1e-5), (1e-6, 1e-6),
                                            (None, 1e-6)])
def test_timestamp_tick_reads_the_grid_of_epoch_times(grid, expected):
    steps = [0.0, 0.0123457, 0.0500031, 0.0611119, 0.2342227, 1.7777773]
    times = [EPOCH + step for step in steps]
    if grid is not None:
        times = [round(t / grid) * grid for t in times]
    records = [replace(from_client(0.0, "A", 1), t=t) for t in times]
    assert az.timestamp_tick(records) == expected


def test_the_floor_scales_with_the_tick():
    assert az.side_by_timing(30e-6, 2e-6, 1e-6) == "client"
    assert az.side_by_timing(30e-6, 2e-6, 1e-5) is None  # three ticks long
    assert az.side_by_timing(300e-6, 20e-6, 1e-5) == "client"
    assert az.side_by_timing(2e-6, 30e-6, 1e-6) == "server"


@pytest.mark.skipif(not (REALWORLD / "ppa" / "mail_sender_server_2.pcapng").exists(), reason="no realworld corpus")
def test_the_smtp_servers_capture_reads_from_the_servers_seat():
    """The relay's capture: the connection it accepted (port 25, from a Windows client) at the
    server's seat, the one it opened to the next relay at the client's."""
    results, _totals = az.analyze_file(str(REALWORLD / "ppa" / "mail_sender_server_2.pcapng"))
    assert {r.flow.client_port: r.vantage.side for r in results} == {49313: "server", 56694: "client"}
    assert all(r.analysis.verdict == "clean" for r in results)
