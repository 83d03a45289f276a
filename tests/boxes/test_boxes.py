"""Each box, run on a router of a small client-r1-r2-server lab, does what its device does.

Each test checks what a broken box would get wrong (sequence offsets, TTLs, IP-IDs, which side
sees what), and that a control request (Host: example.com) is left alone. Captures are taken
with tcpdump in the client and server namespaces. Without path delay the server is 3 hops and
a fraction of a millisecond away, so the server's packets reach the client with TTL 62, a box
on r1 sends with TTL 64.
"""

from __future__ import annotations

import os

import pytest
from boxlab import (CLIENT, CONTROL_HOST, R1_DN, R1_UP, SERVER, TRIGGER_HOST, VIP, flags,
                      payload_of, tcp_packets)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]

SERVER_TTL_AT_CLIENT = 62   # 64, minus r1 and r2
BOX_TTL_AT_CLIENT = 64      # a box on r1 sends with 64 and nobody decrements it
BOX_TTL_AT_SERVER = 63      # a box on r1, seen behind r2
CLIENT_TTL_AT_SERVER = 62


def trigger_segments(packets):
    return [p for p in tcp_packets(packets, src=CLIENT)
            if TRIGGER_HOST.encode() in payload_of(p)]


def handshake(packets):
    """(the server's SYN-ACK, the client's request) as the client saw them."""
    synack = next(p for p in tcp_packets(packets, src=SERVER) if flags(p) == "SA")
    request = next(p for p in tcp_packets(packets, src=CLIENT) if payload_of(p) and p.sport == synack.dport)
    return synack, request


def end_seq(p) -> int:
    return (p.seq + len(payload_of(p))) % 2**32


def resets_from_server(packets) -> int:
    """How many resets in the server's name a capture holds so far (for `Capture.wait_for`)."""
    return sum("R" in flags(p) for p in tcp_packets(packets, src=SERVER))


def assert_control_passes(boxlab):
    rc, code, body = boxlab.curl(CONTROL_HOST)
    assert (rc, code) == (0, "200") and "hello from the server" in body


def test_firewall_answers_syn_with_its_own_kernel_reset(boxlab):
    with boxlab.box("r1", "firewall", "--port", "8080"):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            rc, _, _ = boxlab.curl(CONTROL_HOST, f"http://{SERVER}:8080/")
        assert_control_passes(boxlab)  # port 80 is not filtered
    assert rc == 7  # connection refused
    syn = next(p for p in tcp_packets(client.packets, src=CLIENT) if flags(p) == "S")
    reset = next(p for p in tcp_packets(client.packets, src=SERVER))
    assert flags(reset) == "RA" and reset.ack == syn.seq + 1
    assert reset.ttl == BOX_TTL_AT_CLIENT  # the router's stack, not the server's (62)
    assert not tcp_packets(server.packets, src=CLIENT)  # the SYN never got there


def test_tap_races_resets_both_ways_and_lets_the_request_pass(boxlab):
    with boxlab.box("r1", "tap"):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            rc, _, _ = boxlab.curl(TRIGGER_HOST)
            server.wait_for(lambda ps: sum(p.ttl == BOX_TTL_AT_SERVER and "R" in flags(p)
                                           for p in tcp_packets(ps, src=CLIENT)) == 10)
            client.wait_for(lambda ps: resets_from_server(ps) >= 4)
        assert_control_passes(boxlab)
        # a copy of the request that dies at r1 (TTL 1) is seen in PREROUTING and draws resets
        assert boxlab.raw_request(TRIGGER_HOST, ttl=1) == "reset"
    assert rc == 56  # connection reset

    synack, request = handshake(client.packets)
    forged = [p for p in tcp_packets(client.packets, src=SERVER) if "R" in flags(p)]
    assert [flags(p) for p in forged] == ["R", "RA", "RA", "RA"]
    assert [(p.seq - request.ack) % 2**32 for p in forged] == [0, 0, 1460, 4380]
    assert all(p.ack == end_seq(request) for p in forged[1:])
    assert all(p.ttl == BOX_TTL_AT_CLIENT != synack.ttl for p in forged)
    assert all(p.window == request.window != 0 for p in forged)
    assert len({p.id for p in forged}) == 4 and synack.id not in {p.id for p in forged}
    from_server = tcp_packets(client.packets, src=SERVER)
    server_data = [i for i, p in enumerate(from_server) if payload_of(p)]
    assert all(i > 4 for i in server_data)  # nothing from the server came before the burst

    # toward the server: bare RSTs at the request's start and end (one is exact whichever arrives
    # first), RST/ACKs at the offsets; the whole burst once more 5 ms later
    to_server = [p for p in tcp_packets(server.packets, src=CLIENT) if p.ttl == BOX_TTL_AT_SERVER]
    length = end_seq(request) - request.seq
    assert [flags(p) for p in to_server] == ["R", "R", "RA", "RA", "RA"] * 2
    assert [(p.seq - request.seq) % 2**32 for p in to_server] == [0, length, length, length + 1460,
                                                                  length + 4380] * 2
    assert trigger_segments(server.packets)  # on-path: the request itself went through


def test_a_box_in_forward_never_sees_a_copy_that_dies_at_its_router(boxlab):
    with boxlab.box("r1", "tap", "--where", "forward"):
        assert boxlab.raw_request(TRIGGER_HOST, ttl=1, wait=0.5) == "timeout"
        assert boxlab.raw_request(TRIGGER_HOST, ttl=2, wait=0.5) == "reset"


def test_swallow_drops_the_request_and_resets_the_server_in_the_clients_name(boxlab):
    """The field report, both captures."""
    with boxlab.box("r1", "swallow"):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            rc, _, _ = boxlab.curl(TRIGGER_HOST)
            server.wait_for(lambda ps: any("R" in flags(p) for p in tcp_packets(ps, src=SERVER)))
        assert_control_passes(boxlab)
    assert rc == 56

    at_server = tcp_packets(server.packets)
    first_reset = next(i for i, p in enumerate(at_server) if p.src == CLIENT and "R" in flags(p))
    fake = at_server[first_reset]
    assert flags(fake) == "R" and not payload_of(fake) and fake.ttl == BOX_TTL_AT_SERVER
    assert not any(payload_of(p) for p in at_server[:first_reset])  # no request before it
    retransmission = next(p for p in at_server[first_reset:] if payload_of(p))
    assert fake.seq == retransmission.seq and retransmission.ttl == CLIENT_TTL_AT_SERVER
    real_reset = next(p for p in at_server if p.src == SERVER and "R" in flags(p))
    assert flags(real_reset) == "R" and real_reset.seq == retransmission.ack

    synack, request = handshake(client.packets)
    assert len(trigger_segments(client.packets)) >= 2  # the request and its retransmission
    from_server = tcp_packets(client.packets, src=SERVER)
    assert all(p.ttl == synack.ttl == SERVER_TTL_AT_CLIENT for p in from_server)  # all genuine
    reset = next(p for p in from_server if "R" in flags(p))
    assert flags(reset) == "R" and reset.seq == request.ack and reset.window == 0
    assert not any("R" in flags(p) for p in tcp_packets(client.packets, src=CLIENT))


def test_swallow_acts_again_on_a_new_connection_of_the_same_four_tuple(boxlab):
    """The box keeps a connection's state, not a four-tuple's forever: a new connection from the
    same source port (a trace reuses its four-tuple once its resets closed the last one) is a new
    flow to it (its SYN says so), whose first trigger segment it swallows again. Keyed by
    four-tuple alone, it let the second request through ('data'): an accuracy run's full-TTL
    exchange read 'clean' when its port had carried an earlier run's trigger."""
    with boxlab.box("r1", "swallow"):
        first = boxlab.raw_request(TRIGGER_HOST, ttl=64, source_port=40001)
        second = boxlab.raw_request(TRIGGER_HOST, ttl=64, source_port=40001)
    assert (first, second) == ("reset", "reset")  # each request swallowed, its retransmission reset


def test_blockpage_replaces_the_answer_and_the_server_never_sees_the_request(boxlab):
    with boxlab.box("r1", "blockpage"):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            rc, code, body = boxlab.curl(TRIGGER_HOST)
        assert_control_passes(boxlab)
    assert (rc, code) == (0, "403") and "blocked" in body

    synack, request = handshake(client.packets)
    page = next(p for p in tcp_packets(client.packets, src=SERVER) if payload_of(p))
    assert flags(page) == "FPA" and page.ttl == BOX_TTL_AT_CLIENT
    assert page.seq == request.ack and page.ack == end_seq(request)
    assert payload_of(page).startswith(b"HTTP/1.1 403 Forbidden")
    assert not trigger_segments(server.packets)


def test_blockpage_answers_a_new_connection_of_the_same_four_tuple(boxlab):
    """A new connection from the same source port is answered again. Keyed by four-tuple alone,
    the box took its request for a retransmission of the first and dropped it unanswered
    ('timeout')."""
    with boxlab.box("r1", "blockpage"):
        first = boxlab.raw_request(TRIGGER_HOST, ttl=64, source_port=40003)
        second = boxlab.raw_request(TRIGGER_HOST, ttl=64, source_port=40003)
    assert (first, second) == ("data", "data")


def test_silentdrop_drops_every_copy_of_the_request(boxlab):
    with boxlab.box("r1", "silentdrop"):
        with boxlab.capture("s") as server:
            rc, _, _ = boxlab.curl(TRIGGER_HOST, max_time=1.5)
        assert_control_passes(boxlab)
    assert rc == 28  # timeout
    assert tcp_packets(server.packets, src=CLIENT) and not trigger_segments(server.packets)


def test_icmp_rejects_the_request_with_admin_prohibited_from_the_router(boxlab):
    from scapy.layers.inet import ICMP, IP, IPerror, TCPerror
    with boxlab.box("r1", "icmp"):
        with boxlab.capture("c") as client:
            boxlab.curl(TRIGGER_HOST, max_time=1.0)
        assert_control_passes(boxlab)
    errors = [p[IP] for p in client.packets if ICMP in p]
    assert errors
    assert all((e.src, e[ICMP].type, e[ICMP].code) == (R1_UP, 3, 13) for e in errors)
    quoted = errors[0][IPerror]
    assert quoted.dst == SERVER and quoted[TCPerror].dport == 80


def test_ttlcopy_forges_with_the_servers_ttl_df_and_next_ip_id(boxlab):
    with boxlab.box("r1", "ttlcopy"):
        with boxlab.capture("c") as client:
            rc, _, _ = boxlab.curl(TRIGGER_HOST)
            # curl ends at the first reset; the second may still be in tcpdump's buffer
            client.wait_for(lambda ps: resets_from_server(ps) >= 2)
        assert_control_passes(boxlab)
    assert rc == 56
    synack, request = handshake(client.packets)
    forged = [p for p in tcp_packets(client.packets, src=SERVER) if "R" in flags(p)][:2]
    assert [flags(p) for p in forged] == ["R", "RA"]
    assert forged[0].seq == request.ack and forged[0].window == 0
    assert all(p.ttl == synack.ttl == SERVER_TTL_AT_CLIENT for p in forged)
    assert all(p.flags.DF == synack.flags.DF for p in forged)
    assert [p.id for p in forged] == [synack.id + 1, synack.id + 2]


def test_copycat_swallows_the_request_and_aborts_with_the_servers_face(boxlab):
    """One RST/ACK shaped like the server's own abort (at the client's ack, acknowledging the
    request, the window the server's next segments carry) with the server's TTL, DF and next
    IP-ID, a few milliseconds after the request; the request never reaches the server."""
    from scapy.layers.inet import TCP
    with boxlab.box("r1", "copycat", "--delay-ms", "3"):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            rc, _, _ = boxlab.curl(TRIGGER_HOST)
            assert_control_passes(boxlab)
    assert rc == 56  # connection reset
    synack, request = handshake(client.packets)
    [abort] = [p for p in tcp_packets(client.packets, src=SERVER) if "R" in flags(p)]
    assert flags(abort) == "RA" and abort.seq == request.ack and abort.ack == end_seq(request)
    assert abort.ttl == synack.ttl == SERVER_TTL_AT_CLIENT
    assert abort.flags.DF == synack.flags.DF and abort.id == synack.id + 1
    # the control connection shows the window the server really advertises after its SYN-ACK
    control_port = next(p.sport for p in trigger_or_control(client.packets, CONTROL_HOST))
    genuine = next(p for p in tcp_packets(client.packets, src=SERVER)
                   if p.dport == control_port and flags(p) != "SA")
    assert abort.window == genuine.window != synack.window
    assert dict(synack[TCP].options).get("WScale")  # the case the scaling arithmetic is for
    assert 0.003 <= captured_at(client.packets, abort) - captured_at(client.packets, request) < 0.5
    assert not trigger_segments(server.packets)
    assert not any(p.dport == request.sport for p in tcp_packets(server.packets, src=SERVER) if "R" in flags(p))


def trigger_or_control(packets, host: str):
    return [p for p in tcp_packets(packets, src=CLIENT) if host.encode() in payload_of(p)]


def captured_at(packets, ip) -> float:
    """The capture timestamp of one IP layer that `tcp_packets` returned (it is the frame's)."""
    return float(next(frame.time for frame in packets if frame.payload is ip))


def test_ttlprobe_copies_the_ttl_the_request_arrived_with(boxlab):
    with boxlab.box("r1", "ttlprobe"):
        with boxlab.capture("c") as client:
            outcome = boxlab.raw_request(TRIGGER_HOST, ttl=5)
            client.wait_for(lambda ps: resets_from_server(ps) >= 4)
        assert_control_passes(boxlab)
    assert outcome == "reset"
    forged = [p for p in tcp_packets(client.packets, src=SERVER) if "R" in flags(p)]
    assert [flags(p) for p in forged] == ["R", "RA", "RA", "RA"]
    assert all(p.ttl == 5 for p in forged)  # left the client with 5, reached r1 with 5


def test_proxy_terminates_tcp_at_the_router(boxlab):
    with boxlab.box("r1", "proxy"):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            assert_control_passes(boxlab)
    synack = next(p for p in tcp_packets(client.packets, src=SERVER) if flags(p) == "SA")
    assert synack.ttl == BOX_TTL_AT_CLIENT  # answered by r1, not by the server (62)
    assert not tcp_packets(server.packets, src=CLIENT)
    assert tcp_packets(server.packets, src=R1_DN)  # the proxy's own connection


def test_proxy_turns_a_refused_connection_into_a_reset_after_the_handshake(boxlab):
    with boxlab.box("r1", "proxy", "--port", "81"):
        with boxlab.capture("c") as client:
            rc, _, _ = boxlab.curl(CONTROL_HOST, f"http://{SERVER}:81/")
    assert rc in (52, 56)  # empty reply / reset: the handshake had succeeded
    assert [flags(p) for p in tcp_packets(client.packets, src=SERVER)][:1] == ["SA"]
    assert any("R" in flags(p) for p in tcp_packets(client.packets, src=SERVER))


ABORTING_SERVER = f"""
import socket, struct
listener = socket.create_server(({SERVER!r}, 8080))
print("ready", flush=True)
for _ in range(5):
    conn, _ = listener.accept()
    conn.recv(4096)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
"""


def test_proxy_passes_the_servers_abort_on_as_a_reset(boxlab):
    import sys
    from boxlab import _readline
    aborter = boxlab.spawn("s", sys.executable, "-c", ABORTING_SERVER)
    assert _readline(aborter.stdout, 5).strip() == "ready"
    with boxlab.box("r1", "proxy", "--port", "8080"):
        with boxlab.capture("c") as client:
            rc, _, _ = boxlab.curl(TRIGGER_HOST, f"http://{SERVER}:8080/")
    assert rc == 56
    from_server = tcp_packets(client.packets, src=SERVER)
    reset = next(p for p in from_server if "R" in flags(p))
    assert reset.ttl == BOX_TTL_AT_CLIENT and not any("F" in flags(p) for p in from_server)


def test_lb_rewrites_the_address_only(boxlab):
    with boxlab.box("r2", "lb"):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            rc, code, _ = boxlab.curl(CONTROL_HOST, f"http://{VIP}/")
    assert (rc, code) == (0, "200")
    from_vip = tcp_packets(client.packets, src=VIP)
    assert from_vip and all(p.ttl == SERVER_TTL_AT_CLIENT for p in from_vip)  # genuine
    assert tcp_packets(server.packets, src=CLIENT, dst=SERVER)  # client address kept
    assert not tcp_packets(client.packets, src=SERVER)


@pytest.mark.parametrize("where", ["forward", "prerouting"])
def test_lossy_drops_the_first_request_once_and_doubles_the_first_answer(boxlab, where):
    with boxlab.box("r1", "lossy", "--where", where):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            assert_control_passes(boxlab)
    sent = [p for p in tcp_packets(client.packets, src=CLIENT) if payload_of(p)]
    assert len(sent) == 2 and sent[0].seq == sent[1].seq  # a genuine retransmission
    assert len([p for p in tcp_packets(server.packets, src=CLIENT) if payload_of(p)]) == 1
    answers = [p for p in tcp_packets(client.packets, src=SERVER) if payload_of(p)]
    first, second = answers[0], answers[1]
    assert bytes(first) == bytes(second)  # the same packet twice, checksums and all


def test_lb_synproxy_answers_the_handshake_itself(boxlab):
    """The trap: the SYN-ACK is the router's (TTL, IP-ID 0, window 0), the rest the server's."""
    with boxlab.box("r2", "lb", "--synproxy"):
        with boxlab.capture("c") as client, boxlab.capture("s") as server:
            rc, code, _ = boxlab.curl(CONTROL_HOST, f"http://{VIP}/")
    assert (rc, code) == (0, "200")
    from_vip = tcp_packets(client.packets, src=VIP)
    synack = next(p for p in from_vip if flags(p) == "SA")
    assert synack.ttl == SERVER_TTL_AT_CLIENT + 1 and synack.window == 0  # r2's syncookie
    assert all(p.ttl == SERVER_TTL_AT_CLIENT for p in from_vip if payload_of(p))
    syn_at_server = next(p for p in tcp_packets(server.packets, dst=SERVER) if flags(p) == "S")
    assert syn_at_server.src == CLIENT and syn_at_server.ttl == 64  # r2's own SYN, one hop
