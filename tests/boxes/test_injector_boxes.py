"""The boxes that imitate published injectors (GFW type II, Henan firewall, Quantum Insert, a
server-facing reset ahead of the request, a block page with the server's face), on the same
client-r1-r2-server lab as test_boxes.py: each forges exactly the packets its source describes."""

from __future__ import annotations

import os

import pytest
from boxlab import CLIENT, SERVER, TRIGGER_HOST, flags, payload_of, tcp_packets
from test_boxes import (BOX_TTL_AT_CLIENT, BOX_TTL_AT_SERVER, SERVER_TTL_AT_CLIENT, assert_control_passes,
                        end_seq, handshake, trigger_segments)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]


def from_server(packets, port: int):
    return [p for p in tcp_packets(packets, src=SERVER) if p.dport == port]


def test_gfwdup_sends_three_identical_rst_acks_with_df_and_lets_the_request_pass(boxlab):
    with boxlab.box("r1", "gfwdup"):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            rc, _, _ = boxlab.curl(TRIGGER_HOST)
            server.wait_for(trigger_segments)
        assert_control_passes(boxlab)
    assert rc == 56
    synack, request = handshake(client.packets)
    forged = [p for p in from_server(client.packets, request.sport) if "R" in flags(p)][:3]
    assert [flags(p) for p in forged] == ["RA"] * 3
    assert len({(p.seq, p.ack, p.id, p.ttl, p.window, bytes(p)) for p in forged}) == 1  # copies
    assert forged[0].seq == request.ack and forged[0].ack == end_seq(request)
    assert forged[0].flags.DF and forged[0].id != 0 and forged[0].ttl == BOX_TTL_AT_CLIENT
    assert trigger_segments(server.packets)  # on-path: the request went through
    assert not [p for p in tcp_packets(server.packets, src=CLIENT) if "R" in flags(p) and p.ttl == BOX_TTL_AT_SERVER]


def test_henan_sends_one_rst_ack_with_the_ten_bytes_ip_id_1_and_no_df(boxlab):
    with boxlab.box("r1", "henan", "--ttl", "50"):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            rc, _, _ = boxlab.curl(TRIGGER_HOST)
            server.wait_for(trigger_segments)
        assert_control_passes(boxlab)
    assert rc == 56
    _, request = handshake(client.packets)
    [forged] = [p for p in from_server(client.packets, request.sport) if "R" in flags(p)]
    assert flags(forged) == "RA" and forged.seq == request.ack and forged.ack == end_seq(request)
    assert payload_of(forged) == bytes(range(1, 10)) + b"\x00"
    assert (forged.id, bool(forged.flags.DF), forged.ttl) == (1, False, 50)
    assert trigger_segments(server.packets)


def test_quantum_races_the_server_with_a_302_at_its_sequence_numbers_and_its_face(boxlab):
    with boxlab.box("r1", "quantum"):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            boxlab.curl(TRIGGER_HOST)
            server.wait_for(trigger_segments)
        assert_control_passes(boxlab)
    synack, request = handshake(client.packets)
    data = [p for p in from_server(client.packets, request.sport) if payload_of(p)]
    forged, genuine = data[0], next(p for p in data[1:] if p.seq == data[0].seq)
    assert payload_of(forged).startswith(b"HTTP/1.1 302 Found\r\nLocation: ")
    assert payload_of(genuine) != payload_of(forged) and len(payload_of(genuine)) > len(payload_of(forged))
    assert forged.seq == request.ack and forged.ack == end_seq(request) and flags(forged) == "PA"
    assert forged.ttl == synack.ttl == SERVER_TTL_AT_CLIENT and forged.flags.DF == synack.flags.DF
    assert forged.id == synack.id + 1
    assert trigger_segments(server.packets)


def test_preempt_resets_the_server_in_the_clients_name_just_before_the_request(boxlab):
    with boxlab.box("r1", "preempt"):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            rc, _, _ = boxlab.curl(TRIGGER_HOST)
            server.wait_for(trigger_segments)
        assert_control_passes(boxlab)
    assert rc == 56
    _, request = handshake(client.packets)
    at_server = [p for p in tcp_packets(server.packets, src=CLIENT) if p.sport == request.sport]
    forged = next(i for i, p in enumerate(at_server) if "R" in flags(p))
    arrived = next(i for i, p in enumerate(at_server) if payload_of(p))
    assert forged < arrived  # the reset reached the server first
    reset = at_server[forged]
    assert flags(reset) == "R" and reset.seq == request.seq and reset.ttl == BOX_TTL_AT_SERVER
    # the client gets only the server's own reset for a connection it no longer has
    [answer] = from_server(client.packets, request.sport)[1:]
    assert flags(answer) == "R" and answer.seq == request.ack and answer.ttl == SERVER_TTL_AT_CLIENT


def test_mimicpage_drops_the_request_and_answers_with_the_servers_face(boxlab):
    with boxlab.box("r1", "mimicpage"):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            rc, code, _ = boxlab.curl(TRIGGER_HOST)
        assert_control_passes(boxlab)
    assert (rc, code) == (0, "403")
    synack, request = handshake(client.packets)
    [page] = [p for p in from_server(client.packets, request.sport) if payload_of(p)]
    assert payload_of(page).startswith(b"HTTP/1.1 403 Forbidden") and flags(page) == "FPA"
    assert page.seq == request.ack and page.ack == end_seq(request)
    assert page.ttl == synack.ttl and page.flags.DF == synack.flags.DF and page.id == synack.id + 1
    assert not trigger_segments(server.packets)
