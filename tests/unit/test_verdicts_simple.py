"""The simple verdicts, from hand-made packet sequences through probe.engine.analyze_flow.

Each scenario is written as the packet table a capture on the client would give: we are
192.0.2.10:40000 with TTL 64, the server 198.51.100.80:80 is 5 hops away (its packets arrive
with TTL 60) and 50 ms away. The expected verdicts and exit codes are the contract's.
"""

from __future__ import annotations

import pytest

from probe.cli import exit_code_for
from probe.engine import analyze_flow
from probe.engine.model import VERDICTS

from .conftest import FLOW, ROUTER, SERVER, SERVER_TTL, from_client, from_server, icmp_error

ISN = 2466954207
IRS = 1_000_000
RTT = 0.050
REQUEST = b"HEAD / HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 1256\r\n\r\n"
SYN_OPTIONS = (("MSS", 1460), ("SAckOK", True), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7))

SENT_REQUEST_END = ISN + 1 + len(REQUEST)


def handshake_and_request(t0: float = 0.0):
    """SYN, SYN-ACK (IP-ID 0, as Linux), handshake ACK and the request, as the probe sends them."""
    return [
        from_client(t0, "S", ISN, 0, win=64240, options=SYN_OPTIONS, ip_id=100),
        from_server(t0 + RTT, "SA", IRS, ISN + 1, ip_id=0, options=SYN_OPTIONS),
        from_client(t0 + RTT + 0.0001, "A", ISN + 1, IRS + 1, ip_id=101),
        from_client(t0 + RTT + 0.0002, "PA", ISN + 1, IRS + 1, ip_id=102, payload=REQUEST),
    ]


def request_time(packets) -> float:
    return next(p.t for p in packets if p.payload == REQUEST)


def received_origins(packets, analysis) -> list[str]:
    return [a.origin for p, a in zip(packets, analysis.attributions) if FLOW.toward_client(p) or p.proto == "icmp"]


def sent_origins(packets, analysis) -> list[str]:
    return [a.origin for p, a in zip(packets, analysis.attributions) if FLOW.sent_by_client(p)]


def check(packets):
    analysis = analyze_flow(packets, FLOW)
    assert len(analysis.attributions) == len(packets)
    assert set(sent_origins(packets, analysis)) <= {"self"}
    assert analysis.verdict in VERDICTS
    assert analysis.explanation.strip()
    return analysis


# --- scenarios -----------------------------------------------------------------------------------


def clean_exchange():
    packets = handshake_and_request()
    t = request_time(packets) + RTT
    response_end = IRS + 1 + len(RESPONSE)
    packets += [
        from_server(t, "PA", IRS + 1, SENT_REQUEST_END, ip_id=1, payload=RESPONSE),
        from_server(t + 0.0001, "FA", response_end, SENT_REQUEST_END, ip_id=2),
        from_client(t + 0.0002, "FA", SENT_REQUEST_END, response_end + 1),
        from_server(t + RTT + 0.0002, "A", response_end + 1, SENT_REQUEST_END + 1, ip_id=3),
    ]
    return packets


def test_clean():
    packets = clean_exchange()
    analysis = check(packets)
    assert (analysis.verdict, analysis.direction, analysis.hop) == ("clean", None, None)
    assert analysis.rtt_ms == pytest.approx(RTT * 1000)
    assert received_origins(packets, analysis) == ["server"] * 4
    assert exit_code_for(analysis.verdict, analysis.hop) == 0


def test_rtt_is_measured_from_the_last_syn_before_the_synack():
    packets = clean_exchange()
    # the first SYN was lost: it went out 1 s earlier and was retransmitted
    packets.insert(0, from_client(-1.0, "S", ISN, 0, win=64240, options=SYN_OPTIONS, ip_id=99))
    analysis = check(packets)
    assert analysis.verdict == "clean" and analysis.rtt_ms == pytest.approx(RTT * 1000)


def test_rst_ack_to_the_syn_is_a_server_reset():
    packets = [from_client(0.0, "S", ISN, 0, options=SYN_OPTIONS),
               from_server(RTT, "RA", 0, ISN + 1, win=0)]
    analysis = check(packets)
    assert (analysis.verdict, analysis.direction, analysis.hop) == ("server-reset", None, None)
    assert received_origins(packets, analysis) == ["server"]
    assert exit_code_for(analysis.verdict, analysis.hop) == 4


def test_rst_ack_after_the_request_from_the_server_is_a_server_reset():
    packets = handshake_and_request()
    # the application aborts: RST/ACK at the server's next sequence number, its TTL, a round trip later
    packets.append(from_server(request_time(packets) + RTT, "RA", IRS + 1, SENT_REQUEST_END, ip_id=1, win=64))
    analysis = check(packets)
    assert (analysis.verdict, analysis.direction, analysis.hop) == ("server-reset", None, None)
    assert received_origins(packets, analysis) == ["server", "server"]
    assert exit_code_for(analysis.verdict, analysis.hop) == 4


def test_only_syns_is_no_answer():
    packets = [from_client(t, "S", ISN, 0, options=SYN_OPTIONS) for t in (0.0, 1.0, 3.0)]
    analysis = check(packets)
    assert (analysis.verdict, analysis.direction, analysis.hop, analysis.rtt_ms) == ("no-answer", None, None, None)
    assert exit_code_for(analysis.verdict, analysis.hop) == 4


def test_icmp_admin_prohibited_from_a_router_is_unreachable_at_its_hop():
    packets = handshake_and_request()
    request = packets[-1]
    # the router at hop 3 sends with TTL 64; two routers on the way back take it to 62
    packets.append(icmp_error(request.t + 0.02, 3, 13, request, src=ROUTER, ttl=62, quoted_ttl=62))
    analysis = check(packets)
    assert (analysis.verdict, analysis.direction, analysis.hop) == ("unreachable", None, 3)
    assert received_origins(packets, analysis) == ["server", "path"]
    assert ROUTER in analysis.explanation
    assert exit_code_for(analysis.verdict, analysis.hop) == 3


def test_icmp_unreachable_from_the_server_itself_is_not_located():
    packets = handshake_and_request()
    packets.append(icmp_error(request_time(packets) + RTT, 3, 10, packets[-1], src=SERVER, ttl=SERVER_TTL))
    analysis = check(packets)
    assert (analysis.verdict, analysis.hop) == ("unreachable", None)
    assert exit_code_for(analysis.verdict, analysis.hop) == 4


def test_request_never_answered_is_dropped():
    packets = handshake_and_request()
    sent = request_time(packets)
    for backoff in (0.2, 0.6, 1.4):  # retransmissions at 200 ms, doubling
        packets.append(from_client(sent + backoff, "PA", ISN + 1, IRS + 1, payload=REQUEST))
    analysis = check(packets)
    assert (analysis.verdict, analysis.direction, analysis.hop) == ("dropped", None, None)
    assert received_origins(packets, analysis) == ["server"]
    assert exit_code_for(analysis.verdict, analysis.hop) == 4


def test_forged_reset_toward_us_is_a_middlebox_reset_to_client():
    packets = handshake_and_request()
    # 0.2 ms after the request, when the server is 50 ms away; TTL 64 where the server's is 60
    packets.append(from_server(request_time(packets) + 0.0002, "RA", IRS + 1, SENT_REQUEST_END, ttl=64,
                               ip_id=54321))
    analysis = check(packets)
    assert (analysis.verdict, analysis.direction) == ("middlebox-reset", "to-client")
    assert received_origins(packets, analysis) == ["server", "middlebox"]
    evidence = " ".join(analysis.attributions[-1].evidence)
    assert "64" in evidence and "60" in evidence  # the numbers that decided it
    assert exit_code_for(analysis.verdict, analysis.hop) == 3


def test_forged_reset_followed_by_the_real_response_is_still_to_client():
    packets = handshake_and_request()
    t = request_time(packets)
    packets.append(from_server(t + 0.0002, "RA", IRS + 1, SENT_REQUEST_END, ttl=64, ip_id=54321))
    packets.append(from_server(t + RTT, "PA", IRS + 1, SENT_REQUEST_END, ip_id=1, payload=RESPONSE))
    analysis = check(packets)
    assert (analysis.verdict, analysis.direction) == ("middlebox-reset", "to-client")
    assert received_origins(packets, analysis) == ["server", "middlebox", "server"]


def field_report():
    """The request goes unacknowledged; its retransmission ~245 ms later draws a bare RST that
    looks exactly like the server's own: seq = our ACK, window 0, IP-ID 0, the server's TTL."""
    packets = handshake_and_request()
    sent = request_time(packets)
    packets.append(from_client(sent + 0.245, "PA", ISN + 1, IRS + 1, payload=REQUEST))
    packets.append(from_server(sent + 0.245 + RTT, "R", IRS + 1, 0, ttl=SERVER_TTL, ip_id=0, win=0))
    return packets


def test_field_report_is_a_middlebox_reset_to_server():
    packets = field_report()
    analysis = check(packets)
    assert (analysis.verdict, analysis.direction) == ("middlebox-reset", "to-server")
    assert received_origins(packets, analysis) == ["server", "server"]  # nothing toward us was forged
    assert exit_code_for(analysis.verdict, analysis.hop) == 3


def test_bare_reset_after_the_server_closed_is_not_blamed_on_a_middlebox():
    # Contrast to the field report: the server had sent its FIN, so a bare RST to a late
    # segment of ours is what RFC 9293 has it send; nothing was done in our name.
    packets = clean_exchange()[:6]  # ... response, server FIN
    response_end = IRS + 1 + len(RESPONSE)
    t = packets[-1].t
    packets.append(from_client(t + 0.3, "A", SENT_REQUEST_END, response_end + 1))
    packets.append(from_server(t + 0.3 + RTT, "R", response_end + 1, 0, ip_id=0, win=0))
    analysis = check(packets)
    assert analysis.verdict != "middlebox-reset"


# --- exit codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("verdict, hop, code", [
    ("clean", None, 0),
    ("middlebox-reset", None, 3), ("middlebox-reset", 2, 3),
    ("middlebox-response", None, 3), ("middlebox-response", 4, 3),
    ("unreachable", 3, 3), ("dropped", 2, 3),
    ("unreachable", None, 4), ("dropped", None, 4),
    ("server-reset", None, 4), ("no-answer", None, 4),
])
def test_exit_code_for_each_verdict(verdict, hop, code):
    assert exit_code_for(verdict, hop) == code


def test_every_verdict_has_a_non_usage_exit_code():
    for verdict in VERDICTS:
        assert exit_code_for(verdict, None) in (0, 3, 4)
