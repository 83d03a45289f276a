"""What the real server looks like from here: its TTL, its IP-ID habit, the path's RTT.

Theory of operation. Every judgement of "forged" is a comparison with the server's own
packets, so the baseline must be built only from packets that are very likely genuine:
the SYN-ACK that answers our SYN, then packets that arrive at the SYN-ACK's TTL no sooner
than the path allows and that move the connection forward (acknowledge our bytes, carry
in-sequence data). A box that answers the handshake itself (transparent proxy, SYN proxy)
becomes the baseline; the checks that use it then speak of "the handshake's responder".
"""

from __future__ import annotations

from dataclasses import dataclass

from probe.engine.model import Flow
from probe.record import PacketRecord
from probe.tcp import seq_add, seq_diff

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

    def judge(self, ip_id: int) -> str | None:
        """A sentence if `ip_id` breaks the habit, else None."""
        if self.kind == "zero" and ip_id != 0:
            return f"IP-ID {ip_id}, the server's packets all carry IP-ID 0"
        if self.kind == "counter":
            last = self.ids[-1]
            ahead = (ip_id - last) % 65536
            if not (ahead <= 2000 or ahead >= 65536 - 64):
                return f"IP-ID {ip_id}, the server counts up from {self.ids[0]} (last {last})"
        return None


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
    # judged in sending order, not arrival order: the path may reorder two of the server's packets
    start = min(counting, key=lambda i: sum((j - i) % 65536 for j in counting))
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


def cause_of(packets: list[PacketRecord], index: int, flow: Flow) -> PacketRecord | None:
    """The earliest packet we sent that the packet at `index` can be an answer to.

    With an ACK flag, that is the first of our segments whose end it acknowledges; a bare RST
    (RFC 9293: its seq is the ACK of the segment that drew it) answers the first of our segments
    carrying that ACK. Taking the earliest candidate makes "too early" claims conservative."""
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


def build_baseline(packets: list[PacketRecord], flow: Flow) -> Baseline:
    syn = next((p for p in packets if flow.sent_by_client(p) and p.flags == "S"), None)
    synack_index = None
    for i, p in enumerate(packets):
        if syn is not None and flow.toward_client(p) and "S" in p.flags and "A" in p.flags \
                and p.ack == seq_add(syn.seq, 1):
            synack_index = i
            break
    if synack_index is None:
        return Baseline(None, None, None, IpIdHabit("unknown", ()), frozenset())
    synack = packets[synack_index]
    syns_before = [p for p in packets[:synack_index] if flow.sent_by_client(p) and p.flags == "S"]
    last_syn = syns_before[-1] if syns_before else syn  # a capture can show the SYN-ACK first
    rtt = handshake_rtt = max(synack.t - last_syn.t, 0.0)
    server_ttl = _farther_responder(packets, synack_index, flow) or synack.ttl
    members = {synack_index}
    ids = [synack.ip_id] if server_ttl == synack.ttl else []
    for i in range(synack_index + 1, len(packets)):
        p = packets[i]
        if not flow.toward_client(p) or p.ttl not in (synack.ttl, server_ttl) or "R" in p.flags:
            continue
        cause = cause_of(packets, i, flow)
        if cause is not None and p.t - cause.t < rtt * 0.5:
            continue  # faster than the path allows: not evidence of what the server looks like
        members.add(i)
        if p.ttl == server_ttl:
            ids.append(p.ip_id)
        if cause is not None and "A" in p.flags and seq_end(cause) == p.ack and cause.length and p.ttl == synack.ttl:
            rtt = min(rtt, p.t - cause.t)  # a fresh sample: the server acknowledged our data
    return Baseline(synack, server_ttl, rtt, classify_ip_ids(ids), frozenset(members), synack.ttl,
                    rtt_spread=handshake_rtt - rtt)


def _farther_responder(packets: list[PacketRecord], synack_index: int, flow: Flow) -> int | None:
    """The TTL of a server answering from farther away than the handshake's responder, if any.

    A SYN proxy or load balancer answers the handshake itself and hands the connection to the
    server behind it, whose packets then arrive with a lower TTL. A forger sits between us and
    the server, so it is never farther than what answered the SYN: data that continues the
    server's sequence numbers exactly, acknowledges our request and comes from farther away is
    the server's own. Returns None when no such packet exists."""
    synack = packets[synack_index]
    request = first_request(packets, flow)
    if request is None:
        return None
    for p in packets[synack_index + 1:]:
        if (flow.toward_client(p) and p.ttl < synack.ttl and "R" not in p.flags and "S" not in p.flags
                and p.length and p.seq == seq_add(synack.seq, 1) and seq_diff(p.ack, seq_end(request)) >= 0):
            return p.ttl
    return None
