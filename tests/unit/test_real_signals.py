"""The signals that real injectors taught the engine (issue 13), each from a hand-made packet
sequence that fires it, beside one of its known false positives that must not fire.

The flow is the unit tests' usual one (tests/unit/conftest.py): we are 192.0.2.10:40000 with TTL 64,
the server 198.51.100.80:80 answers with TTL 60 (hop 5) from 50 ms away, its SYN-ACK has IP-ID 0 and
DF, and it counts its IP-IDs from 7000 per connection, as Linux does.
"""

from __future__ import annotations

from dataclasses import replace

from probe.commands.common import exit_code_for
from probe.engine import analyze_flow
from probe.engine import heuristics as h
from probe.engine.baseline import build_baseline
from probe.engine.signatures import FINGERPRINTS

from .conftest import FLOW, ROUTER, SERVER, from_client, from_server, icmp_error

ISN, IRS, RTT = 1000, 5_000_000, 0.050
REQUEST = b"HEAD / HTTP/1.1\r\nHost: blocked.example\r\nUser-Agent: curl/8.5.0\r\n\r\n"
END = ISN + 1 + len(REQUEST)
PAGE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def exchange(request_ttl: int = 64, *, server_ttl: int = 60, request_at: float = RTT + 0.0002):
    """SYN, SYN-ACK, handshake ACK and the request (IP-ID 102)."""
    return [
        from_client(0.0, "S", ISN, 0, ip_id=100),
        from_server(RTT, "SA", IRS, ISN + 1, ttl=server_ttl, ip_id=0),
        from_client(RTT + 0.0001, "A", ISN + 1, IRS + 1, ip_id=101),
        replace(from_client(request_at, "PA", ISN + 1, IRS + 1, ip_id=102, payload=REQUEST), ttl=request_ttl),
    ]


def judged(packets):
    analysis = analyze_flow(packets, FLOW)
    origins = [a.origin for p, a in zip(packets, analysis.attributions) if FLOW.toward_client(p)]
    return analysis, origins


def evidence_of(packets, index):
    return " | ".join(analyze_flow(packets, FLOW).attributions[index].evidence)


# --- "could not" beats "could" ----------------------------------------------------------------------


def test_a_copycat_reset_sooner_than_the_path_allows_is_forged_whatever_it_copies():
    """The held-out live case: TTL, DF and the next IP-ID copied, a RST/ACK 2.8 ms after the request."""
    packets = exchange()
    request = packets[-1]
    packets.append(from_server(request.t + 0.0028, "RA", IRS + 1, END, ttl=60, ip_id=7000, win=64))
    analysis, origins = judged(packets)
    assert origins[-1] == "middlebox"
    assert analysis.verdict == "middlebox-reset" and exit_code_for(analysis.verdict, analysis.hop) == 3
    assert "arrived 2.8 ms after our request" in evidence_of(packets, 4)


def test_the_same_abort_a_round_trip_later_is_the_servers():
    packets = exchange()
    packets += [from_server(packets[-1].t + RTT, "A", IRS + 1, END, ip_id=7000, win=64),
                from_server(packets[-1].t + RTT + 0.001, "RA", IRS + 1, END, ip_id=7001, win=64)]
    analysis, origins = judged(packets)
    assert origins[-1] == "server" and analysis.verdict == "server-reset"


def test_a_bare_reset_is_timed_from_the_request_that_drew_it_not_the_handshake_ack():
    packets = exchange(request_at=RTT + 0.4)  # as CenTrace sends it: the request long after the ACK
    packets.append(from_server(packets[-1].t + RTT, "R", IRS + 1, 0, ip_id=0, win=0))
    assert "after our request it answers" in evidence_of(packets, 4)


def test_acknowledging_bytes_never_sent_is_decisive_and_an_exact_ack_is_not():
    packets = exchange()
    forged = from_server(packets[-1].t + RTT, "RA", IRS + 1, END + 1460, ip_id=7000, win=64)
    _, origins = judged(packets + [forged])
    assert origins[-1] == "middlebox"
    _, origins = judged(packets + [replace(forged, ack=END)])
    assert origins[-1] == "server"


def test_an_answer_to_a_request_that_expired_on_the_way_is_not_the_servers():
    packets = exchange(request_ttl=3)
    request = packets[-1]
    packets.append(icmp_error(request.t + 0.003, 11, 0, request, src=ROUTER, ttl=252, quoted_ttl=1))
    packets.append(from_server(request.t + RTT, "PA", IRS + 1, END, ip_id=7000, payload=PAGE))
    analysis, origins = judged(packets)
    assert origins[-1] == "middlebox" and analysis.verdict == "middlebox-response"
    assert "expired on the way" in evidence_of(packets, 5)


def test_an_answer_after_a_full_ttl_retransmission_of_the_expired_request_is_the_servers():
    packets = exchange(request_ttl=3)
    request = packets[-1]
    packets.append(icmp_error(request.t + 0.003, 11, 0, request, src=ROUTER, ttl=252, quoted_ttl=1))
    packets.append(replace(request, t=request.t + 0.3, ttl=64, ip_id=103))
    packets.append(from_server(request.t + 0.3 + RTT, "PA", IRS + 1, END, ip_id=7000, payload=PAGE))
    analysis, origins = judged(packets)
    assert origins[-1] == "server" and analysis.verdict == "clean"


def test_other_bytes_for_the_same_sequence_numbers_blame_the_race_winner():
    """Quantum Insert: the injected page arrives first; the server's own copy of those bytes later."""
    packets = exchange()
    t = packets[-1].t
    forged = from_server(t + RTT, "PA", IRS + 1, END, ip_id=7000, payload=b"HTTP/1.1 302 Found\r\n\r\n")
    genuine = from_server(t + RTT + 0.004, "PA", IRS + 1, END, ip_id=7001, payload=b"HTTP/1.1 200 OK\r\n\r\n")
    analysis, origins = judged(packets + [forged, genuine])
    assert origins == ["server", "middlebox", "server"]
    assert analysis.verdict == "middlebox-response"
    retransmitted = replace(forged, t=t + RTT + 0.3, ip_id=7001)  # the same bytes again: a retransmission
    analysis, origins = judged(packets + [forged, retransmitted])
    assert origins == ["server", "server", "server"] and analysis.verdict == "clean"


# --- the stack's fingerprint ------------------------------------------------------------------------


def nifty(**changes):
    """CenTrace's nifty.org reset, re-made: the server 28 hops away with an initial TTL of 255."""
    packets = exchange(server_ttl=228, request_at=RTT + 0.4)
    reset = from_server(packets[-1].t + RTT, "R", IRS + 1, 0, ttl=43, ip_id=102, win=65535, df=False)
    return packets + [replace(reset, **changes)]


def test_a_reset_from_another_stack_nearer_than_the_server_is_forged():
    packets = nifty()
    analysis, origins = judged(packets)
    assert origins[-1] == "middlebox" and analysis.verdict == "middlebox-reset"
    evidence = evidence_of(packets, 4)
    assert "started from 64, the server's from 255" in evidence
    assert "IP-ID 102, the IP-ID of our request" in evidence
    assert "DF clear" in evidence
    assert "sequence number exactly" not in evidence  # on the wire for every injector: counts for nothing


def test_a_backend_behind_a_syn_proxy_is_not_blamed_for_its_own_stack():
    """A SYN proxy (initial TTL 255, hop 6) shakes hands; the server behind it (64, hop 7) answers."""
    packets = exchange(server_ttl=250)
    answer = from_server(packets[-1].t + RTT + 0.002, "PA", IRS + 1, END, ttl=58, ip_id=7000, payload=PAGE)
    analysis, origins = judged(packets + [answer])
    assert origins[-1] == "server" and analysis.verdict == "clean"
    same_distance = replace(answer, ttl=57)  # the textbook's weather capture: proxy and server at one distance
    analysis, origins = judged(exchange(server_ttl=249) + [same_distance])
    assert origins[-1] == "server" and analysis.verdict == "clean"


def test_a_block_page_from_a_nearer_stack_does_not_become_the_servers_fingerprint():
    """CenTrace's bisexual.org page: TTL 83 (initial 128), no DF, after a SYN-ACK of TTL 238 (255)."""
    packets = exchange(server_ttl=238)
    page = from_server(packets[-1].t + RTT * 0.97, "FA", IRS + 1, END, ttl=83, ip_id=51492, win=16384,
                       payload=PAGE, df=False)
    analysis, origins = judged(packets + [page])
    assert build_baseline(packets + [page], FLOW).server_ttl == 238
    assert origins[-1] == "middlebox" and analysis.verdict == "middlebox-response"


def test_df_alone_never_blames():
    packets = exchange()
    packets += [from_server(packets[-1].t + RTT, "A", IRS + 1, END, ip_id=7000),
                from_server(packets[-1].t + RTT + 0.001, "RA", IRS + 1, END, ip_id=7001, win=64, df=False)]
    analysis, origins = judged(packets)
    assert origins[-1] == "server" and analysis.verdict == "server-reset"
    assert "DF clear" in evidence_of(packets, 5)


def test_ip_id_zero_is_never_taken_as_copied():
    packets = exchange()
    packets[-1] = replace(packets[-1], ip_id=0)  # some clients send IP-ID 0 on every DF packet
    reset = from_server(packets[-1].t + RTT, "R", IRS + 1, 0, ip_id=0, win=0)
    baseline = build_baseline(packets + [reset], FLOW)
    assert h.ip_id_copied(packets + [reset], 4, FLOW, baseline) == []


def burst(ip_ids, *, df, flags="RA", seqs=(0, 1460, 4380), windows=(64, 64, 64)):
    packets = exchange()
    t = packets[-1].t + 0.004
    return packets + [from_server(t + i * 0.0001, flags, IRS + 1 + seq_offset, END, ip_id=ip_id, win=win, df=df,
                                  ttl=62) for i, (ip_id, seq_offset, win) in enumerate(zip(ip_ids, seqs, windows))]


def test_one_ip_id_across_a_burst_is_a_template_and_linux_zeroes_are_not():
    packets = burst((4242, 4242, 4242), df=False)
    baseline = build_baseline(packets, FLOW)
    assert h.same_ip_id_burst(packets, 4, FLOW, baseline)[0].weight == 2
    packets = burst((0, 0, 0), df=True)
    assert h.same_ip_id_burst(packets, 4, FLOW, build_baseline(packets, FLOW)) == []


def test_a_reset_short_of_the_request_a_round_trip_later_is_suggestive_only():
    packets = exchange()
    packets.append(from_server(packets[-1].t + RTT * 1.2, "RA", IRS + 1, ISN + 1, ip_id=7000, win=64))
    baseline = build_baseline(packets, FLOW)
    assert h.ack_short_of_request(packets, 4, FLOW, baseline)[0].weight == 1
    analysis, origins = judged(packets)
    assert origins[-1] == "server"


# --- published fingerprints -------------------------------------------------------------------------


def signals(packets, index):
    return h.published_fingerprint(packets, index, FLOW, build_baseline(packets, FLOW))


def test_each_published_fingerprint_names_its_source():
    assert all(f.source and f.look_alike and f.weight <= 2 for f in FINGERPRINTS)


def test_the_henan_firewall_and_gfw_type_one_are_recognised_and_a_linux_reset_is_not():
    packets = exchange()
    henan = from_server(packets[-1].t + 0.0028, "RA", IRS + 1, END, ttl=58, ip_id=1, win=0, df=False,
                        payload=bytes(range(1, 10)) + b"\x00")
    assert "Henan firewall" in signals(packets + [henan], 4)[0].sentence
    gfw_one = from_server(packets[-1].t + 0.018, "R", IRS + 1, 0, ttl=99, ip_id=0, win=0, df=False)
    assert "GFW (type I)" in signals(packets + [gfw_one], 4)[0].sentence
    linux = replace(gfw_one, df=True, ttl=60)
    assert signals(packets + [linux], 4) == []


def test_gfw_type_two_is_three_identical_copies_and_a_stacks_resets_are_not():
    packets = burst((777, 777, 777), df=True, seqs=(0, 0, 0))
    assert any("GFW (type II)" in s.sentence for s in signals(packets, 4))
    packets = burst((777, 778, 779), df=True, seqs=(0, 0, 0))
    assert not any("GFW (type II)" in s.sentence for s in signals(packets, 4))


def test_the_port_443_block_counts_its_windows_up_by_one():
    packets = burst((5, 9, 3), df=False, seqs=(0, 0, 0), windows=(1980, 1982, 1981))
    assert any("port-443" in s.sentence for s in signals(packets, 4))
    packets = burst((5, 9, 3), df=False, seqs=(0, 0, 0), windows=(1980, 1990, 2000))
    assert not any("port-443" in s.sentence for s in signals(packets, 4))


# --- no SYN-ACK: two stacks in the server's name -----------------------------------------------------


def test_without_a_syn_ack_the_nearer_of_two_stacks_is_blamed():
    """CenTrace's binance.com: the SYN's reset starts from 64 (hop 18), later ones from 255 (hop 17)."""
    packets = [from_client(0.0, "S", ISN, 0, ip_id=100),
               from_server(0.071, "RA", 0, ISN + 1, ttl=47, ip_id=46111, win=0),
               from_client(0.196, "A", ISN + 1, 1, ip_id=101),
               from_server(0.266, "RA", 1, ISN + 1, ttl=239, ip_id=41903, win=8192, df=False)]
    analysis, origins = judged(packets)
    assert origins == ["server", "middlebox"] and analysis.verdict == "middlebox-reset"
    analysis, origins = judged(packets[:2])  # a closed port alone
    assert origins == ["server"] and analysis.verdict == "server-reset"


# --- honest words -----------------------------------------------------------------------------------


def test_a_reset_nobody_can_vouch_for_is_ambiguous_not_the_servers():
    packets = exchange()
    packets.append(from_server(packets[-1].t + RTT, "R", IRS + 1, 0, ip_id=102, win=0))  # IP-ID copied: weight 2
    analysis, origins = judged(packets)
    assert origins[-1] == "unknown"
    assert analysis.verdict == "ambiguous-reset" and exit_code_for(analysis.verdict, analysis.hop) == 4
    assert "The server reset" not in analysis.explanation


# --- ICMP: what filters, and how a dead host looks -----------------------------------------------------


def test_a_routers_host_unreachable_to_our_syn_is_a_dead_host_not_interference():
    syn = from_client(0.0, "S", ISN, 0, ip_id=100)
    analysis = analyze_flow([syn, icmp_error(0.014, 3, 1, syn, ttl=61)], FLOW)
    assert analysis.verdict == "unreachable" and analysis.hop is None
    assert exit_code_for(analysis.verdict, analysis.hop) == 4
    assert "down" in analysis.explanation


def test_administratively_prohibited_is_a_filter_at_its_hop():
    syn = from_client(0.0, "S", ISN, 0, ip_id=100)
    analysis = analyze_flow([syn, icmp_error(0.014, 3, 13, syn, ttl=63)], FLOW)
    assert analysis.verdict == "unreachable" and analysis.hop == 2
    assert exit_code_for(analysis.verdict, analysis.hop) == 3


def test_host_unreachable_after_the_server_answered_stands_where_its_path_would_not_send_it():
    packets = exchange()
    packets.append(icmp_error(packets[-1].t + 0.003, 3, 1, packets[-1], ttl=63))
    analysis = analyze_flow(packets, FLOW)
    assert analysis.verdict == "unreachable" and analysis.hop == 2


def test_port_unreachable_from_the_server_itself_is_not_located():
    syn = from_client(0.0, "S", ISN, 0, ip_id=100)
    analysis = analyze_flow([syn, icmp_error(RTT, 3, 3, syn, src=SERVER, ttl=60)], FLOW)
    assert analysis.verdict == "unreachable" and analysis.hop is None


# --- the yardstick itself ------------------------------------------------------------------------------


def test_a_handshake_slowed_on_the_way_does_not_make_the_servers_answers_too_early():
    """CenTrace's torproject control run: a 754 ms handshake (a radio waking up, a queue), then the
    server answering each of our segments 80 ms after it. Two segments answered that fast are the
    path's real round trip, not two forgeries."""
    packets = [from_client(0.0, "S", ISN, 0, ip_id=100),
               from_server(0.754, "SA", IRS, ISN + 1, ip_id=0),
               from_client(0.755, "A", ISN + 1, IRS + 1, ip_id=101),
               from_client(0.900, "PA", ISN + 1, IRS + 1, ip_id=102, payload=REQUEST)]
    packets += [from_server(0.980, "A", IRS + 1, END, ip_id=7000),
                from_server(0.981, "PA", IRS + 1, END, ip_id=7001, payload=PAGE),
                from_client(2.0, "FA", END, IRS + 1 + len(PAGE), ip_id=103),
                from_server(2.078, "FA", IRS + 1 + len(PAGE), END + 1, ip_id=7002)]
    analysis, origins = judged(packets)
    assert "middlebox" not in origins and analysis.verdict == "clean"


def test_one_fast_answer_alone_cannot_shorten_the_yardstick():
    """The copycat again, now after a slow handshake: its reset is one sample, and it is a reset."""
    packets = exchange()
    packets.append(from_server(packets[-1].t + 0.0028, "RA", IRS + 1, END, ip_id=7000, win=64))
    assert build_baseline(packets, FLOW).rtt == RTT


def test_a_request_short_of_the_server_that_no_router_answered_is_expired_not_dropped():
    packets = exchange(request_ttl=7)
    analysis = analyze_flow(packets, FLOW, expires_within=(9, "203.0.113.9"))
    assert analysis.verdict == "expired" and exit_code_for(analysis.verdict, analysis.hop) == 0
    assert analyze_flow(packets, FLOW).verdict == "dropped"  # without what the capture proved


# --- IPv6 -------------------------------------------------------------------------------------------------


def v6(packets, label=0x5A5A5):
    """The same exchange over IPv6: the server keeps one flow label, IP-IDs are all 0."""
    return [replace(p, version=6, ip_id=0, df=True, flow_label=label if FLOW.toward_client(p) else 0x11111)
            for p in packets]


def test_an_ipv6_reset_with_another_flow_label_and_hop_limit_is_forged_and_a_zero_ip_id_says_nothing():
    packets = v6(exchange())
    packets += v6([from_server(packets[-1].t + RTT, "A", IRS + 1, END)])
    forged = replace(v6([from_server(packets[-1].t + 0.001, "RA", IRS + 1, END, ttl=62, win=0)])[0],
                     flow_label=0x12345)
    baseline = build_baseline(packets + [forged], FLOW)
    assert h.flow_label(packets + [forged], len(packets), FLOW, baseline)[0].weight == 2
    assert h.ip_id_habit(forged, baseline) == []
    analysis, origins = judged(packets + [forged])
    assert origins[-1] == "middlebox"
    genuine = replace(forged, ttl=60, flow_label=0x5A5A5)
    analysis, origins = judged(packets + [genuine])
    assert origins[-1] == "server" and analysis.verdict == "server-reset"


def test_an_ipv6_bare_reset_for_a_forgotten_connection_may_carry_another_flow_label():
    """The field report over IPv6, as the lab's Linux server sends it: the reset answering our
    retransmission comes from the control socket (tcp_v6_send_reset without a socket), labelled
    from a hash of the addresses and ports, not with the connection's label: no signal."""
    packets = v6(exchange())
    genuine = replace(v6([from_server(packets[-1].t + RTT, "R", IRS + 1, 0, win=0)])[0], flow_label=0x2B48F)
    assert h.flow_label(packets + [genuine], len(packets), FLOW, build_baseline(packets + [genuine], FLOW)) == []
    forged_ack = replace(genuine, flags="RA", ack=END)  # a RST/ACK keeps the connection's label on Linux
    assert h.flow_label(packets + [forged_ack], len(packets), FLOW,
                        build_baseline(packets + [forged_ack], FLOW))[0].weight == 2


def test_after_a_retransmission_a_new_ipv6_flow_label_weighs_less():
    """Linux draws a new label on RTO and on a duplicate data segment (sk_rethink_txhash): the
    server's abort after our request went out twice may carry another label than its SYN-ACK."""
    packets = v6(exchange())
    request = next(p for p in packets if FLOW.sent_by_client(p) and p.length)
    packets.append(replace(request, t=packets[-1].t + 0.2))  # our request again
    abort = replace(v6([from_server(packets[-1].t + RTT, "RA", IRS + 1, END)])[0], flow_label=0x2B48F)
    signals = h.flow_label(packets + [abort], len(packets), FLOW, build_baseline(packets + [abort], FLOW))
    assert [s.weight for s in signals] == [1]
    analysis, origins = judged(packets + [abort])
    assert origins[-1] == "server" and analysis.verdict == "server-reset"


def test_a_new_ipv6_flow_label_the_server_keeps_is_its_own():
    """Two SYN-ACKs (our SYN went out twice): the second under a new label, which the server's
    data then carries; a reset with that label is not suspicious for its label."""
    packets = v6(exchange())
    packets.append(replace(v6([from_server(packets[-1].t + RTT, "A", IRS + 1, END)])[0], flow_label=0xC6B49))
    reset = replace(v6([from_server(packets[-1].t + 0.01, "RA", IRS + 1, END)])[0], flow_label=0xC6B49)
    baseline = build_baseline(packets + [reset], FLOW)
    assert h.flow_label(packets + [reset], len(packets), FLOW, baseline) == []


AF21, CS1 = 0x48, 0x20  # DSCP 18 and 8 in the traffic-class byte (RFC 2597, RFC 2474)


def marked(packets, server_tos, client_tos=0):
    """The IPv6 exchange with the server's packets carrying `server_tos` and ours `client_tos`."""
    return [replace(p, tos=server_tos if FLOW.toward_client(p) else client_tos) for p in packets]


def test_an_ipv6_reset_with_another_dscp_than_the_servers_counts_one_and_never_alone():
    packets = marked(v6(exchange()) + v6([from_server(0.2, "A", IRS + 1, END)]), AF21)
    copycat = replace(packets[-1], t=packets[-1].t + 0.001, flags="RA", tos=0)  # copies all but the DSCP
    baseline = build_baseline(packets + [copycat], FLOW)
    signals = h.traffic_class(packets + [copycat], len(packets), FLOW, baseline)
    assert [s.weight for s in signals] == [1] and not signals[0].decisive
    assert "DSCP 0" in signals[0].sentence and "DSCP 18" in signals[0].sentence
    assert judged(packets + [copycat])[1][-1] != "middlebox"  # weight 1 alone blames nothing
    injected = replace(copycat, ttl=62, flow_label=0x12345)
    with_dscp = evidence_of(packets + [injected], len(packets))
    assert judged(packets + [injected])[1][-1] == "middlebox" and "traffic class 0x00" in with_dscp
    assert h.traffic_class(packets + [injected], len(packets), FLOW, build_baseline(packets + [injected], FLOW))


def test_a_path_that_re_marks_dscp_both_ways_or_changes_ecn_draws_no_traffic_class_signal():
    """The known false positives: a path re-marking every packet (the server's all carry the new
    mark; its bare reset reflects our segment as re-marked toward it, tcp_v6_send_reset), and ECN
    bits that differ per packet (ECT(0) on data only, CE from a congested router)."""
    exchange6 = v6(exchange())
    data = v6([from_server(0.2, "PA", IRS + 1, END, payload=PAGE)])
    remarked = marked(exchange6 + data, CS1, client_tos=CS1)
    reflected = replace(v6([from_server(0.3, "R", IRS + 1 + len(PAGE), 0, win=0)])[0], tos=AF21)
    cases = [remarked + [replace(remarked[-1], t=0.3, flags="FA", seq=IRS + 1 + len(PAGE), payload=b"")],
             marked(exchange6 + data, 0, client_tos=AF21) + [reflected]]
    ecn = marked(exchange6, 0) + [replace(data[0], tos=0x02), replace(data[0], t=0.21, tos=0x03, seq=IRS + 1 + len(PAGE),
                                                                  payload=b"", flags="FA")]
    cases.append(ecn)
    for packets in cases:
        baseline = build_baseline(packets, FLOW)
        assert all(h.traffic_class(packets, i, FLOW, baseline) == [] for i, p in enumerate(packets)
                   if FLOW.toward_client(p)), packets
        analysis, origins = judged(packets)
        assert set(origins) == {"server"}, analysis.verdict


def test_a_dscp_the_server_keeps_after_changing_it_is_its_own():
    packets = marked(v6(exchange()), 0) + [replace(v6([from_server(0.2, "A", IRS + 1, END)])[0], tos=AF21)]
    abort = replace(packets[-1], t=0.25, flags="RA")
    assert h.traffic_class(packets + [abort], len(packets), FLOW, build_baseline(packets + [abort], FLOW)) == []


# --- a reset for a segment that found the connection closed ----------------------------------------


def closing_race(reset_seq_from_our_ack: bool):
    """HTTPS on nginx, measured in the lab (scenario 29): the server answers, then sends its
    close_notify and FIN; our close_notify (data) crosses them and reaches a closed socket, whose
    stack answers with a bare reset at our segment's ACK number, behind the 25 bytes (its
    close_notify and FIN) it had already sent."""
    body = PAGE
    packets = exchange() + [
        from_server(2 * RTT + 0.001, "PA", IRS + 1, END, ip_id=1, payload=body),
        from_client(2 * RTT + 0.002, "PA", END, IRS + 1 + len(body), ip_id=103, payload=b"n" * 24),  # close_notify
        from_client(2 * RTT + 0.0025, "FA", END + 24, IRS + 1 + len(body), ip_id=104),
        from_server(2 * RTT + 0.020, "FPA", IRS + 1 + len(body), END, ip_id=2, payload=b"s" * 24),
        from_client(2 * RTT + 0.021, "A", END + 25, IRS + 1 + len(body) + 25, ip_id=105),
    ]
    server_next = IRS + 1 + len(body) + 25  # after its close_notify and FIN
    seq = IRS + 1 + len(body) if reset_seq_from_our_ack else server_next + 1460
    packets.append(from_server(3 * RTT + 0.002, "R", seq, 0, ip_id=0, win=0))
    return packets


def test_a_bare_reset_at_the_ack_of_our_segment_is_the_closed_servers_not_a_wrong_sequence_number():
    packets = closing_race(reset_seq_from_our_ack=True)
    analysis, origins = judged(packets)
    assert origins[-1] == "server", evidence_of(packets, len(packets) - 1)
    assert "next byte belongs" not in evidence_of(packets, len(packets) - 1)
    assert analysis.verdict == "clean"


def test_a_bare_reset_guessing_ahead_is_still_off_by_its_offset():
    """The known false positive the exemption must not open: an injector's +1460 guess."""
    packets = closing_race(reset_seq_from_our_ack=False)
    assert "sequence number +1460 from where the server's next byte belongs" in evidence_of(packets, len(packets) - 1)


# --- an acknowledgement the server's own packets later take back (a slow block-page box) ---------

BLOCK_PAGE = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def slow_block_page(page_at: float, page_ttl: int = 63):
    """The lab's block-page box when it answers late (seen in a batch of 500, 8 times: the
    box's NFQUEUE loop was slow): it dropped the request and sent its page 1.7 round trips
    after it, so no timing proves it (the timing even speaks for the server); our FIN went out after the page, beyond what the server had, and the
    server answered each copy of it with its duplicate ACK at the request's start."""
    packets = exchange()
    packets += [
        from_server(page_at, "FPA", IRS + 1, END, ttl=page_ttl, ip_id=8295, df=page_ttl == 60, payload=BLOCK_PAGE),
        from_client(page_at + 0.001, "FA", END, IRS + 2 + len(BLOCK_PAGE), ip_id=103),
    ]
    for k, at in enumerate((0.08, 0.3, 0.7)):  # the server's dup ACKs to our FIN and its retransmissions
        packets.append(from_server(page_at + 0.001 + RTT + at, "A", IRS + 1, ISN + 1, ip_id=7001 + k))
    return packets


def test_a_late_page_whose_ack_the_server_takes_back_is_forged():
    packets = slow_block_page(page_at=RTT + 1.7 * RTT)
    page = next(i for i, p in enumerate(packets) if p.length and FLOW.toward_client(p))
    baseline = build_baseline(packets, FLOW)
    [signal] = h.acknowledgement_taken_back(packets, page, FLOW, baseline)
    assert signal.weight == 2 and f"{len(REQUEST)} byte(s) more" in signal.sentence
    analysis, origins = judged(packets)
    assert analysis.verdict == "middlebox-response" and origins[1] == "middlebox"


def test_the_servers_own_ack_reordered_behind_its_data_takes_nothing_back():
    """False positive: the server's ACK of our handshake (sent before its answer) arrives just
    after its answer, less than a round trip later: no contradiction is read from it."""
    packets = exchange()
    answer = from_server(2 * RTT + 0.001, "PA", IRS + 1, END, ttl=59, ip_id=7001, payload=PAGE)
    reordered = from_server(2 * RTT + 0.010, "A", IRS + 1, ISN + 1, ip_id=7000)
    packets += [answer, reordered]
    baseline = build_baseline(packets, FLOW)
    assert h.acknowledgement_taken_back(packets, len(packets) - 2, FLOW, baseline) == []


def test_two_packets_with_the_servers_fingerprint_are_not_judged_against_each_other():
    """False positive: a box that copies the server's TTL and DF makes its page look like the
    server's own (a member of the baseline); two 'server' packets disagreeing is not evidence
    of which one is the server's, so this signal stays silent."""
    packets = slow_block_page(page_at=RTT + 1.7 * RTT, page_ttl=60)
    page = next(i for i, p in enumerate(packets) if p.length and FLOW.toward_client(p))
    baseline = build_baseline(packets, FLOW)
    assert page in baseline.members
    assert h.acknowledgement_taken_back(packets, page, FLOW, baseline) == []
