"""The trace's reasoning (probe.engine.trace): one request's fate from its packets, and the hop
where the trigger's fate first parts from the control's. Packet tables made by hand: the server
is 5 hops away (TTL 60 on arrival), routers answer in their own name."""

from __future__ import annotations

import pytest

from probe.engine.trace import (Fate, HopRow, SentRequest, apply_trace, differs, fate_of, locate_box)
from probe.engine import analyze_flow
from probe.engine.model import Analysis

from .conftest import FLOW, from_client, from_server, icmp_error
from .fakenet import FakeNet, target

ISN, IRS = 1000, 50000
REQUEST = b"HEAD / HTTP/1.1\r\nHost: blocked.example\r\n\r\n"
ROUTER_2 = "198.51.100.2"


def attempt(ttl: int, *replies_after_request):
    """SYN, SYN-ACK, ACK, the request with `ttl`, then `replies_after_request(request)`."""
    request = from_client(0.0603, "PA", ISN + 1, IRS + 1, ttl=ttl, ip_id=77, payload=REQUEST)
    packets = [from_client(0.0, "S", ISN), from_server(0.060, "SA", IRS, ISN + 1),
               from_client(0.0602, "A", ISN + 1, IRS + 1), request]
    packets += [make(request) for make in replies_after_request]
    return packets, SentRequest(ttl, request.seq, request.length, 77, 0, request.t)


def expired(src=ROUTER_2, t=0.0605):
    return lambda request: icmp_error(t, 11, 0, request, src=src, quoted_ttl=1)


def forged_rst(ttl=63, t=0.0606):
    return lambda request: from_server(t, "R", IRS + 1, 0, ttl=ttl, win=0)


def server_answer(t=0.120):
    return lambda request: from_server(t, "PA", IRS + 1, ISN + 1 + len(REQUEST), payload=b"HTTP/1.1 200 OK\r\n\r\n")


def fate(ttl, *replies, server_distance=5) -> Fate:
    packets, sent = attempt(ttl, *replies)
    return fate_of(packets, FLOW, sent, server_distance)


def test_fates_of_single_requests():
    assert fate(2, expired()).word == "time-exceeded"
    assert fate(2, expired()).router == ROUTER_2
    assert fate(2, expired()).rtt_ms == pytest.approx(0.2, abs=0.01)
    assert fate(2, expired(), forged_rst()).word == "time-exceeded+reset"
    assert fate(3, forged_rst()).word == "reset"
    assert fate(3).word == "silent"
    assert fate(5, server_answer()).word == "server"
    packets, sent = attempt(2)
    assert fate_of(packets[:1], FLOW, None, 5).word == "no-handshake"


def test_an_answer_short_of_the_server_is_forged_even_with_the_servers_ttl():
    """A request with TTL 3 cannot reach a server 5 hops away: whatever answers it is not the
    server, however well it copies the server's TTL."""
    assert fate(3, forged_rst(ttl=60)).word == "reset"
    assert fate(3, server_answer()).word == "response"
    # at the server's distance, the same answer with the server's TTL is the server's
    assert fate(5, server_answer()).word == "server"


def test_at_the_servers_distance_an_answer_arriving_unlike_the_synack_is_forged():
    assert fate(5, forged_rst(ttl=61)).word == "reset"


def test_an_icmp_error_quoting_another_packet_is_not_this_requests_fate():
    def other(request):
        stranger = from_client(0.06, "PA", ISN + 999, IRS + 1, ip_id=5, payload=b"x")
        return icmp_error(0.0605, 11, 0, stranger)

    packets, sent = attempt(2, other)
    assert fate_of(packets, FLOW, sent, 5).word == "silent"


def test_a_quoted_header_that_changed_on_the_way_is_reported():
    def rewritten(request):
        packet = icmp_error(0.0605, 11, 0, request, src=ROUTER_2, quoted_ttl=1)
        from dataclasses import replace

        return replace(packet, quoted=replace(packet.quoted, tos=0x20, seq=packet.quoted.seq + 7))

    found = fate(2, rewritten)
    assert found.word == "time-exceeded"
    assert any("TOS" in change for change in found.rewritten)
    assert any("shifted by 7" in change for change in found.rewritten)


TE = Fate("time-exceeded", "r")
SERVER = Fate("server", "s")


def rows(*pairs, confirmed_at=None):
    return [HopRow(ttl, None, None, trigger, control, ttl == confirmed_at)
            for ttl, (trigger, control) in enumerate(pairs, start=1)]


def test_a_tap_is_at_the_hop_where_the_expired_copy_drew_both_answers():
    tap = Fate("time-exceeded+reset", "r2", reply_ttl=63)
    result = locate_box(rows((TE, TE), (tap, TE), confirmed_at=2))
    assert (result.interference, result.hop, result.kind, result.bracket) == (True, 2, "on-path", (1, 3))


def test_a_box_in_the_forwarding_path_shows_one_ttl_later_than_its_hop():
    for consumed in (Fate("silent"), Fate("reset", reply_ttl=63), Fate("response", reply_ttl=63)):
        result = locate_box(rows((TE, TE), (TE, TE), (consumed, TE), confirmed_at=3))
        assert (result.hop, result.kind, result.bracket) == (2, "in-path", (2, 3)), consumed


def test_the_boxs_own_ttl_can_move_it_to_the_later_hop():
    """Consumed at TTL 3, but its answer left from hop 3 (TTL 62): a box in front of router 3's
    TTL check that does not let the copy go on."""
    result = locate_box(rows((TE, TE), (TE, TE), (Fate("reset", reply_ttl=62), TE), confirmed_at=3))
    assert result.hop == 3


def test_an_injector_that_copies_our_ttl_is_placed_by_arithmetic():
    """It answers with our TTL on arrival at hop 2 (3 - 1 = 2), which loses one more on the way
    back: TTL 1 on arrival, at TTL 3. At TTL 2 its answer died on the way."""
    copier = Fate("time-exceeded+reset", "r3", reply_ttl=1)
    result = locate_box(rows((TE, TE), (TE, TE), (copier, TE), confirmed_at=3))
    assert result.hop == 2
    assert result.bracket[0] < 2 < result.bracket[1]


def test_an_unconfirmed_difference_is_not_a_finding():
    result = locate_box(rows((TE, TE), (Fate("silent"), TE), (TE, TE), (TE, TE), (SERVER, SERVER)))
    assert not result.interference and result.hop is None and result.reached_server_at == 5


def test_a_silent_control_is_noise_not_interference():
    assert not differs(TE, Fate("silent"))
    assert differs(Fate("silent"), TE)
    assert differs(Fate("silent"), SERVER)
    assert not differs(SERVER, SERVER)


def test_the_same_fate_everywhere_up_to_the_server_is_no_interference():
    result = locate_box(rows((TE, TE), (TE, TE), (SERVER, SERVER)))
    assert (result.interference, result.hop, result.bracket, result.reached_server_at) == (False, None, None, 3)


def test_silence_everywhere_is_inconclusive():
    result = locate_box(rows((TE, TE), (Fate("silent"), Fate("silent"))))
    assert not result.interference and "inconclusive" in result.evidence[0]


def test_an_icmp_rejection_names_the_router_that_sent_it():
    rejected = Fate("unreachable", "r2-address")
    rows_ = [HopRow(1, "r1", None, TE, TE), HopRow(2, "r2", None, Fate("time-exceeded", "r2-address"),
                                                    Fate("time-exceeded", "r2-address")),
             HopRow(3, "r3", None, rejected, Fate("time-exceeded", "r3-address"), True)]
    assert locate_box(rows_).hop == 2


def test_apply_trace_sets_the_hop_of_interference_only():
    tap = Fate("time-exceeded+reset", "r2", reply_ttl=63)
    result = locate_box(rows((TE, TE), (tap, TE), confirmed_at=2))
    forged = Analysis("middlebox-reset", "to-client", None, 60.0, (), "Forged.")
    revised = apply_trace(forged, result)
    assert (revised.hop, revised.hop_basis, revised.verdict) == (2, "trace", "middlebox-reset")
    assert revised.explanation.startswith("Forged.") and "hop 2" in revised.explanation
    clean, _ = attempt(64, server_answer())
    untouched = analyze_flow(clean, FLOW)
    assert apply_trace(untouched, result) == untouched


def test_the_syn_level_trace_reads_as_hop_rows():
    """A firewall in hop 2's forwarding path resets TTL-limited SYNs from TTL 3 on; the echo
    control expires there and reaches the address at TTL 5."""
    from probe.engine.locate import HopReply, locate
    from probe.engine.trace import result_from_location, rows_from_sweeps

    server = "203.0.113.80"
    routers = {1: "192.0.2.1", 2: "198.51.100.2", 3: "198.51.100.6", 4: "198.51.100.10"}
    tcp = [HopReply(1, "time-exceeded", routers[1], 64, rtt_ms=0.1), HopReply(2, "time-exceeded", routers[2], 63),
           HopReply(3, "tcp", server, 63, "RA", 0.2)]
    echo = [HopReply(ttl, "time-exceeded", routers[ttl], 65 - ttl) for ttl in range(1, 5)]
    echo.append(HopReply(5, "echo-reply", server, 60, rtt_ms=50.5))
    rows_ = rows_from_sweeps(tcp, echo)
    assert [(r.ttl, r.address, r.trigger.word, r.control.word) for r in rows_] == [
        (1, routers[1], "time-exceeded", "time-exceeded"), (2, routers[2], "time-exceeded", "time-exceeded"),
        (3, routers[3], "reset", "time-exceeded")]
    result = result_from_location(locate(tcp, echo, server), rows_)
    assert (result.interference, result.hop, result.bracket) == (True, 2, (2, 3))
    genuine = tcp[:2] + [HopReply(3, "time-exceeded", routers[3], 62), HopReply(4, "time-exceeded", routers[4], 61),
                         HopReply(5, "tcp", server, 60, "RA")]
    quiet = result_from_location(locate(genuine, echo, server), rows_from_sweeps(genuine, echo))
    assert (quiet.interference, quiet.hop, quiet.bracket) == (False, None, None)


def test_a_backward_ack_is_no_answer_to_the_request():
    """A challenge ACK (RFC 5961) acknowledging less than the request is not an answer to it."""
    def challenge_ack(request):
        return from_server(0.0606, "A", IRS + 1, ISN + 1 - 5, ttl=60)

    assert fate(5, challenge_ack).word == "silent"


def test_a_late_answer_to_an_earlier_connection_on_the_same_four_tuple_is_not_this_ones():
    """A trace reuses one source port; our ISNs only grow (RFC 6528), so a late reset or answer
    of the previous connection acknowledges less than this one's SYN and is left out, while the
    same reset acknowledging this connection's request still counts."""
    old_isn = ISN - 200000  # the previous connection on this four-tuple, a moment before

    def stale_reset(request):
        return from_server(0.0606, "RA", IRS - 900000, old_isn + 1 + len(REQUEST), ttl=60, win=0)

    def stale_page(request):
        return from_server(0.0607, "FPA", IRS - 900000, old_isn + 1 + len(REQUEST), ttl=63,
                           payload=b"HTTP/1.1 403 Forbidden\r\n\r\n")

    assert fate(3, expired(), stale_reset).word == "time-exceeded"
    assert fate(3, stale_page).word == "silent"

    def reset_of_this_request(request):
        return from_server(0.0606, "RA", IRS + 1, ISN + 1 + len(REQUEST), ttl=63, win=0)

    assert fate(3, expired(), reset_of_this_request).word == "time-exceeded+reset"


def test_the_boxs_ttl_chooses_within_a_bracket_wider_than_one_hop():
    """At TTL 3 the block page's answer came too late to confirm the difference; at TTL 4 it was
    confirmed. The copies prove only "after hop 2, before hop 4"; the answer's TTL (63: hop 2)
    chooses within that, instead of the forwarding-path rule's hop 3."""
    page = Fate("response", reply_ttl=63)
    rows_ = rows((TE, TE), (TE, TE), (page, TE), (page, TE), confirmed_at=4)
    result = locate_box(rows_)
    assert result.hop == 2 and result.bracket == (2, 4)
    # a TTL outside what the copies proved is not believed
    far = locate_box(rows((TE, TE), (TE, TE), (TE, TE), (Fate("response", reply_ttl=64), TE), confirmed_at=4))
    assert far.hop == 3


# --- Ctrl-C during a trace: the hops found so far are kept (traceroute's and mtr's manner) ------------


def _trace_interrupted_at(monkeypatch, interrupt_at: int, second_pair: bool = False):
    """run_trace over the fake network with each attempt's fate scripted:
    routers answer time-exceeded at TTL 1 and 2; at TTL 3 the trigger is reset (a difference);
    the interrupt (SIGINT's SystemExit(130)) comes in the first attempt at `interrupt_at`, or in the
    confirming pair at TTL 3 when `second_pair`."""
    from probe.network import tracer as tr
    from probe.engine.trace import Fate

    calls = []

    def attempt(self, ttl, role):
        calls.append((ttl, role))
        if (ttl == interrupt_at and not second_pair) or (second_pair and ttl == 3 and len(calls) > 6):
            raise SystemExit(130)
        if ttl < 3:
            fate = Fate("time-exceeded", router=f"198.51.100.{ttl}")
        else:
            fate = Fate("reset") if role == "trigger" else Fate("time-exceeded", router="198.51.100.3")
        return tr.Attempt(ttl, role, exchange=None, fate=fate)

    monkeypatch.setattr(tr._Tracer, "attempt", attempt)
    monkeypatch.setattr(tr._Tracer, "finish", lambda self: None)
    hops = []
    traced = tr.run_trace(target("203.0.113.80", 80), tr.TraceOptions(max_ttl=8), 0.05, 60, on_hop=hops.append,
                          network=FakeNet().network())
    return traced, hops


def test_an_interrupt_keeps_the_hops_found_so_far_and_is_handed_back(monkeypatch):
    traced, hops = _trace_interrupted_at(monkeypatch, interrupt_at=3)
    assert [row.ttl for row in traced.rows] == [row.ttl for row in hops] == [1, 2]
    assert isinstance(traced.interrupt, SystemExit) and traced.interrupt.code == 130
    assert traced.stopped == "interrupted at TTL 3"
    assert traced.result is not None and not traced.result.interference


def test_an_interrupt_in_the_confirming_pair_leaves_the_difference_unconfirmed(monkeypatch):
    traced, hops = _trace_interrupted_at(monkeypatch, interrupt_at=0, second_pair=True)
    assert [row.ttl for row in traced.rows] == [1, 2, 3]
    assert traced.rows[-1].trigger.word == "reset" and not traced.rows[-1].confirmed
    assert traced.interrupt is not None
