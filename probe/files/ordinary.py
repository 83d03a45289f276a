"""The pre-judgement of `probe analyze`: is a flow so ordinary that the engine can only call it clean?

Theory of operation. Most flows of a capture are a handshake, a request, an answer and a close,
and the engine (`engine.analyze_flow`) spends most of a big file's time proving that about them.
`Ordinary` watches a flow's packets as the reader takes them, from the header fields alone, and
stays true only while the flow keeps to a shape for which the engine's answer is known in
advance: verdict `clean`, every packet of the client `self`, every packet in the server's name
`server`. The first packet outside that shape makes it false for good, and the flow then goes
to the engine like any other. It is deliberately narrow (false for anything unusual); it must
never be true of a flow the engine would judge otherwise. Why each condition is enough, in terms
of what the engine does (`engine.verdict`, `engine.heuristics`, `engine.baseline`):

1. IPv4, captured at the client by TTL (the client's SYN leaves with a common initial TTL, the
   server's SYN-ACK arrives with another): `analyze.find_vantage` then reads the client's seat, so
   `analyze.judge_from_server` never runs; IPv6 has signals of its own (the flow label) and is
   left to the engine.
2. One SYN (no ECN bits), first; one SYN-ACK acknowledging it, before any other packet in the
   server's name and before any other packet of ours; then only ACK-carrying segments with no
   SYN, RST, URG, ECE or CWR; no ICMP error quoting the flow; every TCP header complete. So the
   baseline's SYN-ACK is this one, and every heuristic that judges resets only stays silent.
3. Every packet of ours with the SYN's TTL, enough to reach the server (more than its hop distance
   less 3: `answers_expired_request` is silent; no TTL-limited request, so not a trace);
   every packet in the server's name with the SYN-ACK's TTL and DF bit: `ttl_distance` speaks for
   the server, `initial_ttl_class`, `df_bit` and `_farther_responder` are silent, and the server's
   TTL is the SYN-ACK's.
4. The server's data in order, each segment starting where the last ended (no retransmission, no
   overlap): `overlapping_payload` is silent.
5. No acknowledgement in the server's name beyond what we had sent before it: `acknowledges_unsent`
   (which compares with all we ever sent) is silent.
6. No IP-ID in the server's name (other than 0) equal to one of ours before it: `ip_id_copied` is
   silent.
7. Every packet in the server's name after the SYN-ACK recorded at least half the handshake's
   round trip after the segment of ours it answers, as `baseline.causes` finds it (the first of
   ours ending at its ACK; failing that, the engine picks some earlier segment of ours, so the
   latest time of ours before it is taken, which is later or the same). `Baseline.soonest_answer` is less
   than half the smallest round trip, which is at most the handshake's, so `too_early` is silent,
   and every such packet is one of the baseline's members.
8. At least one data segment in the server's name: with no reset, no forged packet and no ICMP,
   `decide` says `clean` exactly when the server's own packets (the members) carry data.

What is left is `ip_id_habit`, a weight of 1 at most, which alone never blames (`weigh`). The
equality of this shortcut with the engine is a test, not a belief: `tests/unit/test_ordinary.py`
runs both on every golden capture, lab recording, real capture and property-generated flow.
"""

from __future__ import annotations

import functools

from probe.engine.baseline import COMMON_INITIAL_TTLS, hop_distance

MOD32 = 1 << 32
HALF = 1 << 31
CLEAN = "The server answered the request; nothing in between interfered."
_SYN, _ACK, _RST, _FIN = 0x02, 0x10, 0x04, 0x01
_ALLOWED_AFTER_HANDSHAKE = 0x10 | 0x08 | 0x01  # ACK, PSH, FIN


def _ahead(a: int, b: int) -> int:
    """a - b in sequence space, as a signed number (`tcp.seq_diff`)."""
    d = (a - b) % MOD32
    return d - MOD32 if d >= HALF else d


class Ordinary:
    """The running pre-judgement of one flow (see the module's docstring). `still` says whether it holds."""

    __slots__ = ("still", "syn_t", "syn_ttl", "syn_seq", "synack_t", "synack_ttl", "synack_df", "server_next",
                 "client_end", "by_end", "client_ids", "last_ours_t", "half_rtt", "request_t", "answer_t",
                 "client_count")

    def __init__(self, t: float, ttl: int, flags: int, seq: int, ip_id: int, version: int):
        self.still = version == 4 and flags == _SYN
        self.syn_t, self.syn_ttl, self.syn_seq = t, ttl, seq
        self.synack_t = self.synack_ttl = self.synack_df = self.server_next = None
        self.client_end = (seq + 1) % MOD32
        self.by_end = {self.client_end: t}  # the end of a segment of ours -> when the first one ending there passed
        self.client_ids = {ip_id}
        self.last_ours_t = t
        self.half_rtt = 0.0
        self.request_t = self.answer_t = None
        self.client_count = 1

    def ours(self, t: float, ttl: int, flags: int, seq: int, length: int, ip_id: int) -> None:
        """A later segment of the client's (the SYN was the first)."""
        if self.synack_t is None or ttl != self.syn_ttl or flags & ~_ALLOWED_AFTER_HANDSHAKE or not flags & _ACK:
            self.still = False
            return
        end = (seq + length + (flags & _FIN)) % MOD32
        if _ahead(end, self.client_end) > 0:
            self.client_end = end
        if end not in self.by_end:
            self.by_end[end] = t
        self.client_ids.add(ip_id)
        self.last_ours_t = max(self.last_ours_t, t)  # the latest of ours so far, even if the clock stepped back
        if length and self.request_t is None:
            self.request_t = t

    def theirs(self, t: float, ttl: int, df: int, flags: int, seq: int, ack: int, length: int, ip_id: int) -> None:
        """A segment in the server's name."""
        if self.synack_t is None:
            if flags != _SYN | _ACK or ack != (self.syn_seq + 1) % MOD32 or self.syn_ttl not in COMMON_INITIAL_TTLS \
                    or ttl in COMMON_INITIAL_TTLS or self.syn_ttl <= hop_distance(ttl) - 3:
                self.still = False
                return
            self.synack_t, self.synack_ttl, self.synack_df = t, ttl, df
            self.server_next = (seq + 1) % MOD32
            self.half_rtt = max(t - self.syn_t, 0.0) / 2
            return
        if ttl != self.synack_ttl or df != self.synack_df or flags & ~_ALLOWED_AFTER_HANDSHAKE or not flags & _ACK \
                or _ahead(ack, self.client_end) > 0 or (ip_id and ip_id in self.client_ids) \
                or t - self.by_end.get(ack, self.last_ours_t) < self.half_rtt:
            self.still = False
            return
        if length:
            if seq != self.server_next:
                self.still = False
                return
            self.server_next = (seq + length) % MOD32
            if self.answer_t is None:
                self.answer_t = t
        if flags & _FIN:
            self.server_next = (self.server_next + 1) % MOD32

    def holds(self) -> bool:
        """Ordinary to the end so far: `verdict` will not be None."""
        return self.still and self.answer_t is not None

    def verdict(self) -> tuple[str, float, str | None] | None:
        """(vantage evidence, handshake round trip in ms, the engine's note or None) of a flow the
        engine would call clean, or None when the flow is not ordinary to its end."""
        if not self.holds():
            return None
        return ordinary_verdict(self.syn_ttl, self.synack_ttl, self.syn_t, self.synack_t, self.request_t,
                                self.answer_t)


@functools.lru_cache(maxsize=1024)
def _vantage_evidence(syn_ttl: int, synack_ttl: int) -> str:
    return (f"the client's SYN has TTL {syn_ttl}, the server's SYN-ACK TTL {synack_ttl}: "
            f"the client's packets had not yet crossed a router")


def ordinary_verdict(syn_ttl: int, synack_ttl: int, syn_t: float, synack_t: float, request_t: float | None,
                     answer_t: float) -> tuple[str, float, str | None]:
    """`Ordinary.verdict` of a flow that holds, from its times and TTLs (the compiled twin's too)."""
    handshake = synack_t - syn_t
    note = None
    if request_t is not None:  # `engine.verdict.slow_answer_after_fast_handshake`, from the same times
        latency = answer_t - request_t
        if latency > 10 * max(handshake, 0.0005) and latency - handshake > 0.020:
            note = (f"Note: the answer took {latency * 1000:.1f} ms but the handshake only "
                    f"{handshake * 1000:.1f} ms; a transparent proxy near you may have answered the "
                    f"handshake (or the application is slow). `probe trace` can tell.")
    return _vantage_evidence(syn_ttl, synack_ttl), round(max(handshake, 0.0) * 1000, 3), note
