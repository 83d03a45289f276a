"""The signals, one small function each. Each returns `Signal`s: a weight and a sentence.

Positive weight says "forged" (sent by something other than the server), negative says
"the server's own". `verdict.attribute` adds them up, with one exception: a *decisive* signal
is a fact that makes it impossible for the server to have sent the packet (it came back sooner
than the path allows, it acknowledges bytes never sent, it answers a request that expired on
the way, it carries other bytes than the server's for the same sequence numbers). Such a fact
is never cancelled by evidence a forger can copy.

Weights: 3 = physics or protocol; 2 = strong; 1 = suggestive (known false positives listed in
each docstring). "For the server" signals are weighed by whether an injector could know or copy
them: sequence and acknowledgement numbers are on the wire for any on-path box and count for
nothing; TTL and IP-ID can be copied and count -1 at most; a stack's whole fingerprint (initial
TTL, DF, IP-ID habit, window) is harder to copy, and a mismatch in it counts against.
"""

from __future__ import annotations


import math
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from dataclasses import dataclass

from probe.engine.baseline import (HALF, MOD32, TIMESTAMP_NOISE, Baseline, FlowTables, SeqIndex, first_request,
                                   hop_distance, initial_ttl, seq_end)
from probe.engine.model import Flow
from probe.record import PacketRecord, is_time_exceeded
from probe.seq import seq_diff

BURST_SHARE = 0.1  # resets closer together than this share of the round trip belong to one burst


@dataclass(frozen=True)
class Signal:
    weight: int
    sentence: str
    decisive: bool = False  # the server cannot have sent this packet: never outweighed


def tables_of(packets: list[PacketRecord], flow: Flow, baseline: Baseline) -> FlowTables:
    """The baseline's tables over `packets` (made here for a baseline built by hand)."""
    return baseline.tables if baseline.tables is not None else FlowTables(packets, flow)


def ttl_distance(packet: PacketRecord, baseline: Baseline, probe_ttl: int = 64) -> list[Signal]:
    """A packet from the server's address arriving at another TTL than the SYN-ACK did.

    Why: a box at another distance has other hops to cross, so its packets arrive with a
    different TTL unless it forges the TTL. A difference of 1 may be a path change or an
    ECMP route (weight 1); 2 or more is strong. False positives: a SYN proxy or load balancer
    that answers the handshake itself (its packets and the server's differ; handled by
    requiring other signals before blaming), asymmetric routing changes mid-connection.
    Injectors that copy the server's TTL defeat it (the other signals remain); an injector
    that copies the probe's own TTL is named as such."""
    if baseline.server_ttl is None:
        return []
    if packet.ttl in baseline.accepted_ttls:
        same = "the server's SYN-ACK" if packet.ttl == baseline.handshake_ttl else "the server's data"
        return [Signal(-1, f"TTL {packet.ttl}, as {same}")]
    difference = packet.ttl - min(baseline.accepted_ttls, key=lambda ttl: abs(ttl - packet.ttl))
    sentence = (f"TTL {packet.ttl}, the server's packets arrive with TTL {baseline.server_ttl} "
                f"(sender about hop {hop_distance(packet.ttl)}, server hop {baseline.server_hop})")
    if packet.ttl == probe_ttl:
        sentence += f"; {probe_ttl} is the TTL of our own packets, as some injectors copy"
    return [Signal(2 if abs(difference) >= 2 else 1, sentence)]


def too_early(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """An answer that arrived sooner after the packet that drew it than the path allows.

    What: a packet in the server's name recorded sooner after the segment of ours that drew it
    than `Baseline.soonest_answer`: the smallest round trip seen, less half of it (or the spread
    of the round trips seen, if larger: a path that jitters that much may have inflated even the
    smallest sample) and less the timestamp noise (`baseline.TIMESTAMP_NOISE`, 0.25 ms).
    Why: nothing can come back from the server faster than the round trip; a reply in well under
    it came from something closer. The yardstick is a share of the measured round trip, so the
    judgement is the same on a 1 ms path as on a 300 ms one; only the noise is absolute, which
    is why a path under 0.5 ms round trip is never judged by time. The reply is timed from the
    earliest of our segments it can answer (see `baseline.causes`): a bare RST copies the ACK of the
    segment that drew it, and the handshake ACK carries the same ACK as the request, so a bare RST
    is timed from the handshake ACK (a server with no room for the connection, e.g. Linux with
    tcp_abort_on_overflow, answers that ACK itself with a bare RST).
    False positives: none from physics. A yardstick too long would make genuine replies look
    early: a handshake answered from farther away than the server (not seen: a SYN proxy is
    nearer), or a round trip sampled during a queue; hence the smallest sample and the allowances.
    Packets whose receive timestamps were delayed by more than the noise (a stalled host) only
    look later, never earlier."""
    packet = packets[index]
    soonest = baseline.soonest_answer
    cause = tables_of(packets, flow, baseline).causes[index]
    if baseline.rtt is None or cause is None:
        return []
    elapsed = packet.t - cause.t
    if soonest is not None and elapsed < soonest:
        # too early even for the earliest segment it can answer; name the one that drew it (for a
        # bare RST, the latest of ours carrying its ACK: the request, not the handshake ACK before it)
        shown = drawing_segment(packets, index, flow, baseline, latest=True)
        return [Signal(3, f"arrived {(packet.t - shown.t) * 1000:.1f} ms after {describe_segment(shown)} it "
                          f"answers; the server is {baseline.rtt * 1000:.1f} ms away (round trip), so nothing of "
                          f"its own can arrive sooner than {soonest * 1000:.1f} ms", decisive=True)]
    drawn_by = drawing_segment(packets, index, flow, baseline)
    elapsed = packet.t - drawn_by.t
    if elapsed >= baseline.rtt * ANSWER_SHARE:
        return [Signal(-1, answered_after(elapsed, describe_segment(drawn_by), baseline.rtt))]
    return []


ANSWER_SHARE = 0.8  # an answer this share of the round trip after what drew it or later is timed as the server's


def answered_after(elapsed: float, segment: str, rtt: float) -> str:
    """`too_early`'s evidence for the server: the answer took most of a round trip or more after
    `segment` (`describe_segment`) drew it (also worded here for `probe analyze --json`'s ordinary
    flows, `probe/files/_flowjson.pyx`)."""
    return f"arrived {elapsed * 1000:.1f} ms after {segment} it answers (round trip {rtt * 1000:.1f} ms)"


def describe_segment(packet: PacketRecord) -> str:
    """How the evidence names a segment of ours: "our request", "our ACK", "our SYN"..."""
    if packet.length:
        return "our request"
    if "S" in packet.flags:
        return "our SYN"
    if "F" in packet.flags:
        return "our FIN"
    return "our RST" if "R" in packet.flags else "our ACK"


def drawing_segment(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline,
                    latest: bool = False) -> PacketRecord:
    """The segment of ours that most plausibly drew packet `index`: `causes` gives the earliest
    one it can answer (what the timing test must use, to stay conservative); for a bare RST, which
    carries the ACK of every segment of ours since the handshake, the latest of those sent at least
    half a round trip before it is the one a stack was answering (a request sent long after
    the handshake ACK draws its own reset; the handshake ACK's reset would have come one round trip
    after it). Other packets: the earliest, as `causes` says. `latest`: for a bare RST, the latest
    of those sent before it whatever the time (for naming what a too-early reset answered)."""
    tables = tables_of(packets, flow, baseline)
    cause = tables.causes[index]
    packet = packets[index]
    if cause is None or "A" in packet.flags or "R" not in packet.flags:
        return cause
    by_ack = tables.memo("our segments by ack", lambda: _our_segments_by_ack(packets, flow))
    # half the round trip, with no absolute allowance: which segment drew a reset must not change
    # when the same exchange runs on a slower path (the property tests slow exchanges down)
    soonest = baseline.rtt * 0.5 if baseline.rtt and not latest else 0.0
    candidates = by_ack.get(packet.seq % MOD32, [])
    latest = None
    for position in candidates:
        if position >= index or packet.t - packets[position].t < soonest:
            break
        latest = packets[position]
    return latest or cause


def _our_segments_by_ack(packets: list[PacketRecord], flow: Flow) -> dict[int, list[int]]:
    """Our ACK-carrying segments, by the ACK number they carry, in capture order."""
    result: dict[int, list[int]] = {}
    for position, p in enumerate(packets):
        if flow.sent_by_client(p) and "A" in p.flags:
            result.setdefault(p.ack % MOD32, []).append(position)
    return result


def ip_id_habit(packet: PacketRecord, baseline: Baseline) -> list[Signal]:
    """An IP-ID that breaks the server's numbering (zero, or a counter).

    Why: a forger numbers its packets from its own counter or at random. Linux sends a
    reset for an unknown connection with IP-ID 0, and a forger sending through a raw socket
    cannot even send 0 (the kernel fills one in). False positives: a global counter on a busy
    server jumps; RSTs from Linux carry 0 while its data packets count (RSTs of that shape are
    accepted by `reset_shape` instead). IPv6 has no IP-ID outside a fragment header: every IP-ID
    signal is silent there, so an IPv6 verdict rests on the hop limit, the flow label, timing and
    the TCP fields, and a copying injector is harder to tell from the server than over IPv4."""
    if packet.version == 6:
        return []
    if packet.ip_id == 0 and "R" in packet.flags and baseline.ip_ids.kind in ("zero", "counter"):
        return [Signal(-1, "IP-ID 0, as Linux sends its resets")]
    sentence = baseline.ip_ids.judge(packet.ip_id)
    return [Signal(1, sentence)] if sentence else []


def reset_shape(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """How a genuine stack resets (RFC 9293) against how injectors do.

    Genuine: a RST for an unknown connection takes its seq from the ACK of the segment that
    drew it and has no ACK flag; an abort on a live connection is a RST/ACK at the server's
    next sequence number. A reset for an unknown connection carries window 0 (Linux, Windows);
    an abort's RST/ACK carries the current window on Linux (measured: 64), so only bare resets
    are judged by their window. Injectors: sequence numbers offset from the expected one (+1460,
    +4380: guessing ahead of a window), non-zero windows on bare resets. A sequence number
    exactly where the server's next byte belongs says nothing either way: every on-path box sees
    the sequence numbers it needs to forge one; nor does a bare reset at the ACK number of a
    segment we sent before it, even behind data the server sent since (RFC 9293's reset for a
    segment that found no connection: measured on HTTPS, where our close_notify reaches nginx
    after it closed, while its own close_notify and FIN were on the way to us).
    False positives: other stacks may put a window on a bare reset (weight 1 only)."""
    packet = packets[index]
    if "R" not in packet.flags:
        return []
    signals = []
    tables = tables_of(packets, flow, baseline)
    server_next = tables.memo("server next seq", lambda: _server_next_seqs(packets, flow))[index]
    answers_our_ack = "A" not in packet.flags and _answers_our_ack(packets, index, flow, tables)
    if server_next is not None and not answers_our_ack:
        offset = seq_diff(packet.seq, server_next)
        if offset != 0:  # exactly right says nothing: every on-path box sees the sequence numbers
            signals.append(Signal(2, f"sequence number {offset:+d} from where the server's next byte belongs"))
    if packet.win != 0 and "A" not in packet.flags:
        signals.append(Signal(1, f"window {packet.win} on a bare reset (a stack resetting an unknown "
                                 f"connection sends 0)"))
    return signals


def _answers_our_ack(packets: list[PacketRecord], index: int, flow: Flow, tables: FlowTables) -> bool:
    """Whether a bare reset's sequence number is the ACK number of a segment we sent before it:
    the reset a stack sends for a segment that reaches a connection it no longer has (RFC 9293
    3.10.7.1, CLOSED: <SEQ=SEG.ACK><CTL=RST>), e.g. our close_notify arriving after the server
    closed, while its own FIN was still on the way to us. Such a reset is exactly where it
    belongs, even behind data the server sent meanwhile."""
    packet = packets[index]
    ours = tables.memo("our segments by ack", lambda: _our_segments_by_ack(packets, flow))
    return any(position < index for position in ours.get(packet.seq % MOD32, ()))


def burst_window(round_trip: float | None) -> float:
    """How close together (seconds) resets must be to count as one burst: a tenth of the round
    trip (5 ms on the lab's 50 ms paths), and never less than the timestamp noise."""
    return max(BURST_SHARE * round_trip, TIMESTAMP_NOISE) if round_trip else TIMESTAMP_NOISE


def reset_burst(packets: list[PacketRecord], index: int, flow: Flow, round_trip: float | None,
                tables: FlowTables | None = None) -> list[Signal]:
    """Several resets within a tenth of the round trip, with different sequence numbers or TTLs.

    What: resets in the server's name recorded within `burst_window(round_trip)` of this one.
    Why: a stack resets a connection once per segment that draws a reset; injectors send bursts
    to be sure one lands in the window (Weaver, Sommer, Paxson, NDSS 2009). The window is a share
    of the round trip, not a fixed time, so that a path slowed down pairs the same resets: two
    resets that answer different segments of ours are spaced like those segments, and a forged
    reset that beats the server's own does so by a good share of the round trip (see `too_early`),
    so a tenth of it keeps them apart.
    False positives: a server answering each of several of our segments with a reset, when we
    sent them close together (the handshake ACK and the request): the same sequence number and
    TTL then, weight 1 only; retransmissions are spaced by the retransmission timer, which is at
    least a round trip. A burst of the server's resets to segments of ours that carried
    different ACKs (we acknowledged data in between) counts as strong: weight 2, never enough
    alone."""
    packet = packets[index]
    if "R" not in packet.flags:
        return []
    window = burst_window(round_trip)
    bursts = (tables or FlowTables(packets, flow)).memo(("bursts", window), lambda: _bursts(packets, flow, window))
    count, seqs, ttls = bursts[index] if index in bursts else _burst(packets, index, flow, window)
    if count < 2:
        return []
    if seqs == 1 and ttls == 1:
        return [Signal(1, f"one of {count} identical resets within {window * 1000:.1f} ms")]
    return [Signal(2, f"one of {count} resets within {window * 1000:.1f} ms with "
                      f"{seqs} sequence numbers and {ttls} TTLs")]


def _burst(packets: list[PacketRecord], index: int, flow: Flow, window: float) -> tuple[int, int, int]:
    """(resets in the server's name within `window` of packet `index`, their distinct sequence
    numbers, their distinct TTLs), by a scan of the flow."""
    packet = packets[index]
    burst = [p for p in packets if flow.toward_client(p) and "R" in p.flags and abs(p.t - packet.t) <= window]
    return len(burst), len({p.seq for p in burst}), len({p.ttl for p in burst})


def _bursts(packets: list[PacketRecord], flow: Flow, window: float) -> dict[int, tuple[int, int, int]]:
    """`_burst` for every reset in the server's name, in one sweep of a window over the resets in
    time order (both ends of a window only move forward as its reset does). Empty, so that each
    is scanned for, when a time is not a finite number (no order to sweep in)."""
    resets = [(p.t, i) for i, p in enumerate(packets) if flow.toward_client(p) and "R" in p.flags]
    if not math.isfinite(window) or not all(math.isfinite(t) for t, _ in resets):
        return {}
    resets.sort()
    seqs, ttls = Counter(), Counter()
    result = {}
    low = high = 0
    for t, index in resets:
        while high < len(resets) and resets[high][0] - t <= window:
            seqs[packets[resets[high][1]].seq] += 1
            ttls[packets[resets[high][1]].ttl] += 1
            high += 1
        while resets[low][0] - t < -window:
            for counter, key in ((seqs, packets[resets[low][1]].seq), (ttls, packets[resets[low][1]].ttl)):
                counter[key] -= 1
                if not counter[key]:
                    del counter[key]
            low += 1
        result[index] = (high - low, len(seqs), len(ttls))
    return result


def followed_by_server_data(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """A reset after which the server still sends data or a FIN on the connection.

    Why: a server that reset the connection has no socket left to send from; data from the
    server's fingerprint after a reset means the reset was not the server's (the race detector
    of NDSS 2009). False positives: data already in flight before the server reset arrives
    out of order behind the reset only if the path reorders; weight 2, not 3."""
    packet = packets[index]
    if "R" not in packet.flags:
        return []
    later = tables_of(packets, flow, baseline).memo(("server data", baseline.members), lambda: sorted(
        i for i in baseline.members if (packets[i].length or "F" in packets[i].flags)))
    after = bisect_right(later, index)
    if after == len(later):
        return []
    first = packets[later[after]]
    return [Signal(2, f"the server still sent {'data' if first.length else 'a FIN'} "
                      f"{(first.t - packet.t) * 1000:.1f} ms after this reset")]


def _server_next_seqs(packets: list[PacketRecord], flow: Flow) -> dict[int, int | None]:
    """For every reset (by index), the sequence number the server's next segment would carry,
    judged from what we had seen before it: the furthest end of the server's segments (each taken
    if `seq_diff` says it is ahead), then moved on by what we acknowledged (a bare RST takes our
    ACK), or None before the server sent anything. Modulo 2**32; in one pass.

    The server's part is a running value. Our ACKs are then taken in order from it, each replacing
    the value it is ahead of: that is no maximum, since "ahead" on the circle is no
    order, so each reset would take them all again. Instead: the value moves on at the first of our
    ACKs ahead of the start (`SeqIndex.earliest`), and from there on its course no longer depends on
    the start; so every ACK starts a course, and courses that reach the same value merge for good
    (union-find, with the values the courses have reached kept in order: an ACK moves on all those
    from HALF - 1 behind it up to its own value, one stretch of the circle)."""
    ours = [p.ack % MOD32 for p in packets if flow.sent_by_client(p) and "A" in p.flags]
    first_ahead = SeqIndex((ack, n) for n, ack in enumerate(ours))
    merged_into: list[int] = []  # course -> the course it merged into (itself while it leads)
    reached: dict[int, int] = {}  # leading course -> the value it has reached
    values: list[int] = []  # the values reached, in order, one per leading course
    course_at: dict[int, int] = {}  # value -> the course leading there

    def leader(course: int) -> int:
        root = course
        while merged_into[root] != root:
            root = merged_into[root]
        while merged_into[course] != root:
            merged_into[course], course = root, merged_into[course]
        return root

    result: dict[int, int | None] = {}
    furthest = None
    taken = 0  # of our ACKs, those before the packet at hand
    for index, p in enumerate(packets):
        if "R" in p.flags:
            if furthest is None:
                result[index] = None
            else:
                first = first_ahead.earliest(furthest + 1, HALF - 2)
                result[index] = furthest if first is None or first >= taken else reached[leader(first)]
        if flow.toward_client(p) and "R" not in p.flags and ("S" in p.flags or p.length or "F" in p.flags):
            end = seq_end(p)
            if furthest is None or seq_diff(end, furthest) > 0:
                furthest = end
        if flow.sent_by_client(p) and "A" in p.flags:
            ack = ours[taken]
            behind = (ack - HALF + 1) % MOD32
            stretches = ([(bisect_left(values, behind), bisect_right(values, ack))] if behind <= ack else
                         [(bisect_left(values, behind), len(values)), (0, bisect_right(values, ack))])
            merged_into.append(taken)
            for low, high in stretches:  # the later stretch first, so the earlier's ranks still hold
                for value in values[low:high]:
                    merged_into[course_at.pop(value)] = taken
                del values[low:high]
            insort(values, ack)
            course_at[ack] = taken
            reached[taken] = ack
            taken += 1
    return result


def acknowledges_backwards(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """A pure ACK from the server that acknowledges less than the server had already acknowledged.

    Why: a stack never takes back an acknowledgement; a backward ACK is the server answering a
    segment it received in our name that we never sent (an RFC 5961 challenge ACK to a forged
    in-window RST or SYN; Linux answers the tap's burst this way). It tells that forged packets
    reached the server even when they failed to reset it. False positives: a path that reorders
    two ACKs of the server; so it is used only to set the direction once forgery is established,
    never to blame on its own."""
    packet = packets[index]
    if index not in baseline.members or packet.length or "A" not in packet.flags or "R" in packet.flags \
            or "S" in packet.flags:
        return []
    acked = tables_of(packets, flow, baseline).memo(("server acks", baseline.members), lambda: SeqIndex(
        (packets[i].ack, i) for i in baseline.members if flow.toward_client(packets[i])
        and "A" in packets[i].flags and "S" not in packets[i].flags))
    # the ACK furthest ahead of this one's, i.e. the largest seq_diff(ack, packet.ack)
    furthest = acked.nearest_behind(packet.ack + HALF, before=index)
    if furthest is None:
        return []
    behind = seq_diff(furthest, packet.ack)
    if behind <= 0:
        return []
    return [Signal(0, f"the server acknowledged {behind} bytes less than it already had: it was "
                      f"answering a segment sent in our name (a challenge ACK, RFC 5961)")]


# --- the stack's fingerprint: harder to copy than a TTL -------------------------------------------


def initial_ttl_class(packet: PacketRecord, baseline: Baseline) -> list[Signal]:
    """A packet whose TTL started from another initial value (32, 64, 128, 255) than the server's.

    Why: a stack sends every packet with the same initial TTL (Linux and most Unix 64, Windows 128,
    many network devices 255); a packet that started from another value came from another stack.
    Forgers with their own stack show theirs (CenTrace's nifty.org capture: a reset starting from 64
    where the server's SYN-ACK started from 255). The sender's distance, counted from its own
    initial value, tells more: a forger sits between us and the server, so a sender *nearer* than
    the server is strong evidence (weight 2), one as far or farther is weak (weight 1: a server
    behind a SYN proxy or load balancer that answered the handshake itself has its own stack and is
    as far or farther; the textbook's weather captures show such a pair at one distance).
    False positives: a backend behind a SYN proxy that resets before sending any data (weight 1); a path of more than 32 hops makes a 64 look like a 32 (rare; weight 2 at most, never
    decisive)."""
    if baseline.handshake_ttl is None or packet.ttl in (baseline.server_ttl, baseline.handshake_ttl):
        return []
    classes = sorted({initial_ttl(ttl) for ttl in baseline.accepted_ttls})
    own = initial_ttl(packet.ttl)
    if own in classes:
        return []
    sender_hop, server_hop = hop_distance(packet.ttl), baseline.server_hop
    nearer = server_hop is not None and sender_hop < server_hop
    where = "nearer than" if nearer else "as far as" if sender_hop == server_hop else "farther than"
    return [Signal(2 if nearer else 1,
                   f"TTL {packet.ttl} started from {own}, the server's from {'/'.join(map(str, classes))}: "
                   f"another stack, {where} the server (hop {sender_hop} against {server_hop})")]


def df_bit(packet: PacketRecord, baseline: Baseline) -> list[Signal]:
    """A packet whose Don't Fragment bit differs from the server's SYN-ACK's.

    Why: a stack sets DF on all its TCP packets or on none (every current one sets it, for path
    MTU discovery, RFC 1191); injectors writing raw packets often leave it clear (the lab's and
    CenTrace's captured injectors do). False positives: a stack that sends its resets without DF
    while its data carries it (not seen in Linux, which sets DF on resets; possible elsewhere), a
    middlebox that clears DF on the way (then all the server's packets differ, not one). Weight 1:
    never enough alone. Not used for IPv6, which has no DF bit (it never fragments on the way)."""
    synack = baseline.synack
    if synack is None or packet.version == 6 or packet.df == synack.df:
        return []
    return [Signal(1, f"DF {'set' if packet.df else 'clear'}, the server's SYN-ACK had it "
                      f"{'set' if synack.df else 'clear'}")]


def ip_id_copied(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """A packet in the server's name carrying the IP-ID of the very segment of ours it answers.

    Why: IP-IDs are numbered by each sender from its own counter; an injector that builds its
    reply from our packet (swapping addresses and ports) keeps our IP-ID (CenTrace's nifty.org
    capture: the reset carried the request's IP-ID). Compared only with the segments it can answer
    (`causes`, `drawing_segment`), so a match by chance has odds of about 2 in 65,536.
    False positives: that chance; IP-ID 0 is never counted (Linux sends 0 on SYN-ACKs and resets,
    and some clients on all DF packets). Not for IPv6 (no IP-ID)."""
    packet = packets[index]
    if packet.version == 6 or packet.ip_id == 0:
        return []
    tables = tables_of(packets, flow, baseline)
    cause = tables.causes[index]
    if "R" not in packet.flags or "A" in packet.flags:  # the segment that drew it is `causes`' (the cheap case)
        answered = {cause} - {None}
    else:
        answered = {cause, drawing_segment(packets, index, flow, baseline)} - {None}
    copied = next((p for p in answered if p.ip_id == packet.ip_id), None)
    if copied is None:
        return []
    return [Signal(2, f"IP-ID {packet.ip_id}, the IP-ID of {describe_segment(copied)} it answers: "
                      f"built from our own packet")]


def same_ip_id_burst(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """Several resets in the server's name, with different sequence numbers or flags, that share one
    non-zero IP-ID.

    Why: a stack takes a new IP-ID for every packet it sends from a counter or at random; an
    injector that builds a burst from one template repeats it. RFC 6864 allows a repeated IP-ID
    only on atomic datagrams (DF set), so a repeat without DF breaks the rule (weight 2) and one
    with DF is suggestive (weight 1). False positives: a stack with a constant IP-ID on DF packets
    (allowed by RFC 6864; zero is the usual constant, and zero is not counted). Not for IPv6."""
    packet = packets[index]
    if "R" not in packet.flags or packet.ip_id == 0 or packet.version == 6:
        return []
    shared = tables_of(packets, flow, baseline).memo("resets by ip-id", lambda: _resets_by_ip_id(packets, flow))
    others = shared.get(packet.ip_id, ())
    shapes = {(packets[i].seq, packets[i].flags) for i in others}
    if len(others) < 2 or len(shapes) < 2:
        return []
    return [Signal(1 if packet.df else 2, f"one of {len(others)} resets with {len(shapes)} different sequence "
                                           f"numbers or flags that all carry IP-ID {packet.ip_id}")]


def _resets_by_ip_id(packets: list[PacketRecord], flow: Flow) -> dict[int, list[int]]:
    result: dict[int, list[int]] = {}
    for i, p in enumerate(packets):
        if flow.toward_client(p) and "R" in p.flags and p.ip_id:
            result.setdefault(p.ip_id, []).append(i)
    return result


# --- what the server could not have sent ---------------------------------------------------------


def acknowledges_unsent(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """A packet in the server's name acknowledging bytes we never sent (decisive).

    Why: a stack acknowledges only what it received; nothing can receive bytes that were never
    sent, so the acknowledgement was made up (injectors guessing ahead, e.g. +1460, +4380).
    "Never sent" is judged against everything we sent in the whole flow, later segments included.
    False positives: a capture that lost our last segment (then the server acknowledges bytes the
    capture does not show); a live probe records all it sends, a capture file may not."""
    packet = packets[index]
    if "A" not in packet.flags:
        return []
    furthest = tables_of(packets, flow, baseline).memo("our furthest end", lambda: _furthest_sent(packets, flow))
    if furthest is None:
        return []
    beyond = seq_diff(packet.ack, furthest)
    if beyond <= 0:
        return []
    return [Signal(3, f"acknowledges {beyond} byte(s) we never sent", decisive=True)]


def _furthest_sent(packets: list[PacketRecord], flow: Flow) -> int | None:
    furthest = None
    for p in packets:
        if flow.sent_by_client(p):
            end = seq_end(p)
            if furthest is None or seq_diff(end, furthest) > 0:
                furthest = end
    return furthest


def answers_expired_request(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """An acknowledgement of our data when every copy of that data expired on the way (decisive),
    or was sent with a TTL well short of the server's distance (strong).

    Why: a TTL-limited copy of the request (`probe trace`, CenTrace, tracevis) that a router
    answered with ICMP time exceeded never reached the server (the ICMP quotes it: sequence number
    and IP-ID); a packet that acknowledges those bytes was sent by something in between that saw
    them. Without the ICMP, a copy sent with a TTL below the server's distance most likely did not
    reach it either; return paths can be a few hops longer or shorter than forward ones (Paxson,
    "End-to-end routing behavior in the Internet", 1996), so that counts only 3 hops or more short,
    and as strong evidence, never decisive. When other connections of the same capture proved that
    packets with this TTL expire before the server (`Baseline.expires_within`: a trace's requests
    drew time exceeded at that TTL or beyond), that is decisive too. A bare RST acknowledges
    nothing; one drawn by such a copy (`drawing_segment`) is strong evidence only (the server
    might have been answering an earlier segment late).
    False positives: none for the ICMP case; for the TTL case, a return path much longer than the
    forward one; for the capture-wide case, multipath whose branches differ in length."""
    packet = packets[index]
    if "S" in packet.flags:
        return []
    tables = tables_of(packets, flow, baseline)
    expired = tables.memo("expired copies", lambda: expired_copies(packets, flow))
    proven = baseline.expires_within
    if "A" not in packet.flags:  # a bare RST acknowledges nothing: what drew it?
        drawn_by = drawing_segment(packets, index, flow, baseline) if "R" in packet.flags else None
        if drawn_by is None or not drawn_by.length:
            return []
        where = next((router for i, router in expired.items() if packets[i] is drawn_by), None)
        if where is None and proven is not None and drawn_by.ttl <= proven[0]:
            where = f"{proven[1]}, TTL {proven[0]}, in another connection of this capture"
        return [Signal(2, f"drawn by our request, which expired on the way (time exceeded from {where})")] \
            if where is not None else []
    copies = tables.memo("data copies", lambda: _data_copies(packets, flow))
    lowest = tables.memo("lowest data ttl", lambda: min((packets[i].ttl for i in copies), default=None))
    server_hop = baseline.server_hop
    short = max(proven[0] if proven else -1, server_hop - 3 if server_hop is not None else -1)
    if not expired and (lowest is None or lowest > short):
        return []  # every copy went out with a TTL that could reach the server: nothing to find (and O(1))
    answered = [i for i in copies if i < index and seq_diff(packet.ack, seq_end(packets[i])) >= 0]
    if not answered:
        return []
    last = packets[answered[-1]]
    if all(i in expired for i in answered):
        return [Signal(3, f"acknowledges our data, but every copy of it expired on the way (ICMP time exceeded "
                          f"from {expired[answered[-1]]}): it never reached the server", decisive=True)]
    if proven is not None and all(packets[i].ttl <= proven[0] for i in answered):
        return [Signal(3, f"acknowledges our data, sent with TTL {last.ttl}, but packets with TTL {proven[0]} "
                          f"expire at router {proven[1]} before the server (another connection of this capture): "
                          f"it never reached the server", decisive=True)]
    if server_hop is not None and all(packets[i].ttl <= server_hop - 3 for i in answered):
        return [Signal(2, f"acknowledges our data, sent with TTL {last.ttl}, while the server is about "
                          f"{server_hop} hops away")]
    return []


def _data_copies(packets: list[PacketRecord], flow: Flow) -> list[int]:
    return [i for i, p in enumerate(packets) if flow.sent_by_client(p) and p.length]


def expired_copies(packets: list[PacketRecord], flow: Flow) -> dict[int, str]:
    """Our data segments that an ICMP time exceeded in the flow quotes (by sequence number and
    IP-ID), each with the address of the router that answered."""
    quoted = {}
    for p in packets:
        if flow.quotes_flow(p) and is_time_exceeded(p) and p.quoted.seq is not None:
            quoted.setdefault((p.quoted.seq, p.quoted.ip_id if p.version == 4 else None), p.src)
    result = {}
    for i in _data_copies(packets, flow):
        p = packets[i]
        router = quoted.get((p.seq, p.ip_id if p.version == 4 else None))
        if router is not None:
            result[i] = router
    return result


def overlapping_payload(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """Data in the server's name that covers bytes another segment in its name already carried, with
    other bytes (decisive: one of the two is forged).

    Why: a stack retransmits the same bytes for the same sequence numbers; an injector racing the
    server (Quantum Insert; the NSA's tool as documented by Fox-IT, 2015; Zeek's
    `rexmit_inconsistency`) sends its own bytes for them, and the first to arrive is the one the
    client keeps, which is why injectors race. Of the two, the one outside the server's
    fingerprint (`Baseline.members`) is blamed; when both or neither are in it, the one that
    arrived first (the race's winner). Only bytes both segments carry are compared (a snap length
    may have cut either).
    False positives: none from a conforming stack; a capture that corrupted bytes would need to
    pass the checksum."""
    clash = tables_of(packets, flow, baseline).memo(("payload clashes", baseline.members),
                                                    lambda: _payload_clashes(packets, flow, baseline))
    other = clash.get(index)
    if other is None:
        return []
    return [Signal(3, f"carries other bytes than the segment #{other + 1} in the server's name for the same "
                      f"sequence numbers: one of the two is forged", decisive=True)]


def _payload_clashes(packets: list[PacketRecord], flow: Flow, baseline: Baseline) -> dict[int, int]:
    """For each data segment in the server's name judged forged by a clash, the other segment."""
    segments = [i for i, p in enumerate(packets) if flow.toward_client(p) and p.length and "R" not in p.flags]
    if len(segments) < 2:
        return {}
    origin = packets[segments[0]].seq
    spans = sorted((seq_diff(packets[i].seq, origin), i) for i in segments)
    result: dict[int, int] = {}
    open_spans: list[tuple[int, int]] = []  # (start, index) of earlier segments that may still overlap
    for start, i in spans:
        data = packets[i].payload
        open_spans = [(s, j) for s, j in open_spans if s + packets[j].length > start]
        for other_start, j in open_spans[-8:]:  # bounded: a flow of retransmissions stays linear
            other = packets[j].payload
            low, high = max(start, other_start), min(start + len(data), other_start + len(other))
            if low < high and data[low - start:high - start] != other[low - other_start:high - other_start]:
                in_i, in_j = i in baseline.members, j in baseline.members
                forged = j if in_i and not in_j else i if in_j and not in_i else min(i, j)
                result.setdefault(forged, i + j - forged)
        open_spans.append((start, i))
    return result


def acknowledgement_taken_back(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline
                               ) -> list[Signal]:
    """Data in the server's name acknowledging more than the server itself, afterwards, shows it
    ever received.

    Why: an acknowledgement is cumulative and a stack never takes it back (RFC 9293 3.4: RCV.NXT
    only advances, and every segment carries it). If a packet says "I have your request" (ACK at
    the request's end) and the server's own packets, sent after it, acknowledge less, both cannot
    come from the server's stack: the one without the server's fingerprint was made by someone
    else, who saw the request and answered in the server's name (a block-page injector that drops
    the request, as Yadav et al., IMC 2018, describe, whose page the server never knew of; the
    server's duplicate ACKs to our next segments still acknowledge only up to the request's
    start). Unlike the timing signal (`too_early`), it holds however slowly the box answers.
    "Sent after": the server's packet arrived more than one round trip after this one, longer
    than any one-way trip of the path takes, so it left the server after this one arrived here.
    Only a packet that is not among the server's own (`Baseline.members`: its fingerprint) is
    judged, against one that is. False positives: reordering of the server's own packets (an ACK
    sent before the data arriving after it): ruled out by the round-trip bound; two packets both
    with the server's fingerprint disagreeing (a box copying the server's TTL): not judged."""
    packet = packets[index]
    if index in baseline.members or not packet.length or "A" not in packet.flags or "R" in packet.flags \
            or baseline.rtt is None:
        return []
    for j in range(index + 1, len(packets)):
        later = packets[j]
        if j not in baseline.members or "A" not in later.flags or "R" in later.flags \
                or later.t - packet.t <= baseline.rtt:
            continue
        behind = seq_diff(packet.ack, later.ack)
        if behind > 0:
            return [Signal(2, f"it acknowledges {behind} byte(s) more than the server's own ACK "
                              f"{(later.t - packet.t) * 1000:.0f} ms later does: a stack never takes back an "
                              f"acknowledgement, so the server never received what this packet answered")]
        return []  # the server's own acknowledgement caught up: no contradiction
    return []


def ack_short_of_request(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """A RST/ACK in the server's name, a full round trip after our request, that does not
    acknowledge it.

    Why: the server's packets sent after our request reached it acknowledge the request (RFC 9293:
    ACK = RCV.NXT), and anything the server sent after the request arrived reaches us at least a
    round trip after we sent it. A box that answers on seeing the request, but builds its reset
    from the connection's state before it, leaves the ACK short.
    False positives: a request lost on the way (then the server never had it; weight 1 only)."""
    packet = packets[index]
    if not packet.has("RA") or baseline.rtt is None:
        return []
    request = tables_of(packets, flow, baseline).memo("first request", lambda: first_request(packets, flow))
    if request is None or packet.t - request.t < baseline.rtt:
        return []
    short = seq_diff(seq_end(request), packet.ack)
    if short <= 0:
        return []
    return [Signal(1, f"acknowledges {short} byte(s) less than our request, a round trip after it")]



def published_fingerprint(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """A packet that fits a real injector's published fingerprint (`signatures.FINGERPRINTS`: the
    device, the source that measured it, and its look-alike are data there). Weight 2 at most, so
    a fingerprint alone never blames: a genuine stack can share any one field by chance."""
    from probe.engine.signatures import matches

    packet = packets[index]
    if "R" not in packet.flags:
        return []
    window = burst_window(baseline.rtt)
    tables = tables_of(packets, flow, baseline)

    def nearby() -> list[PacketRecord]:
        times = tables.memo("times in the server's name", lambda: sorted(
            (p.t, i) for i, p in enumerate(packets) if flow.toward_client(p)))
        low = bisect_left(times, (packet.t - window, -1))
        high = bisect_right(times, (packet.t + window, len(packets)))
        return [packets[i] for _, i in times[low:high]]

    return [Signal(fingerprint.weight, sentence) for fingerprint, sentence in matches(packet, nearby)]


def flow_label(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """An IPv6 packet whose flow label differs from the one the server's SYN-ACK carried.

    Why: RFC 6437 asks a source to keep one flow label for a flow; Linux derives it from a hash of
    the connection (net.ipv6.auto_flowlabels) and keeps it for the connection's life, and an
    injector writing its own IPv6 header rarely copies it (the field is 20 bits, not something a
    tool fills in by chance). False positives: a server that sends label 0 on some packets and a
    hash on others (a reset sent without a socket may carry another label, e.g. Linux before it
    reflected the label of the segment that drew it), a label rewritten on the way (RFC 6437
    allows a router to set a zero label); so weight 1 when either label is 0, 2 otherwise, and
    never decisive.

    A bare reset (RST without ACK, RFC 9293's answer to a segment of a connection the receiver
    does not have) is exempt: Linux sends it from its control socket (tcp_v6_send_reset in
    net/ipv6/tcp_ipv6.c, no socket), labelled with a hash of the addresses and ports or, with
    net.ipv6.flowlabel_reflect, the label of the segment that drew it, never the connection's
    own (a random per-socket hash). The field report's genuine reset is one (measured in the lab:
    scenario 06 over IPv6). And once a segment was sent twice, either way, the server may have
    changed its label for good: Linux draws a new one (sk_rethink_txhash, net.core.txrehash) on
    a retransmission timeout (tcp_retransmit_timer) and when a data segment it already has
    arrives again (tcp_rcv_spurious_retrans): after the first retransmission of the flow a new
    label weighs 1 (measured: scenario 03 over IPv6 drew one ambiguous-reset in 20 runs on a
    loaded machine before this). A label that another packet the baseline takes as the server's
    own also carried (data or an ACK at the server's TTL, in time: `Baseline.members`) is the
    server's new label, not a signal: a SYN that waits in the neighbour queue while our
    retransmission of it is sent leaves twice at once (the lab's first probe of a fresh lab
    did, until the lab waited for its links, netns/lab.py; a lost first neighbour solicitation
    does it in the field), and the server answered the second with a SYN-ACK under a new label
    that the whole connection then kept."""
    packet = packets[index]
    synack = baseline.synack
    if packet.version != 6 or synack is None or packet.flow_label == synack.flow_label:
        return []
    if "R" in packet.flags and "A" not in packet.flags:
        return []
    tables = tables_of(packets, flow, baseline)
    labels = tables.memo("member-labels", lambda: Counter(packets[i].flow_label for i in baseline.members))
    if labels[packet.flow_label] > (1 if index in baseline.members else 0):
        return []
    rehashed = index > tables.memo("first-retransmission", lambda: _first_retransmission(packets, flow))
    weight = 1 if rehashed or 0 in (packet.flow_label, synack.flow_label) else 2
    return [Signal(weight, f"flow label {packet.flow_label:#07x}, the server's SYN-ACK carried "
                           f"{synack.flow_label:#07x}")]


ECN_MASK = 0x03  # the low two bits of the traffic class / TOS byte are ECN's (RFC 3168), not the sender's


def traffic_class(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """An IPv6 packet whose DSCP (the traffic class's upper six bits) differs from the server's.

    Why: a stack marks every packet of a connection with the socket's traffic class (Linux:
    np->tclass, IPV6_TCLASS, 0 by default; RFC 2474 makes the DSCP a per-flow or per-class
    choice of the sender), so the server's SYN-ACK, data and ACKs carry one DSCP; an injector
    writing its own IPv6 header sets its own (usually 0), and a path that re-marks packets
    re-marks the server's and a forger's alike only where both pass the re-marking router.
    So it says something only about a forger between the re-marking point and us, and a
    server whose DSCP is not 0; weight 1, never decisive, and never enough alone.

    False positives, and what is done about them:
    - ECN: the two low bits change per packet on a genuine path (ECT(0) on the server's data
      but not on its SYN-ACK, ACKs or retransmissions, RFC 3168 6.1.1 and 6.1.5; CE set by a
      congested router, 5): they are masked out, only the DSCP is compared.
    - A path that re-marks DSCP (providers bleach or rewrite it at their borders, RFC 2474 and
      RFC 8100) does it to every packet of a direction: the server's packets then all carry the
      new mark and agree with each other; no signal.
    - A bare reset (no ACK flag): Linux sends it from its control socket (tcp_v6_send_reset) with
      the traffic class of the segment that drew it (ipv6_get_dsfield of our packet, as the path
      delivered it), not the connection's: our segments re-marked on the way make the server's
      genuine bare reset differ. Exempt, as for the flow label.
    - A server that changes its socket's traffic class mid-connection (an application calling
      setsockopt(IPV6_TCLASS) after the handshake, or net.ipv4.tcp_reflect_tos making the SYN-ACK
      reflect our SYN): a DSCP that another packet the baseline takes as the server's own carried
      (`Baseline.members`) is the server's, not a signal.

    Not used for IPv4, whose TOS byte is the same field: the IPv4 engine's verdicts were measured
    (the scenarios, the real captures) without it, and it has not been measured there."""
    packet = packets[index]
    synack = baseline.synack
    if packet.version != 6 or synack is None:
        return []
    dscp, server_dscp = packet.tos & ~ECN_MASK & 0xFF, synack.tos & ~ECN_MASK & 0xFF
    if dscp == server_dscp or "R" in packet.flags and "A" not in packet.flags:
        return []
    tables = tables_of(packets, flow, baseline)
    marks = tables.memo("member-dscps", lambda: Counter(packets[i].tos & ~ECN_MASK & 0xFF for i in baseline.members))
    if marks[dscp] > (1 if index in baseline.members else 0):
        return []
    return [Signal(1, f"traffic class {packet.tos:#04x} (DSCP {dscp >> 2}), the server's SYN-ACK carried "
                      f"{synack.tos:#04x} (DSCP {server_dscp >> 2})")]


def _first_retransmission(packets: list[PacketRecord], flow: Flow) -> int:
    """The index of the first segment (either way) that repeats a SYN, a FIN or data already
    sent in the same direction; len(packets) when none does."""
    sent: dict[bool, set] = {True: set(), False: set()}
    for i, p in enumerate(packets):
        ours = flow.sent_by_client(p)
        if not ours and not flow.toward_client(p):
            continue
        if "R" in p.flags or not (p.length or "S" in p.flags or "F" in p.flags):
            continue
        key = (p.seq, p.length, p.flags)
        if key in sent[ours]:
            return i
        sent[ours].add(key)
    return len(packets)


def reset_of_a_fresh_connection(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> list[Signal]:
    """A bare RST answering our first request on a connection the server had just accepted.

    Why: RFC 9293 makes a stack answer a segment with a bare RST (seq = its ACK, no ACK flag) only
    when it has no connection for it; the server had one a moment before (it sent the SYN-ACK and
    nothing since). So between the handshake and the request the server lost it: a reset in our
    name reached it (a box in between that resets the server just before letting the request
    through, a variant of the field report), or the server dropped it itself. The field report's
    own signature (`verdict.reset_in_our_name`) needs the request's retransmission to draw the
    reset; this is the same shape on the first copy, where the exchange alone cannot tell the two
    apart. Weight 2: never blames alone, but the reset is not vouched for (`ambiguous-reset`, and
    `check` traces it).
    False positives: an accept queue overflowing with tcp_abort_on_overflow (Linux then resets the
    handshake's ACK at once), a server that restarted between our ACK and our request."""
    packet = packets[index]
    if "R" not in packet.flags or "A" in packet.flags or baseline.synack is None:
        return []
    request = tables_of(packets, flow, baseline).memo("first request", lambda: first_request(packets, flow))
    drawn_by = drawing_segment(packets, index, flow, baseline)
    if request is None or drawn_by is not request or packet.seq != request.ack:
        return []
    before = packets[:index]
    if any(flow.toward_client(p) and p is not baseline.synack and p.seq != packet.seq
           or flow.sent_by_client(p) and "R" in p.flags for p in before):
        return []
    return [Signal(2, "a bare reset to our first request on a connection the server had just accepted: it no "
                      "longer had it (a reset in our name reached it, or it dropped the connection itself)")]
