"""The signals, one small function each. Each returns `Signal`s: a weight and a sentence.

Positive weight says "forged" (sent by something other than the server), negative says
"the server's own". No single signal decides: `verdict.attribute` adds them up.
Weights: 3 = physics or protocol says the server could not have sent it; 2 = strong;
1 = suggestive (known false positives listed in each docstring).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from dataclasses import dataclass

from probe.engine.baseline import HALF, MOD32, TIMESTAMP_NOISE, Baseline, FlowTables, SeqIndex, hop_distance, seq_end
from probe.engine.model import Flow
from probe.record import PacketRecord
from probe.tcp import seq_diff

BURST_SHARE = 0.1  # resets closer together than this share of the round trip belong to one burst


@dataclass(frozen=True)
class Signal:
    weight: int
    sentence: str


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
        return [Signal(3, f"arrived {elapsed * 1000:.1f} ms after the packet it answers; the server is "
                          f"{baseline.rtt * 1000:.1f} ms away (round trip), so nothing of its own can arrive "
                          f"sooner than {soonest * 1000:.1f} ms")]
    if elapsed >= baseline.rtt * 0.8:
        return [Signal(-1, f"arrived {elapsed * 1000:.1f} ms after the packet it answers "
                           f"(round trip {baseline.rtt * 1000:.1f} ms)")]
    return []


def ip_id_habit(packet: PacketRecord, baseline: Baseline) -> list[Signal]:
    """An IP-ID that breaks the server's numbering (zero, or a counter).

    Why: a forger numbers its packets from its own counter or at random. Linux sends a
    reset for an unknown connection with IP-ID 0, and a forger sending through a raw socket
    cannot even send 0 (the kernel fills one in). False positives: a global counter on a busy
    server jumps; RSTs from Linux carry 0 while its data packets count (RSTs of that shape are
    accepted by `reset_shape` instead)."""
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
    +4380: guessing ahead of a window), non-zero windows on bare resets.
    False positives: other stacks may put a window on a bare reset (weight 1 only)."""
    packet = packets[index]
    if "R" not in packet.flags:
        return []
    signals = []
    server_next = tables_of(packets, flow, baseline).memo("server next seq",
                                                          lambda: _server_next_seqs(packets, flow))[index]
    if server_next is not None:
        offset = seq_diff(packet.seq, server_next)
        if offset == 0:
            signals.append(Signal(-1, "sequence number exactly where the server's next byte belongs"))
        else:
            signals.append(Signal(2, f"sequence number {offset:+d} from where the server's next byte belongs"))
    if packet.win != 0 and "A" not in packet.flags:
        signals.append(Signal(1, f"window {packet.win} on a bare reset (a stack resetting an unknown "
                                 f"connection sends 0)"))
    return signals


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
