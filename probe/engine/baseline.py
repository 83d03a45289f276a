"""What the real server looks like from here: its TTL, its IP-ID habit, the path's RTT.

Theory of operation. Every judgement of "forged" is a comparison with the server's own
packets, so the baseline must be built only from packets that are very likely genuine:
the SYN-ACK that answers our SYN, then packets that arrive at the SYN-ACK's TTL no sooner
than the path allows and that move the connection forward (acknowledge our bytes, carry
in-sequence data). A box that answers the handshake itself (transparent proxy, SYN proxy)
becomes the baseline; the checks that use it then speak of "the handshake's responder".

Cost. Many questions the engine asks of one packet are about the packets before or after it (what
did it answer, how far had the server sent). Asked by scanning the flow, they made a flow's cost
grow with the square of its length; `FlowTables` works the answers out once per flow, in
O(n log n), and the baseline carries them to the heuristics. Sequence numbers wrap, so "ahead" is
`seq_diff` (a half-circle, not an order); `SeqIndex` answers range questions on that circle.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from probe.engine.model import Flow
from probe.record import PacketRecord
from probe.seq import MOD32, seq_add, seq_diff

HALF = MOD32 // 2  # seq_diff(a, b) > 0 exactly when (a - b) mod 2**32 is from 1 to HALF - 1

COMMON_INITIAL_TTLS = (32, 64, 128, 255)

# How far apart in time two packets may be recorded from when they really passed, whatever the
# path: receive timestamps are software timestamps taken when the driver hands a packet up, and
# interrupt moderation on common NICs holds received packets for up to a few hundred microseconds
# (an adaptive rate of 4000 interrupts a second is 250 us); a busy or virtual host adds scheduling
# delay of the same order. Timing comparisons finer than this say nothing. It is the only absolute
# time in the engine; every other time is a share of the measured round trip.
TIMESTAMP_NOISE = 0.00025  # seconds


def initial_ttl(ttl: int) -> int:
    """The smallest common initial TTL that could have become `ttl` on the way."""
    return next((start for start in COMMON_INITIAL_TTLS if ttl <= start), 255)


def hop_distance(ttl: int) -> int:
    """The hop (as TTL-limited probes count it) of the sender of a packet that arrived with `ttl`."""
    return initial_ttl(ttl) - ttl + 1


def seq_end(packet: PacketRecord) -> int:
    """The sequence number just past what this segment occupies (SYN and FIN count one)."""
    return seq_add(packet.seq, packet.length + ("S" in packet.flags) + ("F" in packet.flags))


def first_request(packets: list[PacketRecord], flow: Flow) -> PacketRecord | None:
    """Our first segment that carries data: the request."""
    return next((p for p in packets if flow.sent_by_client(p) and p.length), None)


def request_acknowledged(packets: list[PacketRecord], flow: Flow, request: PacketRecord) -> bool:
    """Whether any of `packets` in the server's name acknowledges the whole request."""
    end = seq_end(request)
    return any(flow.toward_client(p) and "A" in p.flags and seq_diff(p.ack, end) >= 0 for p in packets)


@dataclass(frozen=True)
class IpIdHabit:
    """How the server numbers its packets: "zero", "counter", "random" or "unknown"."""

    kind: str
    ids: tuple[int, ...]

    COUNTER_AHEAD = 2000  # a counter's IP-ID this far ahead of the last one or less keeps the habit,
    COUNTER_BEHIND = 64  # and so does one this far behind the first one or less

    def judge(self, ip_id: int) -> str | None:
        """A sentence if `ip_id` breaks the habit, else None.

        A counter's habit is the run of numbers it went through, from its first IP-ID to its last,
        widened by COUNTER_BEHIND before and COUNTER_AHEAD after: every one of the server's own
        packets lies in it, whichever of them is judged (the first of a long download is thousands
        behind the last, and is still the server's)."""
        if self.kind == "zero" and ip_id != 0:
            return f"IP-ID {ip_id}, the server's packets all carry IP-ID 0"
        if self.kind == "counter":
            first, last = self.ids[0], self.ids[-1]
            if not counter_keeps(ip_id, first, last):
                return f"IP-ID {ip_id}, the server counts up from {first} (last {last})"
        return None


def counter_keeps(ip_id: int, first: int, last: int) -> bool:
    """Whether `ip_id` lies in a counter's run from `first` to `last` (modulo 65536), widened by
    `IpIdHabit.COUNTER_BEHIND` before it and `COUNTER_AHEAD` after it."""
    into = (ip_id - first + IpIdHabit.COUNTER_BEHIND) % 65536
    return into <= (last - first) % 65536 + IpIdHabit.COUNTER_BEHIND + IpIdHabit.COUNTER_AHEAD


def classify_ip_ids(ids: list[int]) -> IpIdHabit:
    """Classify a server's IP-IDs. Linux sends its SYN-ACK with IP-ID 0 and then counts per
    connection from a random start, so a leading zero is ignored when the rest count up.

    False readings: two packets are too few (kind "unknown"); a global counter on a busy
    server jumps by more than the per-flow bound and looks "random" (no judgement then)."""
    if len(ids) < 2:
        return IpIdHabit("unknown", tuple(ids))
    if all(i == 0 for i in ids):
        return IpIdHabit("zero", tuple(ids))
    counting = [i for i in ids if i != 0] if ids[0] == 0 else list(ids)
    # judged in sending order, not arrival order: the path may reorder two of the server's packets.
    # The start is the ID that puts the others least far ahead in all: sum((j - i) % 65536 for j),
    # which is sum(j) - len * i, plus 65536 for each j below i (IDs taken modulo 65536).
    below = sorted(j % 65536 for j in counting)
    total = sum(below)
    start = min(counting, key=lambda i: total - len(below) * (i % 65536) + 65536 * bisect_left(below, i % 65536))
    ordered = sorted(counting, key=lambda i: (i - start) % 65536)
    if len(ordered) >= 2 and all(0 < (b - a) % 65536 <= 2000 for a, b in zip(ordered, ordered[1:])):
        return IpIdHabit("counter", tuple(ordered))
    if len(counting) < 2:
        return IpIdHabit("unknown", tuple(ids))
    return IpIdHabit("random", tuple(ids))


@dataclass(frozen=True)
class Baseline:
    synack: PacketRecord | None
    server_ttl: int | None  # the TTL of the server's own packets (its data when a proxy shook hands)
    rtt: float | None  # seconds, the smallest round trip seen to the handshake's responder
    ip_ids: IpIdHabit
    members: frozenset[int]  # indexes of packets taken as the server's own
    handshake_ttl: int | None = None  # the SYN-ACK's TTL; differs when a SYN proxy answered it
    rtt_spread: float = 0.0  # seconds by which the handshake's round trip exceeded the smallest one
    # what other connections of the same capture proved: our packets sent with this TTL or less expire
    # before the server (a router answered time exceeded at that TTL), with that router's address
    expires_within: tuple[int, str] | None = None
    # lookup tables over the packets this baseline was learnt from (None: made when first asked)
    tables: FlowTables | None = field(default=None, compare=False, repr=False)

    @property
    def soonest_answer(self) -> float | None:
        """The soonest (seconds) after the segment that drew it that an answer of the server can
        be recorded, or None when the round trip is too short to tell anything by time.

        The smallest round trip seen may itself be inflated by queueing, so up to half of it, or
        all of the spread the samples showed if that is more, is allowed for; then the timestamp
        noise. Both allowances only ever make the bound smaller (wrong blame is worse than none),
        and all but the noise scale with the path, so a slower path gives the same judgements."""
        if self.rtt is None:
            return None
        soonest = self.rtt - max(self.rtt * 0.5, self.rtt_spread) - TIMESTAMP_NOISE
        return soonest if soonest > 0 else None

    @property
    def accepted_ttls(self) -> tuple[int, ...]:
        return tuple(sorted({t for t in (self.server_ttl, self.handshake_ttl) if t is not None}))

    @property
    def server_hop(self) -> int | None:
        return hop_distance(self.server_ttl) if self.server_ttl is not None else None


def causes(packets: list[PacketRecord], flow: Flow) -> list[PacketRecord | None]:
    """For each packet, the earliest packet we sent before it that it can be an answer to.

    With an ACK flag, that is the first of our segments whose end it acknowledges; a bare RST
    (RFC 9293: its seq is the ACK of the segment that drew it) answers the first of our segments
    carrying that ACK. Taking the earliest candidate makes "too early" claims conservative.
    Failing those, the first of our segments at or beyond what an ACK acknowledges, else our
    first segment. One pass over the flow; the first two by table, the third by `SeqIndex`."""
    result: list[PacketRecord | None] = []
    first_sent = None
    by_end: dict[int, PacketRecord] = {}  # the end of a segment of ours -> the first one ending there
    by_ack: dict[int, PacketRecord] = {}  # an ACK number -> the first of our ACK segments carrying it
    ends = None  # where each segment of ours ends (made when first needed)
    for index, packet in enumerate(packets):
        cause = first_sent
        if first_sent is not None and "A" in packet.flags:
            cause = by_end.get(packet.ack)
            if cause is None:
                if ends is None:
                    ends = SeqIndex((seq_end(p), i) for i, p in enumerate(packets) if flow.sent_by_client(p))
                covering = ends.earliest(packet.ack, HALF - 1)  # seq_diff(end, ack) >= 0
                cause = packets[covering] if covering is not None and covering < index else first_sent
        elif first_sent is not None:
            cause = by_ack.get(packet.seq, first_sent)
        result.append(cause)
        if flow.sent_by_client(packet):
            first_sent = packet if first_sent is None else first_sent
            by_end.setdefault(seq_end(packet), packet)
            if "A" in packet.flags:
                by_ack.setdefault(packet.ack, packet)
    return result


class SeqIndex:
    """Sequence numbers (or ACK numbers), each with a position (e.g. the index of its packet): which
    came first within a stretch of the circle, and which lies nearest behind a point, each in
    O(log n) (a segment tree of the earliest position, over the values in order)."""

    def __init__(self, entries: Iterable[tuple[int, int]]):
        ordered = sorted((value % MOD32, position) for value, position in entries)
        self.values = [value for value, _ in ordered]
        self._leaves = size = 1 << max(len(ordered) - 1, 0).bit_length()
        tree = [math.inf] * (2 * size)
        tree[size:size + len(ordered)] = [position for _, position in ordered]
        for node in range(size - 1, 0, -1):
            tree[node] = min(tree[2 * node], tree[2 * node + 1])
        self._tree = tree

    def _earliest_between(self, low: int, high: int) -> float:
        """The earliest position among the values ranked `low` to `high` - 1 (inf if none)."""
        tree, earliest = self._tree, math.inf
        low, high = low + self._leaves, high + self._leaves
        while low < high:
            if low & 1:
                earliest = min(earliest, tree[low])
                low += 1
            if high & 1:
                high -= 1
                earliest = min(earliest, tree[high])
            low, high = low >> 1, high >> 1
        return earliest

    def earliest(self, start: int, width: int) -> int | None:
        """The earliest position whose value is at most `width` ahead of `start`:
        (value - start) mod 2**32 <= width, with `width` below 2**32."""
        start %= MOD32
        end = start + width
        low = bisect_left(self.values, start)
        if end < MOD32:
            earliest = self._earliest_between(low, bisect_right(self.values, end))
        else:
            earliest = min(self._earliest_between(low, len(self.values)),
                           self._earliest_between(0, bisect_right(self.values, end - MOD32)))
        return None if earliest == math.inf else int(earliest)

    def nearest_behind(self, point: int, before: int) -> int | None:
        """Of the values at positions below `before`, the one that lies furthest ahead of `point`
        going round, i.e. nearest behind it: the largest (value - point) mod 2**32."""
        split = bisect_left(self.values, point % MOD32)
        for low, high in ((0, split), (split, len(self.values))):  # below the point first, then the rest
            if self._earliest_between(low, high) >= before:
                continue
            while high - low > 1:  # the highest rank from `low` with a position below `before`
                middle = (low + high) // 2
                if self._earliest_between(middle, high) < before:
                    low = middle
                else:
                    high = middle
            return self.values[low]
        return None


class FlowTables:
    """The answers about one flow's packets that the engine needs for every packet, worked out once.

    `causes[i]` is the packet of ours that packet i answers (`causes`); the heuristics keep their
    own tables here through `memo`, keyed by what the table depends on besides the packets."""

    def __init__(self, packets: list[PacketRecord], flow: Flow):
        self.causes = causes(packets, flow)
        self._memo: dict = {}

    def memo(self, key, compute: Callable[[], object]):
        """`compute()`, worked out once for this flow and `key`."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


def build_baseline(packets: list[PacketRecord], flow: Flow) -> Baseline:
    tables = FlowTables(packets, flow)
    syn = next((p for p in packets if flow.sent_by_client(p) and p.flags == "S"), None)
    synack_index = None
    for i, p in enumerate(packets):
        if syn is not None and flow.toward_client(p) and "S" in p.flags and "A" in p.flags \
                and p.ack == seq_add(syn.seq, 1):
            synack_index = i
            break
    if synack_index is None:
        return Baseline(None, None, None, IpIdHabit("unknown", ()), frozenset(), tables=tables)
    synack = packets[synack_index]
    syns_before = [p for p in packets[:synack_index] if flow.sent_by_client(p) and p.flags == "S"]
    last_syn = syns_before[-1] if syns_before else syn  # a capture can show the SYN-ACK first
    handshake_rtt = max(synack.t - last_syn.t, 0.0)
    rtt = min(handshake_rtt, _round_trip_answered_twice(packets, synack_index, flow, tables))
    server_ttl = _farther_responder(packets, synack_index, flow) or synack.ttl
    members = {synack_index}
    ids = [synack.ip_id] if server_ttl == synack.ttl else []
    for i in range(synack_index + 1, len(packets)):
        p = packets[i]
        if not flow.toward_client(p) or p.ttl not in (synack.ttl, server_ttl) or "R" in p.flags:
            continue
        cause = tables.causes[i]
        if cause is not None and p.t - cause.t < rtt * 0.5:
            continue  # faster than the path allows: not evidence of what the server looks like
        members.add(i)
        if p.ttl == server_ttl:
            ids.append(p.ip_id)
        if cause is not None and "A" in p.flags and seq_end(cause) == p.ack and cause.length and p.ttl == synack.ttl:
            rtt = min(rtt, p.t - cause.t)  # a fresh sample: the server acknowledged our data
    return Baseline(synack, server_ttl, rtt, classify_ip_ids(ids), frozenset(members), synack.ttl,
                    rtt_spread=handshake_rtt - rtt, tables=tables)


def _farther_responder(packets: list[PacketRecord], synack_index: int, flow: Flow) -> int | None:
    """The TTL of a server answering from farther away than the handshake's responder (or from as
    far: a proxy in the server's own rack), if any.

    A SYN proxy or load balancer answers the handshake itself and hands the connection to the
    server behind it, whose packets then arrive with a lower TTL. A forger sits between us and
    the server, so it is never farther than what answered the SYN: data that continues the
    server's sequence numbers exactly, acknowledges our request and comes from farther away is
    the server's own.

    "Farther" is counted in hops from each packet's own initial TTL (`hop_distance`), not by
    comparing raw TTLs: a block page from a Windows-like stack (128) near us arrives with a lower
    TTL than a SYN-ACK from a router-like stack (255) far away (CenTrace's bisexual.org capture:
    TTL 83 against 238). Both stacks of a real proxy-and-server pair set DF on TCP, as every current
    stack does, so data with another DF bit than the SYN-ACK's is not taken as the server's either
    (then the ordinary signals judge it). Returns None when no such packet exists."""
    synack = packets[synack_index]
    request = first_request(packets, flow)
    if request is None:
        return None
    for p in packets[synack_index + 1:]:
        if (flow.toward_client(p) and hop_distance(p.ttl) >= hop_distance(synack.ttl) and p.df == synack.df
                and p.ttl != synack.ttl
                and "R" not in p.flags and "S" not in p.flags
                and p.length and p.seq == seq_add(synack.seq, 1) and seq_diff(p.ack, seq_end(request)) >= 0):
            return p.ttl
    return None


def _round_trip_answered_twice(packets: list[PacketRecord], synack_index: int, flow: Flow,
                               tables: FlowTables) -> float:
    """The round trip that answers to two different segments of ours confirm, if shorter than the
    handshake's (else infinity).

    The handshake's round trip can be inflated: a radio waking up for the first packet after idle
    (cellular RRC promotion, Wi-Fi power save), a SYN held in a queue. Every later answer of the
    server would then look "sooner than the path allows" (CenTrace's torproject control run: a
    754 ms handshake, then answers 80 ms after each segment). An answer in the server's name with
    the SYN-ACK's TTL and DF, not a reset, is a sample of the path; one sample could be a forger's,
    but a forger that also answers a second, later segment of ours in the same time is answering in
    the server's place for the whole exchange (a proxy), not racing it. So the second-smallest of
    the fastest answers to each of our segments is taken; `Baseline.rtt_spread` then grows by the
    difference, which makes timing judgements more cautious (or impossible) on such a path."""
    synack = packets[synack_index]
    fastest: dict[int, float] = {}  # id of the segment of ours answered -> its fastest answer
    for i in range(synack_index + 1, len(packets)):
        p = packets[i]
        cause = tables.causes[i]
        if (cause is None or not flow.toward_client(p) or "R" in p.flags or "S" in p.flags
                or p.ttl != synack.ttl or p.df != synack.df or "A" not in p.flags):
            continue
        elapsed = p.t - cause.t
        if elapsed >= 0:
            fastest[id(cause)] = min(elapsed, fastest.get(id(cause), elapsed))
    if len(fastest) < 2:
        return math.inf
    return sorted(fastest.values())[1]
