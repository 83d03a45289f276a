"""Residual blocking: after one trigger, fresh innocuous connections to the same address and port
are blocked for a while. Pure reasoning: the I/O asks `ResidualWatch` when to try next and hands
back what each try met.

Theory of operation. Censors keep state past the offending connection: after a trigger the GFW
blocks the (client, server, server port) 3-tuple for about 90 s whatever the later connections
carry (Rambert et al., "Chinese Wall or Swiss Cheese? Keyword filtering in the Great Firewall of
China", WWW 2021: the "penalty box", scoped to exactly that 3-tuple), for 120 or 180 s after an
ESNI ClientHello, by dropping the client's packets (GFW Report, iYouPort and U. Maryland,
"Exposing and Circumventing China's Censorship of ESNI", 2020), and with forged resets after an
HTTP keyword (Clayton, Murdoch and Watson, "Ignoring the Great Firewall of China", PET 2006).
CenTrace (Sundara Raman et al., CoNEXT 2022) waits 120 s between its runs for that reason, and
Censored Planet marks such results as stateful blocking. So after interference we try fresh
connections with an innocuous request (or none) to the same address and port, on a schedule,
and read the fates as an interval:

- it *began after the trigger*: the same address and port accepted a connection before the
  trigger (the trigger's own handshake was completed by the server, or a control before it
  passed), and the first tries after the trigger were blocked;
- it was *last seen blocked* at +N s and the *first try that passed again* came at +M s, so the
  block ended between N and M (or it was *still blocked* at the last try, within --max-time).

A blocked try is one that drew a reset (to the SYN or to the request) or nothing at all.

Known false positives, and why they do not fire:
- a server that refuses everything (a closed port, a firewall in front of it) refuses before the
  trigger as well: without a connection accepted before the trigger there is no finding;
- random loss drops a try now and then: a try is a SYN with one retransmission, and at least
  MIN_BLOCKED tries in a row, starting with the first one after the trigger, must fail (one
  failed try among passing ones is loss, and is reported as such);
- a server that went down at the moment of the trigger reads as "still blocked" (nothing here
  can tell the two apart; the finding then names no end).
"""

from __future__ import annotations

from dataclasses import dataclass, field

PASSED, RESET, SILENT = "passed", "reset", "silent"
OUTCOMES = (PASSED, RESET, SILENT)
MIN_BLOCKED = 2  # tries in a row, from the first one after the trigger
FIRST_AFTER_S = 0.5  # the first try: long enough for the trigger's own resets to have passed
FINE_STEP_S = 1.0  # one try a second at first: the end is known within a second
FINE_UNTIL_S = 30.0
COARSE_STEP_S = 2.0  # then one every 2 s (120 s: 75 tries at most)


@dataclass(frozen=True)
class Try:
    """One fresh connection after the trigger: when it started (seconds after the trigger was
    sent) and what it met."""

    after_s: float
    outcome: str  # PASSED, RESET or SILENT

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")

    @property
    def blocked(self) -> bool:
        return self.outcome != PASSED


def try_outcome(packets: list, flow) -> str:
    """What a fresh try met: the server's data (passed, whatever came after it), else a reset (to
    the SYN or to the request), else nothing (no SYN-ACK, or the request unanswered)."""
    received = [p for p in packets if flow.toward_client(p)]
    if any(p.length and "R" not in p.flags for p in received):
        return PASSED
    if any("R" in p.flags for p in received):
        return RESET
    return SILENT


@dataclass(frozen=True)
class ResidualFinding:
    seen: bool
    began_after_trigger: bool | None  # None: no try was blocked, nothing began
    blocked_by: str | None  # "reset", "silence" or "reset and silence"
    last_blocked_s: float | None
    first_passed_s: float | None
    still_blocked_at_s: float | None  # no try passed again up to this one
    tries: tuple[Try, ...]
    evidence: tuple[str, ...]


def schedule(max_time_s: float) -> list[float]:
    """When to try, in seconds after the trigger: FIRST_AFTER_S, then every FINE_STEP_S up to
    FINE_UNTIL_S, then every COARSE_STEP_S, up to max_time_s. Bounded: at most 75 tries in 120 s."""
    times, t = [], FIRST_AFTER_S
    while t <= max_time_s:
        times.append(round(t, 3))
        t += FINE_STEP_S if t < FINE_UNTIL_S else COARSE_STEP_S
    return times


@dataclass
class ResidualWatch:
    """What the I/O asks after interference: `next_try()` says when to start the next fresh
    connection (seconds after the trigger; None: stop), `record()` takes its fate, `finding()`
    judges. It stops as soon as the answer is known: two tries passed before any block showed, or
    a block of MIN_BLOCKED tries or more has been followed by a try that passed."""

    open_before: bool  # the address and port accepted a connection before the trigger
    max_time_s: float = 120.0
    tries: list[Try] = field(default_factory=list)

    def next_try(self) -> float | None:
        if not self.open_before or self._answered():
            return None
        planned = schedule(self.max_time_s)
        done = len(self.tries)
        return planned[done] if done < len(planned) else None

    def record(self, after_s: float, outcome: str) -> None:
        self.tries.append(Try(after_s, outcome))

    def _answered(self) -> bool:
        run = _initial_run(self.tries)
        passes = sum(not t.blocked for t in self.tries)
        return (len(run) >= MIN_BLOCKED and passes >= 1) or passes >= 2

    def finding(self) -> ResidualFinding:
        return judge(self.tries, self.open_before)


def _initial_run(tries: list[Try] | tuple[Try, ...]) -> list[Try]:
    run = []
    for attempt in tries:
        if not attempt.blocked:
            break
        run.append(attempt)
    return run


def _blocked_by(tries: list[Try]) -> str | None:
    kinds = {t.outcome for t in tries if t.blocked}
    if not kinds:
        return None
    return {frozenset({RESET}): "reset", frozenset({SILENT}): "silence"}.get(frozenset(kinds), "reset and silence")


def judge(tries: list[Try] | tuple[Try, ...], open_before: bool) -> ResidualFinding:
    """Residual blocking from the tries after a trigger (in the order made) and whether the same
    address and port accepted a connection before it (see the module doc)."""
    tries = tuple(sorted(tries, key=lambda t: t.after_s))
    blocked = [t for t in tries if t.blocked]
    if not blocked:
        return ResidualFinding(False, None, None, None, None, None, tries, (
            f"{len(tries)} fresh connection(s) after the trigger all passed: no residual blocking",) if tries else ())
    if not open_before:
        return ResidualFinding(False, False, _blocked_by(blocked), None, None, None, tries, (
            "the address and port refused connections before the trigger as well (no connection was accepted "
            "before it): not residual blocking, the server or something in front of it refuses everything",))
    run = _initial_run(tries)
    if len(run) < MIN_BLOCKED:
        where = "the first" if run else "a later"
        return ResidualFinding(False, None, _blocked_by(blocked), None, None, None, tries, (
            f"{len(blocked)} of {len(tries)} fresh connection(s) after the trigger failed ({where} one), "
            f"fewer than {MIN_BLOCKED} in a row from the first: loss, not residual blocking",))
    rest = tries[len(run):]
    last_blocked = run[-1].after_s
    evidence = [f"a connection was accepted before the trigger, and the {len(run)} fresh connection(s) from "
                f"+{run[0].after_s:g} s to +{last_blocked:g} s after it were all blocked ({_blocked_by(run)})"]
    if not rest:
        return ResidualFinding(True, True, _blocked_by(run), last_blocked, None, last_blocked, tries, (
            *evidence, f"still blocked at the last try, +{last_blocked:g} s after the trigger"))
    first_passed = rest[0].after_s
    evidence.append(f"the first to pass again started +{first_passed:g} s after the trigger: the block "
                    f"ended between +{last_blocked:g} s and +{first_passed:g} s")
    later = [t for t in rest if t.blocked]
    if later:
        evidence.append(f"{len(later)} later try(s) failed after it had passed again (loss)")
    return ResidualFinding(True, True, _blocked_by(run), last_blocked, first_passed, None, tries, tuple(evidence))


def sentence(finding: ResidualFinding, address: str, port: int) -> str | None:
    """The explanation's sentence about residual blocking, None when there was none."""
    if not finding.seen:
        return None
    how = {"reset": "reset", "silence": "dropped"}.get(finding.blocked_by or "", "reset or dropped")
    head = (f"After the trigger, fresh connections to {address} port {port} with an innocuous request were "
            f"{how} too (residual blocking of the address and port)")
    if finding.first_passed_s is None:
        return f"{head}, still at +{finding.still_blocked_at_s:g} s."
    return (f"{head}: last seen blocked at +{finding.last_blocked_s:g} s, passing again at "
            f"+{finding.first_passed_s:g} s.")


def residual_json(finding: ResidualFinding | None) -> dict | None:
    """The `residual_blocking` section: null when it was not tested; every key always present."""
    if finding is None:
        return None
    return {"seen": finding.seen, "began_after_trigger": finding.began_after_trigger,
            "blocked_by": finding.blocked_by, "last_blocked_s": finding.last_blocked_s,
            "first_passed_s": finding.first_passed_s, "still_blocked_at_s": finding.still_blocked_at_s,
            "tries": [{"after_s": t.after_s, "outcome": t.outcome} for t in finding.tries],
            "evidence": list(finding.evidence)}
