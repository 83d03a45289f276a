"""Where a capture was taken, and what a capture taken at the server shows: pure reasoning over
one flow's records, for `probe analyze` (which captures at either end) and the two-ended
comparison. The client's seat is the engine's own (`probe.engine.verdict`); this module reads
the seat from TTLs and timing (`find_vantage`) and revises a server-side judgement
(`judge_from_server`). Imports only the engine's model and baseline, the records and `probe.seq`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from probe.engine.baseline import COMMON_INITIAL_TTLS, seq_end
from probe.engine.model import Analysis, Attribution, Flow
from probe.record import PacketRecord
from probe.seq import seq_diff

VANTAGE_RATIO = 2.0  # the far end's handshake interval against the near end's (see side_by_timing)
VANTAGE_FLOOR_TICKS = 20  # the far end's interval, in timestamp ticks at least
TICK_SAMPLE = 32  # records whose timestamps show the capture's resolution


@dataclass(frozen=True)
class Vantage:
    side: str  # "client" or "server"
    evidence: str


# --- where the capture was taken ------------------------------------------------------------------


def _handshake(records: list[PacketRecord], flow: Flow):
    syn = next((p for p in records if flow.sent_by_client(p) and p.flags.rstrip("EC") == "S"), None)
    if syn is None:
        return None, None, None
    synack = next((p for p in records if flow.toward_client(p) and p.has("SA") and p.ack == (syn.seq + 1) % 2**32),
                  None)
    ack = None
    if synack is not None:
        ack = next((p for p in records if flow.sent_by_client(p) and p.t >= synack.t and "A" in p.flags
                    and "S" not in p.flags and "R" not in p.flags and p.ack == (synack.seq + 1) % 2**32), None)
    return syn, synack, ack


def timestamp_tick(records: list[PacketRecord]) -> float:
    """The resolution of the capture's timestamps, as far as the first `TICK_SAMPLE` records show
    it: the coarsest of 10 ms, 1 ms, 100 µs and 10 µs on which all their times lie (counted from
    the first), else 1 µs (an epoch time held in a float says no more than that)."""
    times = [record.t - records[0].t for record in records[1:TICK_SAMPLE]]
    for tick in (1e-2, 1e-3, 1e-4, 1e-5):
        # half a microsecond: above a float's error on two epoch times, below a 1 µs step off the grid
        if all(abs(t - round(t / tick) * tick) < 5e-7 for t in times):
            return tick
    return 1e-6


def side_by_timing(to_synack: float, to_ack: float, tick: float) -> str | None:
    """The end the capture sits at, from the handshake's two intervals (SYN to SYN-ACK, SYN-ACK to
    ACK), or None when they do not tell. A host answers its own part of the handshake at once (one
    pass through its stack); the other interval holds the far host's answer and a round trip on
    the wire besides. So the longer interval must be at least `VANTAGE_RATIO` times the shorter
    (the wire then takes at least as long as a host's answer, which a difference in speed between
    the two hosts alone does not explain), even with each misread by one timestamp tick in the
    unhelpful direction, and at least `VANTAGE_FLOOR_TICKS` ticks long (a handful of ticks is
    scheduling noise). Known false result: a capture in the middle of the path, nearer one end
    (both TTLs already decremented), reads as that end's seat."""
    def clearly_longer(longer: float, shorter: float) -> bool:
        return longer - tick > VANTAGE_RATIO * (shorter + tick) and longer >= VANTAGE_FLOOR_TICKS * tick
    if clearly_longer(to_synack, to_ack):
        return "client"
    if clearly_longer(to_ack, to_synack):
        return "server"
    return None


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms" if seconds < 0.001 else f"{seconds * 1000:.1f} ms"


def find_vantage(records: list[PacketRecord], flow: Flow) -> Vantage:
    """On which end the capture was taken: by TTL (a host's own packets leave with an initial
    TTL), else by timing (the round trip shows between SYN and SYN-ACK on the client, between
    SYN-ACK and ACK on the server). Neither conclusive: the client's seat, and it says so."""
    syn, synack, ack = _handshake(records, flow)
    if syn is None:
        return Vantage("client", "no SYN in the capture: read from the client's seat")
    if synack is not None:
        client_own, server_own = syn.ttl in COMMON_INITIAL_TTLS, synack.ttl in COMMON_INITIAL_TTLS
        if client_own != server_own:
            side = "client" if client_own else "server"
            return Vantage(side, f"the client's SYN has TTL {syn.ttl}, the server's SYN-ACK TTL {synack.ttl}: "
                                 f"the {side}'s packets had not yet crossed a router")
        if ack is not None:
            to_synack, to_ack = synack.t - syn.t, ack.t - synack.t
            side = side_by_timing(to_synack, to_ack, timestamp_tick(records))
            if side == "client":
                return Vantage("client", f"the SYN-ACK came {_ms(to_synack)} after the SYN, the ACK "
                                         f"{_ms(to_ack)} after it")
            if side == "server":
                return Vantage("server", f"the SYN-ACK left {_ms(to_synack)} after the SYN, the ACK "
                                         f"came {_ms(to_ack)} later")
    elif syn.ttl not in COMMON_INITIAL_TTLS:
        return Vantage("server", f"the client's SYN arrives with TTL {syn.ttl}: it had crossed routers")
    return Vantage("client", f"TTLs and timing do not tell (SYN TTL {syn.ttl}): read from the client's seat")


# --- the server's seat --------------------------------------------------------------------------


def _client_ttls(records: list[PacketRecord], flow: Flow) -> set[int]:
    """The TTLs of the client's handshake packets (SYN and the ACK of the SYN-ACK)."""
    syn, _synack, ack = _handshake(records, flow)
    return {p.ttl for p in (syn, ack) if p is not None}


def server_side_findings(records: list[PacketRecord], flow: Flow) -> tuple[dict[int, Attribution], list[str], bool]:
    """What a server-side capture shows that the engine, written from the client's seat, does not judge.

    1. A packet in the client's name that arrives with another TTL than the client's handshake
       had (off by more than one hop) was sent by something else, at another distance: a forgery
       toward the server. Known false positives: the client's route changed mid-flow; a client
       behind a NAT pool sharing one address. A TTL-copying forger is not caught this way.
    2. The client acknowledging bytes the server never sent: something in between answered in
       the server's name (data toward the client). Known false positive: the capture dropped
       the server's packets (a busy capture host), so this needs the gap to be more than a
       segment's worth of bytes that never appear at all.
    Returns (attributions to override by index, sentences, forged_data_to_client)."""
    ttls = _client_ttls(records, flow)
    overrides: dict[int, Attribution] = {}
    sentences: list[str] = []
    if not ttls:
        return overrides, sentences, False
    for index, packet in enumerate(records):
        if not flow.sent_by_client(packet) or min(abs(packet.ttl - ttl) for ttl in ttls) <= 1:
            continue
        what = "reset" if "R" in packet.flags else "segment"
        overrides[index] = Attribution("middlebox", "high", (
            f"TTL {packet.ttl}, the client's handshake arrived with TTL {'/'.join(map(str, sorted(ttls)))}: "
            f"a {what} in the client's name from another distance",))
    syn, synack, _ack = _handshake(records, flow)
    forged_data = False
    if synack is not None:
        server_end = max((seq_end(p) for p in records if flow.toward_client(p) and "R" not in p.flags),
                         key=lambda end: seq_diff(end, synack.seq), default=seq_end(synack))
        beyond = [p for p in records if flow.sent_by_client(p) and "A" in p.flags
                  and seq_diff(p.ack, server_end) > 1]
        if beyond:
            gap = seq_diff(beyond[0].ack, server_end)
            forged_data = True
            sentences.append(f"The client acknowledged {gap} byte(s) the server never sent (ack "
                             f"{seq_diff(beyond[0].ack, synack.seq)} relative, the server sent up to "
                             f"{seq_diff(server_end, synack.seq)}): a device in between answered in the server's "
                             f"name.")
    if overrides:
        first = records[min(overrides)]
        sentences.insert(0, f"{len(overrides)} packet(s) in the client's name were forged by a device in between "
                            f"({overrides[min(overrides)].evidence[0]}; first: {first.flags}).")
    return overrides, sentences, forged_data


def judge_from_server(records: list[PacketRecord], flow: Flow, analysis: Analysis) -> Analysis:
    """Revise the engine's analysis of a server-side capture with `server_side_findings`."""
    overrides, sentences, forged_data = server_side_findings(records, flow)
    if not sentences:
        return analysis
    attributions = list(analysis.attributions)
    for index, attribution in overrides.items():
        attributions[index] = attribution
    to_server = bool(overrides)
    to_client = forged_data or analysis.direction in ("to-client", "both")
    direction = "both" if to_server and to_client else "to-server" if to_server else "to-client"
    forged_in_client_data = any(records[i].length for i in overrides)
    verdict = "middlebox-response" if forged_data or forged_in_client_data else "middlebox-reset"
    if analysis.verdict == "middlebox-response":
        verdict = "middlebox-response"
    return replace(analysis, verdict=verdict, direction=direction, attributions=tuple(attributions),
                   explanation=" ".join(sentences))
