"""The engine's per-flow tables give exactly what its per-packet scans gave.

Until the tables (`baseline.FlowTables`), each of these questions was answered by a scan of the
flow for each packet, so a flow's cost grew with the square of its length. The scans are kept
here, as they were, as the reference; the properties say the tables agree with them on every
packet of generated exchanges, and on the same exchanges jumbled with packets of any flags,
times and sequence numbers (wrapping, half the circle apart), where "ahead" in sequence space is
no order and a running maximum would go wrong.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import example, given, strategies as st

from probe.engine import analyze_flow
from probe.engine import heuristics as h
from probe.engine.baseline import (_farther_responder, build_baseline, causes, classify_ip_ids, first_request,
                                   request_acknowledged, seq_end)
from probe.engine.heuristics import Signal
from probe.engine.model import Attribution
from probe.engine.verdict import reset_in_our_name
from probe.protocol.tcp import MOD32, seq_add, seq_diff

from .exchanges import (
    CLIENT,
    CLIENT_PORT,
    FLOW,
    SERVER,
    SERVER_PORT,
    flag_letters,
    forged_exchanges,
    genuine_exchanges,
    property_settings,
    tcp_record,
)

PROPERTY = property_settings(150)

# --- the scans, as the engine had them (probe/engine/*.py at 6616804) -----------------------------


def reference_cause_of(packets, index, flow):
    packet = packets[index]
    sent = [p for p in packets[:index] if flow.sent_by_client(p)]
    if not sent:
        return None
    if "A" in packet.flags:
        for candidate in sent:
            if seq_end(candidate) == packet.ack:
                return candidate
        covering = [c for c in sent if seq_diff(seq_end(c), packet.ack) >= 0]
        return covering[0] if covering else sent[0]
    for candidate in sent:
        if "A" in candidate.flags and candidate.ack == packet.seq:
            return candidate
    return sent[0]


def reference_ip_id_start(counting):
    return min(counting, key=lambda i: sum((j - i) % 65536 for j in counting))


def reference_baseline(packets, flow):
    """build_baseline's learning, with the reference cause (returns the fields it decides)."""
    syn = next((p for p in packets if flow.sent_by_client(p) and p.flags == "S"), None)
    synack_index = None
    for i, p in enumerate(packets):
        if syn is not None and flow.toward_client(p) and "S" in p.flags and "A" in p.flags \
                and p.ack == seq_add(syn.seq, 1):
            synack_index = i
            break
    if synack_index is None:
        return None
    synack = packets[synack_index]
    syns_before = [p for p in packets[:synack_index] if flow.sent_by_client(p) and p.flags == "S"]
    last_syn = syns_before[-1] if syns_before else syn
    rtt = handshake_rtt = max(synack.t - last_syn.t, 0.0)
    server_ttl = _farther_responder(packets, synack_index, flow) or synack.ttl
    members = {synack_index}
    ids = [synack.ip_id] if server_ttl == synack.ttl else []
    for i in range(synack_index + 1, len(packets)):
        p = packets[i]
        if not flow.toward_client(p) or p.ttl not in (synack.ttl, server_ttl) or "R" in p.flags:
            continue
        cause = reference_cause_of(packets, i, flow)
        if cause is not None and p.t - cause.t < rtt * 0.5:
            continue
        members.add(i)
        if p.ttl == server_ttl:
            ids.append(p.ip_id)
        if cause is not None and "A" in p.flags and seq_end(cause) == p.ack and cause.length and p.ttl == synack.ttl:
            rtt = min(rtt, p.t - cause.t)
    return synack, server_ttl, rtt, ids, frozenset(members), handshake_rtt - rtt


def reference_server_next_seq(packets, index, flow):
    furthest = None
    for p in packets[:index]:
        if flow.toward_client(p) and "R" not in p.flags and ("S" in p.flags or p.length or "F" in p.flags):
            end = seq_end(p)
            if furthest is None or seq_diff(end, furthest) > 0:
                furthest = end
    if furthest is None:
        return None
    for p in packets[:index]:
        if flow.sent_by_client(p) and "A" in p.flags and seq_diff(p.ack, furthest) > 0:
            furthest = p.ack
    return furthest


def reference_too_early(packets, index, flow, baseline):
    packet = packets[index]
    soonest = baseline.soonest_answer
    cause = reference_cause_of(packets, index, flow)
    if baseline.rtt is None or cause is None:
        return []
    elapsed = packet.t - cause.t
    if soonest is not None and elapsed < soonest:
        shown = cause
        if "R" in packet.flags and "A" not in packet.flags:  # the latest of ours carrying its ACK, by scan
            for p in packets[:index]:
                if flow.sent_by_client(p) and "A" in p.flags and p.ack % MOD32 == packet.seq % MOD32:
                    if packet.t - p.t < 0.0:
                        break
                    shown = p
        return [Signal(3, f"arrived {(packet.t - shown.t) * 1000:.1f} ms after {h.describe_segment(shown)} it "
                          f"answers; the server is {baseline.rtt * 1000:.1f} ms away (round trip), so nothing of "
                          f"its own can arrive sooner than {soonest * 1000:.1f} ms", decisive=True)]
    drawn_by = cause
    if "R" in packet.flags and "A" not in packet.flags:  # a bare RST: the latest of ours it can answer, by scan
        for p in packets[:index]:
            if flow.sent_by_client(p) and "A" in p.flags and p.ack % MOD32 == packet.seq % MOD32:
                if packet.t - p.t < (baseline.rtt * 0.5 if baseline.rtt else 0.0):
                    break
                drawn_by = p
    elapsed = packet.t - drawn_by.t
    if elapsed >= baseline.rtt * 0.8:
        return [Signal(-1, f"arrived {elapsed * 1000:.1f} ms after {h.describe_segment(drawn_by)} it answers "
                           f"(round trip {baseline.rtt * 1000:.1f} ms)")]
    return []


def reference_reset_shape(packets, index, flow):
    packet = packets[index]
    if "R" not in packet.flags:
        return []
    signals = []
    server_next = reference_server_next_seq(packets, index, flow)
    answers_our_ack = "A" not in packet.flags and any(
        flow.sent_by_client(p) and "A" in p.flags and p.ack % 2**32 == packet.seq % 2**32 for p in packets[:index])
    if server_next is not None and not answers_our_ack:
        offset = seq_diff(packet.seq, server_next)
        if offset != 0:
            signals.append(Signal(2, f"sequence number {offset:+d} from where the server's next byte belongs"))
    if packet.win != 0 and "A" not in packet.flags:
        signals.append(Signal(1, f"window {packet.win} on a bare reset (a stack resetting an unknown "
                                 f"connection sends 0)"))
    return signals


def reference_reset_burst(packets, index, flow, round_trip):
    packet = packets[index]
    if "R" not in packet.flags:
        return []
    window = h.burst_window(round_trip)
    burst = [p for p in packets if flow.toward_client(p) and "R" in p.flags and abs(p.t - packet.t) <= window]
    if len(burst) < 2:
        return []
    seqs = {p.seq for p in burst}
    ttls = {p.ttl for p in burst}
    if len(seqs) == 1 and len(ttls) == 1:
        return [Signal(1, f"one of {len(burst)} identical resets within {window * 1000:.1f} ms")]
    return [Signal(2, f"one of {len(burst)} resets within {window * 1000:.1f} ms with "
                      f"{len(seqs)} sequence numbers and {len(ttls)} TTLs")]


def reference_followed_by_server_data(packets, index, flow, baseline):
    packet = packets[index]
    if "R" not in packet.flags:
        return []
    later = [i for i in range(index + 1, len(packets)) if i in baseline.members
             and (packets[i].length or "F" in packets[i].flags)]
    if not later:
        return []
    first = packets[later[0]]
    return [Signal(2, f"the server still sent {'data' if first.length else 'a FIN'} "
                      f"{(first.t - packet.t) * 1000:.1f} ms after this reset")]


def reference_acknowledges_backwards(packets, index, flow, baseline):
    packet = packets[index]
    if index not in baseline.members or packet.length or "A" not in packet.flags or "R" in packet.flags \
            or "S" in packet.flags:
        return []
    acked_before = [p.ack for i, p in enumerate(packets[:index]) if i in baseline.members
                    and flow.toward_client(p) and "A" in p.flags and "S" not in p.flags]
    if not acked_before:
        return []
    furthest = max(acked_before, key=lambda ack: seq_diff(ack, packet.ack))
    behind = seq_diff(furthest, packet.ack)
    if behind <= 0:
        return []
    return [Signal(0, f"the server acknowledged {behind} bytes less than it already had: it was "
                      f"answering a segment sent in our name (a challenge ACK, RFC 5961)")]


def reference_reset_in_our_name(packets, flow, attributions, baseline):
    request = first_request(packets, flow)
    if baseline.synack is None or request is None:
        return []
    for index, packet in enumerate(packets):
        if not flow.toward_client(packet) or "R" not in packet.flags or "A" in packet.flags:
            continue
        if attributions[index].origin != "server":
            continue
        earlier = packets[:index]
        if any(flow.toward_client(p) and "F" in p.flags and i in baseline.members for i, p in enumerate(earlier)):
            continue
        if any(flow.sent_by_client(p) and "R" in p.flags for p in earlier):
            continue
        answered = [p for p in earlier if flow.sent_by_client(p) and "A" in p.flags and p.ack == packet.seq]
        if not answered:
            continue
        server_end = max((seq_end(p) for i, p in enumerate(earlier) if i in baseline.members),
                         key=lambda end: seq_diff(end, baseline.synack.seq), default=seq_end(baseline.synack))
        if seq_diff(packet.seq, server_end) > 0:
            continue
        copies = [p for p in earlier if flow.sent_by_client(p) and p.length and p.seq == request.seq]
        acked = request_acknowledged(earlier, flow, request)
        answered_first = any(flow.toward_client(p) and p.t > copies[0].t and (len(copies) < 2 or p.t < copies[1].t)
                             for p in earlier) if copies else True
        if len(copies) < 2 or acked or answered_first:
            continue
        gap = (copies[1].t - copies[0].t) * 1000
        return [f"the server answered our segment with a bare RST (seq {seq_diff(packet.seq, baseline.synack.seq)} "
                f"= our ACK, no ACK flag, window {packet.win}): it no longer had the connection it had accepted, "
                f"and we never sent a reset",
                f"the request went unacknowledged; its retransmission {gap:.0f} ms later drew the reset"]
    return []


# --- exchanges, jumbled -----------------------------------------------------------------------------

# where "ahead" turns round: 0, half the circle, the top, and a segment's length either side of them
CORNERS = sorted({(base + offset) % MOD32 for base in (0, 1 << 31, MOD32 - 1) for offset in (-1460, -1, 0, 1, 1460)})


@st.composite
def jumbled(draw, exchange=st.one_of(genuine_exchanges(), forged_exchanges())):
    """An exchange (or nothing) with up to 30 packets of the flow, either way, inserted anywhere:
    any flags, times among its own, sequence and ACK numbers among its own, a segment off, or at
    the corners of the circle."""
    packets = list(draw(exchange).packets) if draw(st.integers(0, 4)) else []
    own = sorted({n for p in packets for n in (p.seq, p.ack, seq_end(p))}) or [0]
    numbers = st.one_of(st.sampled_from(own), st.sampled_from(own).map(lambda n: (n + 1460) % MOD32),
                        st.sampled_from(CORNERS), st.integers(0, MOD32 - 1))
    times = sorted({p.t for p in packets}) or [0.0]
    for _ in range(draw(st.integers(0, 30))):
        ours = draw(st.booleans())
        ends = (CLIENT, SERVER, CLIENT_PORT, SERVER_PORT) if ours else (SERVER, CLIENT, SERVER_PORT, CLIENT_PORT)
        flags = draw(st.one_of(st.sampled_from(("S", "SA", "A", "PA", "FA", "R", "RA", "")),
                               st.integers(0, 255).map(flag_letters)))
        t = draw(st.one_of(st.sampled_from(times), st.sampled_from(times).map(lambda t: t + 0.0001),
                           st.floats(min(times) - 1, max(times) + 1)))
        packet = tcp_record(t, *ends, flags, draw(numbers), draw(numbers), ttl=draw(st.sampled_from((64, 52, 50, 60))),
                            ip_id=draw(st.integers(0, 65535)), win=draw(st.sampled_from((0, 64, 502))),
                            payload=bytes(draw(st.sampled_from((0, 0, 1, 100)))))
        packets.insert(draw(st.integers(0, len(packets))), packet)
    return packets


# --- the properties ---------------------------------------------------------------------------------


@PROPERTY
@given(jumbled())
def test_causes_are_the_scans(packets):
    table = causes(packets, FLOW)
    assert len(table) == len(packets)
    for index in range(len(packets)):
        assert table[index] is reference_cause_of(packets, index, FLOW), index


@PROPERTY
@example([0, 65535, 1, 65534])
@example([0, 0, 5])
@given(st.lists(st.one_of(st.integers(0, 65535), st.integers(65000, 65535), st.integers(0, 100),
                          st.integers(-70000, 140000)), max_size=40))
def test_the_ip_id_start_is_the_scan(ids):
    habit = classify_ip_ids(ids)
    counting = [i for i in ids if i != 0] if ids and ids[0] == 0 else list(ids)
    if habit.kind == "counter":  # the only habit that depends on the start: the counting, from it
        start = reference_ip_id_start(counting)
        assert habit.ids == tuple(sorted(counting, key=lambda i: (i - start) % 65536))
    elif len(counting) >= 2 and habit.kind != "zero":
        start = reference_ip_id_start(counting)
        ordered = sorted(counting, key=lambda i: (i - start) % 65536)
        assert not all(0 < (b - a) % 65536 <= 2000 for a, b in zip(ordered, ordered[1:]))


@PROPERTY
@given(jumbled())
def test_the_baseline_is_the_scans(packets):
    baseline = build_baseline(packets, FLOW)
    reference = reference_baseline(packets, FLOW)
    if reference is None:
        assert baseline.synack is None and baseline.members == frozenset()
        return
    synack, server_ttl, rtt, ids, members, spread = reference
    assert baseline.synack is synack and baseline.server_ttl == server_ttl and baseline.rtt == rtt
    assert baseline.members == members and baseline.rtt_spread == spread
    assert baseline.ip_ids == classify_ip_ids(ids)


@PROPERTY
@given(jumbled(), st.one_of(st.none(), st.floats(0.0, 0.5)))
def test_the_per_packet_signals_are_the_scans(packets, round_trip):
    baseline = build_baseline(packets, FLOW)
    server_next = h._server_next_seqs(packets, FLOW)
    for index, packet in enumerate(packets):
        if "R" in packet.flags:
            reference = reference_server_next_seq(packets, index, FLOW)
            assert server_next[index] == (None if reference is None else reference % MOD32), index
        if not FLOW.toward_client(packet):
            continue
        assert h.too_early(packets, index, FLOW, baseline) == reference_too_early(packets, index, FLOW, baseline)
        assert h.reset_shape(packets, index, FLOW, baseline) == reference_reset_shape(packets, index, FLOW)
        for rtt in (baseline.rtt, round_trip):
            assert h.reset_burst(packets, index, FLOW, rtt, baseline.tables) == \
                reference_reset_burst(packets, index, FLOW, rtt)
        assert h.followed_by_server_data(packets, index, FLOW, baseline) == \
            reference_followed_by_server_data(packets, index, FLOW, baseline)
        assert h.acknowledges_backwards(packets, index, FLOW, baseline) == \
            reference_acknowledges_backwards(packets, index, FLOW, baseline)


@PROPERTY
@given(st.one_of(genuine_exchanges().map(lambda exchange: list(exchange.packets)), jumbled()), st.booleans())
def test_the_field_reports_signature_is_the_scan(packets, all_genuine):
    baseline = build_baseline(packets, FLOW)
    if all_genuine:  # every reset taken as the server's: the signature's other conditions decide
        attributions = [Attribution("server")] * len(packets)
    else:
        attributions = list(analyze_flow(packets, FLOW).attributions)
    assert reset_in_our_name(packets, FLOW, attributions, baseline) == \
        reference_reset_in_our_name(packets, FLOW, attributions, baseline)


def test_bursts_with_times_that_are_no_numbers_or_a_window_apart():
    packets = [tcp_record(t, SERVER, CLIENT, SERVER_PORT, CLIENT_PORT, "R", seq, 0, ttl=50, ip_id=0, win=0)
               for t, seq in ((float("nan"), 1), (0.0, 2), (0.0001, 2), (float("inf"), 3))]
    packets += [replace(packets[1], t=5.0), replace(packets[1], t=5.00025)]  # exactly a window apart
    baseline = build_baseline(packets, FLOW)
    for index in range(len(packets)):
        assert h.reset_burst(packets, index, FLOW, None, baseline.tables) == \
            reference_reset_burst(packets, index, FLOW, None)


def _download(segments):
    isn, irs = MOD32 - 5000, MOD32 - 100_000  # both wrap during the transfer
    ours = dict(src=CLIENT, dst=SERVER, sport=CLIENT_PORT, dport=SERVER_PORT)
    theirs = dict(src=SERVER, dst=CLIENT, sport=SERVER_PORT, dport=CLIENT_PORT)
    packets = [tcp_record(0.0, *ours.values(), "S", isn, 0, ttl=64, ip_id=1, win=502),
               tcp_record(0.02, *theirs.values(), "SA", irs, isn + 1, ttl=52, ip_id=0, win=65160),
               tcp_record(0.0201, *ours.values(), "A", isn + 1, irs + 1, ttl=64, ip_id=2, win=502),
               tcp_record(0.0202, *ours.values(), "PA", isn + 1, irs + 1, ttl=64, ip_id=3, win=502,
                          payload=b"GET / HTTP/1.1\r\n\r\n")]
    end, seq = isn + 1 + 18, irs + 1
    for n in range(segments):
        packets.append(tcp_record(0.04 + n * 0.0004, *theirs.values(), "A", seq, end, ttl=52, ip_id=n + 1,
                                  win=65160, payload=bytes(1448)))
        seq += 1448
        if n % 2:
            packets.append(tcp_record(0.04 + n * 0.0004 + 0.00005, *ours.values(), "A", end, seq, ttl=64,
                                      ip_id=n + 4, win=502))
    packets.append(replace(packets[-1], flags="RA", src=SERVER, dst=CLIENT, sport=SERVER_PORT, dport=CLIENT_PORT,
                           seq=(seq + 4380) % MOD32, ack=end % MOD32, ttl=60, t=packets[-1].t + 0.0001))
    return packets


def test_a_long_download_that_wraps_is_judged_as_the_scans_judge_it():
    packets = _download(3000)
    baseline = build_baseline(packets, FLOW)
    reference = reference_baseline(packets, FLOW)
    assert baseline.members == reference[4] and baseline.rtt == reference[2]
    last = len(packets) - 1
    assert h._server_next_seqs(packets, FLOW)[last] == reference_server_next_seq(packets, last, FLOW) % MOD32
    assert h.reset_shape(packets, last, FLOW, baseline) == reference_reset_shape(packets, last, FLOW)
    assert analyze_flow(packets, FLOW).verdict == "middlebox-reset"
