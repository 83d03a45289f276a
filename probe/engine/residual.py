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

Which flow the tries use. Routers balance flows over equal-cost paths by a hash of the 5-tuple,
and a box may sit on one branch only (Monocle, CCS 2024: routing multipath changed measured
censorship for 42% of IPs). A try from a fresh source port then takes either branch, and one
that passes on the clean branch would read as the block's end while the box's branch is still
blocked. So the tries reuse the exchange's own four-tuple (Paris traceroute's principle,
Augustin et al., IMC 2006: keep what the routers hash), which crosses the routers the trigger
did; every earlier connection on it was closed with resets, so the server holds nothing for it.
While that flow is blocked, up to SCOPE_SAMPLES tries from fresh source ports tell how far the
block reaches (`scope`): one of them blocked too makes it a block of the address and port; all
of them passing leaves it a block of that flow, or of one of several paths. When the exchange's
port cannot be held again (this host took it meanwhile) every try is from a fresh port.

Known false positives, and why they do not fire:
- a server that refuses everything (a closed port, a firewall in front of it) refuses before the
  trigger as well: without a connection accepted before the trigger there is no finding;
- random loss drops a try now and then: a try is a SYN with one retransmission, and at least
  MIN_BLOCKED tries in a row, starting with the first one after the trigger, must fail (one
  failed try among passing ones is loss, and is reported as such);
- a server that went down at the moment of the trigger reads as "still blocked" (nothing here
  can tell the two apart; the finding then names no end);
- a box that remembers only the offending four-tuple (a flow table's drop entry) blocks every
  try on the exchange's own flow: the fresh-port samples pass, and the scope says "flow", not
  "address and port".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

PASSED, RESET, SILENT = "passed", "reset", "silent"
OUTCOMES = (PASSED, RESET, SILENT)
MIN_BLOCKED = 2  # tries in a row, from the first one after the trigger
FIRST_AFTER_S = 0.5  # the first try: long enough for the trigger's own resets to have passed
FINE_STEP_S = 1.0  # one try a second at first: the end is known within a second
FINE_UNTIL_S = 30.0
COARSE_STEP_S = 2.0  # then one every 2 s (120 s: 75 tries at most)
SCOPE_SAMPLES = 3  # fresh-port tries while the exchange's own flow is blocked (an ECMP pair hides a
# blocked branch from all three with probability 1/8: the scope then says "flow", not "address and port")
OWN, FRESH = "own", "fresh"  # the flow a try used: the exchange's own four-tuple, or a fresh source port
SCOPES = ADDRESS_AND_PORT, FLOW = "address and port", "flow"  # what a seen block covers (`ResidualFinding.scope`)


@dataclass(frozen=True)
class Try:
    """One fresh connection after the trigger: when it started (seconds after the trigger was
    sent) and what it met."""

    after_s: float
    outcome: str  # PASSED, RESET or SILENT
    flow: str = FRESH  # OWN: on the exchange's own four-tuple; FRESH: from a fresh source port

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")
        if self.flow not in (OWN, FRESH):
            raise ValueError(f"flow must be {OWN!r} or {FRESH!r}, not {self.flow!r}")

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
    scope: str | None = None  # SCOPES: what the block covers; None when not seen or not sampled


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
    """What the I/O asks after interference: `next_try()` says when to start the next connection
    (seconds after the trigger; None: stop) and `next_flow()` on which flow (OWN or FRESH),
    `record()` takes its fate, `finding()` judges. The schedule's tries are on the exchange's own
    flow when `own_flow` (else fresh); once that flow is seen blocked, each of the next
    SCOPE_SAMPLES tries is followed at once by one from a fresh port, until one of those is
    blocked. It stops as soon as the answer is known: two tries passed before any block showed,
    or a block of MIN_BLOCKED tries or more has been followed by a try that passed."""

    open_before: bool  # the address and port accepted a connection before the trigger
    max_time_s: float = 120.0
    own_flow: bool = False  # the exchange's own four-tuple can be used again
    tries: list[Try] = field(default_factory=list)

    def _timed(self) -> list[Try]:
        """The schedule's tries (the fresh-port samples beside them are not)."""
        return [t for t in self.tries if t.flow == OWN] if self.own_flow else list(self.tries)

    def next_try(self) -> float | None:
        if not self.open_before or self._answered():
            return None
        if self.next_flow() == FRESH and self.own_flow:
            return self.tries[-1].after_s  # a scope sample: right after the own flow's blocked try
        planned = schedule(self.max_time_s)
        done = len(self._timed())
        return planned[done] if done < len(planned) else None

    def next_flow(self) -> str:
        if not self.own_flow:
            return FRESH
        timed, samples = self._timed(), [t for t in self.tries if t.flow == FRESH]
        sampling = (len(_initial_run(timed)) >= MIN_BLOCKED and len(samples) < SCOPE_SAMPLES
                    and not any(t.blocked for t in samples))
        return FRESH if sampling and self.tries[-1].flow == OWN and self.tries[-1].blocked else OWN

    def record(self, after_s: float, outcome: str, flow: str = FRESH) -> None:
        self.tries.append(Try(after_s, outcome, flow))

    def _answered(self) -> bool:
        timed = self._timed()
        run = _initial_run(timed)
        passes = sum(not t.blocked for t in timed)
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


def _scope(samples: list[Try], own_seen: bool) -> tuple[str | None, str | None]:
    """What a block of the exchange's own flow covers, from the fresh-port samples taken during
    it: (scope, the evidence's sentence)."""
    if not own_seen or not samples:
        return None, None
    blocked = [t for t in samples if t.blocked]
    if blocked:
        return ADDRESS_AND_PORT, (f"a try from a fresh source port at +{blocked[0].after_s:g} s was blocked too: "
                                    f"the block covers the address and port, not only the exchange's flow")
    return FLOW, (f"the {len(samples)} try(s) from fresh source ports during the block all passed: it covers the "
                    f"exchange's own four-tuple, or one of several paths (ECMP), not every connection to the "
                    f"address and port")


def judge(tries: list[Try] | tuple[Try, ...], open_before: bool) -> ResidualFinding:
    """Residual blocking from the tries after a trigger (in the order made) and whether the same
    address and port accepted a connection before it (see the module doc). When some tries were on
    the exchange's own flow, those decide the interval and the fresh-port ones the scope."""
    tries = tuple(sorted(tries, key=lambda t: t.after_s))
    own = tuple(t for t in tries if t.flow == OWN)
    if own:
        samples = [t for t in tries if t.flow == FRESH]
        finding = _judge_timed(own, open_before)
        scope, said = _scope(samples, finding.seen)
        return replace(finding, tries=tries, scope=scope, evidence=finding.evidence + ((said,) if said else ()))
    finding = _judge_timed(tries, open_before)
    return replace(finding, scope=ADDRESS_AND_PORT) if finding.seen else finding


def _judge_timed(tries: tuple[Try, ...], open_before: bool) -> ResidualFinding:
    """`judge` over one series of tries, all on one kind of flow."""
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
    if finding.scope == FLOW:
        head = (f"After the trigger, new connections to {address} port {port} from the exchange's own source port "
                f"with an innocuous request were {how} too, while fresh source ports passed (a block of that flow, "
                f"or of one of several paths)")
    else:
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
            "scope": finding.scope,
            "tries": [{"after_s": t.after_s, "outcome": t.outcome, "flow": t.flow} for t in finding.tries],
            "evidence": list(finding.evidence)}
