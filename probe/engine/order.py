"""The copies of a trace in the order they were sent, and why that order decides.

Theory of operation. A box that blocks the (client, server, port) 3-tuple after a trigger
(residual blocking, `probe.engine.residual`) answers only the first trigger that reaches it:
every connection after that, trigger or control, cannot even be opened until the block ends.
So the order of the copies is part of the measurement:

1. TTL ascending: a copy with TTL t reaches only the boxes before hop t, so the first trigger
   that reaches the box is the one with the lowest TTL that does; a higher TTL sent first would
   set the block off and contaminate every lower one.
2. At each TTL the control goes before the trigger: a control sent after a trigger that set the
   block off fails for that reason alone, and a failing control hides the difference.
3. The first trigger copy (in sending order) whose fate differs from the control sent before it
   at its TTL decides. Copies sent after it confirm it either as now (a fresh pair at the same
   TTL differs again; twice when every difference is the trigger's silence alone, which loss
   makes too: `probe.engine.trace.only_silence`) or, against a residual blocker, because they
   could not connect at all:
   at least MIN_BLOCKED of them, a control among them (an innocuous request that cannot connect
   right after a trigger went through is the block itself, not noise). A later copy that
   demonstrably took another path than the deciding one (it expired at another router at a TTL
   where the decider's flow expired, as an ECMP pair's other branch does) never crossed the box
   and is no evidence either way: it is left out of that count (Paris traceroute, IMC 2006: only
   copies of one path can be compared).

Known limit: a trace that starts while a block from an earlier trigger (the full-TTL exchange
before it, `check`) is still on finds every copy blocked from the first one and can name no
hop: the I/O must let that block end first (`ResidualWatch` says when it did).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from probe.engine.residual import MIN_BLOCKED
from probe.engine.trace import NOT_PROBED, Fate, HopRow, TraceResult, differs, locate_box, only_silence

BLOCKED_WORD = "no-handshake"  # the fate of a copy whose connection could not be opened


@dataclass(frozen=True)
class Copy:
    """One TTL-limited copy: its TTL, "trigger" or "control", and its fate."""

    ttl: int
    role: str
    fate: Fate
    port: int | None = None  # the source port (the flow identity); None when not known


def sending_order(max_ttl: int) -> list[tuple[int, str]]:
    """The order of the first pass: TTL ascending, the control before the trigger at each TTL
    (rules 1 and 2 of the module doc). A confirming pair keeps the same order."""
    return [(ttl, role) for ttl in range(1, max_ttl + 1) for role in ("control", "trigger")]


@dataclass(frozen=True)
class Decision:
    """Which copy decided, and what confirmed it."""

    index: int | None  # of the deciding trigger copy in sending order; None: no trigger differed
    ttl: int | None
    confirmed_by: str | None  # "repeat", "residual" or None
    blocked_after: int  # copies after the decider that could not connect


def decide(copies: Sequence[Copy]) -> Decision:
    """Rule 3: the first trigger copy that differs from the control sent before it at its TTL and
    that a repeat or the residual block confirmed; when none was confirmed, the first that
    differs, unconfirmed. A difference nothing confirmed is what a lost packet makes (a copy
    whose request or time-exceeded was lost reads as silence): the first trigger that reached
    the box is the first *confirmed* one, and a lost copy before it must not take its place,
    least of all against a residual blocker, whose confirmation (every copy after it blocked)
    only the real first trigger can have."""
    first = None
    for index, copy in enumerate(copies):
        if copy.role != "trigger":
            continue
        control = _control_before(copies, index)
        if control is None or not differs(copy.fate, control.fate):
            continue
        later = _on_the_path_of(copies, index)
        blocked = [c for c in later if c.fate.word == BLOCKED_WORD]
        repeats = [only_silence(c.fate, before.fate) for j, c in enumerate(copies)
                   if j > index and c.role == "trigger" and c.ttl == copy.ttl
                   and (before := _control_before(copies, j)) is not None and before is not control
                   and differs(c.fate, before.fate)]
        needed = 2 if only_silence(copy.fate, control.fate) and all(repeats) else 1  # silence alone: two
        repeat = len(repeats) >= needed
        residual = (len(later) >= MIN_BLOCKED and len(blocked) == len(later)
                    and any(c.role == "control" for c in later))
        decision = Decision(index, copy.ttl, "repeat" if repeat else "residual" if residual else None, len(blocked))
        if decision.confirmed_by is not None:
            return decision
        first = first or decision
    return first or Decision(None, None, None, 0)


def _on_the_path_of(copies: Sequence[Copy], index: int) -> list[Copy]:
    """The copies after copies[index] but those that demonstrably took another path (rule 3): of
    another flow identity (source port) any of whose copies expired at another router at a TTL
    where the decider's identity expired, up to and with the decider. Copies of no known port
    are judged one by one."""
    decider = copies[index]
    path = {c.ttl: c.fate.router for c in copies[:index + 1]
            if c.port == decider.port and c.fate.expired and c.fate.router is not None}

    def elsewhere(c: Copy) -> bool:
        return (c.port != decider.port and c.fate.expired and c.fate.router is not None
                and path.get(c.ttl, c.fate.router) != c.fate.router)
    other_ports = {c.port for c in copies if c.port is not None and elsewhere(c)}
    return [c for c in copies[index + 1:] if not (elsewhere(c) or c.port in other_ports)]


def _control_before(copies: Sequence[Copy], index: int) -> Copy | None:
    """The last control copy with the same TTL sent before copies[index]."""
    ttl = copies[index].ttl
    return next((c for c in reversed(copies[:index]) if c.role == "control" and c.ttl == ttl), None)


def rows_in_order(copies: Sequence[Copy]) -> list[HopRow]:
    """Hop rows from copies in sending order: at each TTL the first trigger copy and the control
    sent before it; the deciding TTL's row holds the decider and is confirmed when `decide` says."""
    decision = decide(copies)
    rows = []
    for ttl in sorted({c.ttl for c in copies}):
        indexes = [i for i, c in enumerate(copies) if c.ttl == ttl and c.role == "trigger"]
        index = decision.index if ttl == decision.ttl else (indexes[0] if indexes else None)
        trigger = copies[index].fate if index is not None else NOT_PROBED
        control_copy = _control_before(copies, index) if index is not None else None
        if control_copy is None:
            control_copy = next((c for c in copies if c.ttl == ttl and c.role == "control"), None)
        control = control_copy.fate if control_copy is not None else NOT_PROBED
        address = control.router if control.expired else trigger.router if trigger.expired else None
        rtt = control.rtt_ms if control.expired else trigger.rtt_ms if trigger.expired else None
        rows.append(HopRow(ttl, address, rtt, trigger, control, confirmed=ttl == decision.ttl
                           and decision.confirmed_by is not None))
    return rows


def locate_in_order(copies: Sequence[Copy]) -> TraceResult:
    """`locate_box` over the rows of copies in sending order (rules 1-3), with a sentence on what
    confirmed the deciding copy, or on a trace that was blocked from its first copy."""
    decision = decide(copies)
    result = locate_box(rows_in_order(copies))
    if decision.confirmed_by == "residual":
        result = replace(result, evidence=result.evidence + (
            f"the first trigger that reached the box decides (TTL {decision.ttl}); the {decision.blocked_after} "
            f"connection(s) opened after it, controls among them, could not even connect: the box blocks the "
            f"address and port after a trigger (residual blocking), which confirms it",))
    elif copies and all(c.fate.word == BLOCKED_WORD for c in copies):
        result = replace(result, evidence=result.evidence + (
            "no copy could connect, from the first one on: the trace began while the address and port were "
            "blocked (an earlier trigger's residual block?), so it cannot place the box",))
    return result


def keeps_identity(trigger: Fate, control: Fate) -> bool:
    """Whether the copies after this TTL's pair may reuse its four-tuple (one source port per
    trace, Paris traceroute's principle: Augustin et al., "Avoiding traceroute anomalies with
    Paris traceroute", IMC 2006; CenTrace, IMC 2022, repeats its traceroutes against path
    variance and waits between them for stateful blocking instead).

    A box that keeps state for a four-tuple keeps it for a flow whose trigger it acted on (the
    lab's block-page box drops a remembered flow's trigger silently, the swallowing box lets it
    pass; the GFW's residual block covers the whole 3-tuple anyway). A trigger copy that expired
    at the same router as the control before it, with nothing answered in the server's name,
    either expired before any box or passed one that did nothing to it: it left no state that
    could change a later copy's answer, and the four-tuple is kept. Any other fate (a
    difference, silence, an unreachable, a connection that failed) may be a box that acted on
    it, and the copies after it take a fresh source port. Controls never burn a four-tuple:
    they carry nothing a box acts on, and each copy is a new connection (a new SYN), which
    stateful boxes and conntrack take as a new flow."""
    return (trigger.word == "time-exceeded" and control.word == "time-exceeded"
            and trigger.router is not None and trigger.router == control.router)
