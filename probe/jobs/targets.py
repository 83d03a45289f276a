"""`probe batch`: the target list, names to addresses, each finished exchange judged as
`probe check` judges it, and the tally the summary, the exit code and the monitors read.

The list is read twice when it is a file (once to refuse a bad line before anything is sent,
once to probe), so a list of any length costs no memory; standard input is read once and
kept (it cannot be read again). Host names are resolved by a few threads a little ahead of
the probes, so a slow resolver never stalls the exchanges in flight.
"""

from __future__ import annotations

import collections
import concurrent.futures
import shlex
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from probe.errors import ProbeError, UsageError
from probe.outcome import worst
from probe.network.target import (Resolve, Target, build_target, check_family, is_ip_literal, parse_resolve, parse_url,
                                  pinned_address)

RESOLVER_THREADS = 8
LOCATE_THREADS = 4
SUMMARY_ROWS = 50  # targets listed by name in the summary; the rest are counted


@dataclass(frozen=True)
class Line:
    """One target line: where it is, the URL and its `HOST:PORT:ADDR` entries."""

    number: int
    url: str
    resolves: tuple[Resolve, ...] = ()
    family: int | None = None  # -4/-6 of the batch: the family a name is looked up in

    @property
    def key(self) -> str:
        """The target's name in the history: what the line says, normalised."""
        url = parse_url(self.url)
        host, port, canonical = url.host, url.port, url.canonical
        pinned = pinned_address(self.resolves, host, port, self.family)
        return f"{canonical} @{pinned.address}" if pinned else canonical


def parse_line(text: str, number: int, family: int | None = None) -> Line | None:
    """`URL [HOST:PORT:ADDR ...]` (each entry may be spelled `--resolve HOST:PORT:ADDR`);
    `#` starts a comment; None for a blank or comment line; UsageError naming the line (also
    one whose address, in the URL or pinned, is only of the family -4/-6 excludes)."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError as error:
        raise UsageError(f"line {number}: {error}") from None
    words = [word for word in words if word != "--resolve"]
    if not words:
        return None
    try:
        url = parse_url(words[0])
        line = Line(number, words[0], tuple(parse_resolve(word) for word in words[1:]), family)
        if family is not None and pinned_address(line.resolves, url.host, url.port, family) is None \
                and is_ip_literal(url.host):
            check_family(url.host, family, "the URL's address")
        return line
    except UsageError as error:
        raise UsageError(f"line {number}: {error}") from None


def read_lines(lines: Iterable[str], family: int | None = None) -> Iterator[Line]:
    for number, text in enumerate(lines, 1):
        line = parse_line(text, number, family)
        if line is not None:
            yield line


def resolved(lines: Iterable[Line], lookahead: int) -> Iterator[tuple[Line, Target | str]]:
    """(line, Target), or (line, why it has no address), in the order of the lines; at most
    `lookahead` names are being resolved at once."""
    pool = concurrent.futures.ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="probe-resolve")
    queue: collections.deque = collections.deque()

    def name(line: Line) -> Target | str:
        try:
            return build_target(line.url, line.resolves, line.family)
        except ProbeError as error:
            return str(error)

    try:
        for line in lines:
            queue.append((line, pool.submit(name, line)))
            if len(queue) >= lookahead:
                done_line, future = queue.popleft()
                yield done_line, future.result()
        while queue:
            done_line, future = queue.popleft()
            yield done_line, future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# -- judging ----------------------------------------------------------------------------------


class Locator:
    """What `probe check` runs after an exchange to place a box (`probe.jobs.locating.localize`), for
    a batch. The same two measurements, judged by the same engine functions, but each one
    made once per batch for all the exchanges it concerns:

    - TTL-limited SYNs beside ICMP echoes (no handshake, or one answered from too near):
      once per address and port, in a few threads while the batch runs, one at a time per
      address (two sweeps toward one address would take each other's echo replies);
    - TTL-limited copies of the request beside a control (interference after the handshake):
      once per address, port, host, path and method, after the exchanges are over (each
      trace opens a guard table of its own).

    A flow waiting for a trace keeps its packets until the end of the batch; clean flows,
    the vast majority of a healthy fleet, never wait."""

    def __init__(self, max_ttl: int, request, control_host: str, tls=None):
        self.max_ttl, self.request, self.control_host, self.tls = max_ttl, request, control_host, tls
        self.pool = concurrent.futures.ThreadPoolExecutor(LOCATE_THREADS, thread_name_prefix="probe-locate")
        self.sweeps: dict[tuple, concurrent.futures.Future] = {}
        self.address_locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self.traces: dict[tuple, list] = {}  # key -> [(line, measurement, analysis)], in arrival order

    def sweep(self, client: str, address: str, port: int, wait: float) -> tuple[concurrent.futures.Future, bool]:
        """The future of the sweep toward address:port, and whether an earlier exchange's is reused."""
        key = (client, address, port)
        if key in self.sweeps:
            return self.sweeps[key], True
        lock = self.address_locks[address]

        def run():
            from probe.engine.locate import locate
            from probe.network.sweeps import run_sweeps

            with lock:
                sweeps = run_sweeps(client, address, port, max_ttl=self.max_ttl, wait=wait)
            return sweeps, locate(sweeps.tcp, sweeps.echo, address)

        self.sweeps[key] = self.pool.submit(run)
        return self.sweeps[key], False

    def defer_trace(self, line: Line, measurement, analysis) -> None:
        target = measurement.target
        key = (measurement.flow.client, target.address, target.port, target.scheme, target.host, target.path)
        self.traces.setdefault(key, []).append((line, measurement, analysis))

    def waiting(self) -> tuple[int, int]:
        """(paths to trace, targets waiting for them)."""
        return len(self.traces), sum(len(waiting) for waiting in self.traces.values())

    def run_traces(self) -> Iterator["Judged"]:
        """After the exchanges: one trace per key, applied to each of its exchanges."""
        from probe.engine.trace import server_ttl_of
        from probe.network.tracer import TraceOptions, run_trace
        from probe.jobs.locating import by_trace, trigger_words

        options = TraceOptions(request=self.request, max_ttl=self.max_ttl, control_host=self.control_host,
                               **({"tls": self.tls} if self.tls is not None else {}))
        while self.traces:
            _key, waiting = self.traces.popitem()
            first_line, first, first_analysis = waiting[0]
            try:
                traced = run_trace(first.target, options, first_analysis.rtt_ms / 1000,
                                   server_ttl_of(first.packets, first.flow))
            except ProbeError as error:
                for line, measurement, analysis in waiting:
                    yield _finish(line, measurement, analysis, {"locate_error": str(error)})
                continue
            for n, (line, measurement, analysis) in enumerate(waiting):
                found = by_trace(analysis, traced, trigger_words(first.target, options))
                judged = _finish(line, measurement, found.analysis, dict(found.extra, trace_shared=n > 0))
                if n == 0:
                    judged.frames += found.frames
                yield judged

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Judged:
    """One target's JSON document, and what the tally needs of it."""

    line: Line
    document: dict
    exit_code: int
    frames: list = field(default_factory=list)


@dataclass
class Pending:
    """A judgement waiting for a sweep (`complete()` once `done()`)."""

    future: concurrent.futures.Future
    complete: object  # () -> Judged

    def done(self) -> bool:
        return self.future.done()


def error_document(line: Line, target: Target | None, error: str) -> dict:
    from probe.render.report import SCHEMA

    target_json = target.as_json() if target is not None else {"url": line.url}
    return {"schema": SCHEMA, "command": "check", "line": line.number, "target": target_json, "verdict": None,
            "direction": None, "hop": None, "rtt_ms": None, "packets": [], "error": error,
            "explanation": f"not measured: {error}", "residual_blocking": None, "multipath": None}


def _finish(line: Line, measurement, analysis, extra: dict) -> Judged:
    from probe.outcome import exit_status
    from probe.render.report import application_sections, check_document

    document = check_document(measurement.target.as_json(), measurement.packets, measurement.flow, analysis,
                              extra={**application_sections(measurement.application), **extra})
    document = {"schema": document.pop("schema"), "command": document.pop("command"), "line": line.number,
                **document}
    return Judged(line, document, exit_status(analysis.verdict, analysis.hop), list(measurement.frames))


def judge(line: Line, measurement, locator: Locator | None) -> Judged | Pending | None:
    """As `probe check` does after its exchange: the engine, then, when it asks for them, the
    sweeps or the trace (`Locator`), and the same document. Returns the Judged; a Pending
    while a sweep runs; None when the flow waits for a trace (`Locator.run_traces`)."""
    from probe.engine import analyze_flow
    from probe.engine.trace import locating_step, sweep_wait

    analysis = analyze_flow(measurement.packets, measurement.flow)
    step = None if locator is None else locating_step(analysis)
    if step is None:
        return _finish(line, measurement, analysis, {})
    if step == "trace":
        locator.defer_trace(line, measurement, analysis)
        return None
    future, reused = locator.sweep(measurement.flow.client, measurement.target.address, measurement.target.port,
                                   sweep_wait(analysis))

    def after_sweep() -> Judged:
        from probe.jobs.locating import by_sweeps

        try:
            sweeps, location = future.result()
        except ProbeError as error:
            return _finish(line, measurement, analysis, {"locate_error": str(error)})
        found = by_sweeps(measurement, sweeps, location)
        found.extra["locate"]["shared"] = reused
        judged = _finish(line, measurement, found.analysis, found.extra)
        if not reused:
            judged.frames += found.frames
        return judged

    return Pending(future, after_sweep)


def run_targets(finished_exchanges, locator: Locator | None, on_judged: Callable[[Judged], None],
                on_waiting: Callable[[], None], on_tracing: Callable[[int, int], None]) -> None:
    """Judge each exchange of a batch as it finishes (`finished_exchanges`: the session's
    results, tagged with their `Line`), and then run the traces the judgements asked for.
    `on_judged` gets every target's result exactly once; `on_waiting()` is called for an
    exchange whose result waits for a trace, and `on_tracing(paths, targets)` before the traces."""
    pending: list[Pending] = []
    for finished in finished_exchanges:
        line = finished.tag
        if finished.measurement is None:
            on_judged(Judged(line, error_document(line, finished.target, finished.error), 1))
        else:
            judged = judge(line, finished.measurement, locator)
            if isinstance(judged, Pending):
                pending.append(judged)
            elif judged is not None:
                on_judged(judged)
            else:  # it waits for a trace: its exchange is over all the same
                on_waiting()
        for item in [p for p in pending if p.done()]:
            pending.remove(item)
            on_judged(item.complete())
    for item in pending:
        on_judged(item.complete())
    if locator is not None:  # the exchanges are over: now the traces
        paths, targets = locator.waiting()
        if targets:
            on_tracing(paths, targets)
        for judged in locator.run_traces():
            on_judged(judged)


class Outcomes:
    """Where each judged target goes, and the alert-on-change policy.

    Every target is recorded in the history (which says what changed since the last run, and
    from which vantage point) and counted in `everything`. It is *spoken* (its JSON line
    written, counted in `spoken`) unless `alert_on_change` is set and its state did not change:
    the cron job that alerts on change hears only changes, and its exit status is theirs."""

    def __init__(self, store=None, alert_on_change: bool = False, speak: Callable[[dict], None] | None = None,
                 frames: Callable[[list], None] | None = None, metric: Callable[[dict, int], None] | None = None):
        self.store, self.alert_on_change = store, alert_on_change
        self._speak, self._frames, self._metric = speak, frames, metric
        self.everything, self.spoken = Tally(), Tally()

    def add(self, judged: Judged) -> None:
        document, code = judged.document, judged.exit_code
        speak = True
        if self.store is not None:
            from probe.jobs.store import state_of

            change = self.store.record(judged.line.key, document, code)
            document["history"] = dict(change.as_json(), vantage=self.store.vantage)
            speak = change.speaks(state_of(document)) or not self.alert_on_change
            if self.alert_on_change and change.kind == "changed":
                document["change"] = f"was {change.previous}"
        self.everything.add(document, code)
        if self._metric is not None:
            self._metric(document, code)
        if self._frames is not None:
            self._frames(judged.frames)
        if speak:
            self.spoken.add(document, code)
            if self._speak is not None:
                self._speak(document)

    @property
    def heard(self) -> Tally:
        """What the run reports on: the changes under `alert_on_change`, else every target."""
        return self.spoken if self.alert_on_change else self.everything

    @property
    def exit_code(self) -> int:
        return self.heard.exit_code


# -- the tally --------------------------------------------------------------------------------

@dataclass
class Tally:
    """What the summary, the exit code and the monitors need, in memory that does not grow
    with the number of targets (only SUMMARY_ROWS problem rows are kept)."""

    counts: collections.Counter = field(default_factory=collections.Counter)
    codes: collections.Counter = field(default_factory=collections.Counter)
    problems: list[dict] = field(default_factory=list)
    problems_left_out: int = 0
    changes: list[dict] = field(default_factory=list)  # targets whose state changed (--history): SUMMARY_ROWS of them
    changes_left_out: int = 0
    new_left_out: int = 0  # of the changes left out, those seen for the first time
    rtt_max: float | None = None
    rtt_sum: float = 0.0
    rtt_count: int = 0

    def add(self, document: dict, code: int) -> None:
        verdict = document.get("verdict") or "error"
        self.counts[verdict] += 1
        self.codes[code] += 1
        if document.get("rtt_ms") is not None:
            rtt = document["rtt_ms"]
            self.rtt_max = rtt if self.rtt_max is None else max(self.rtt_max, rtt)
            self.rtt_sum += rtt
            self.rtt_count += 1
        change = (document.get("history") or {}).get("change")
        if change in ("new", "changed"):
            if len(self.changes) < SUMMARY_ROWS:
                target = document.get("target", {})
                self.changes.append({"line": document.get("line"), "url": target.get("url"),
                                     "address": target.get("address"),
                                     "was": document["history"].get("previous_verdict") if change == "changed" else None,
                                     "now": verdict, "direction": document.get("direction"), "hop": document.get("hop")})
            else:
                self.changes_left_out += 1
                self.new_left_out += change == "new"
        if verdict != "clean":
            if len(self.problems) < SUMMARY_ROWS:
                self.problems.append(problem_row(document))
            else:
                self.problems_left_out += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def exit_code(self) -> int:
        return worst(self.codes)  # probe.outcome.SEVERITY decides which code wins

    @property
    def rtt_mean(self) -> float | None:
        return self.rtt_sum / self.rtt_count if self.rtt_count else None


def problem_row(document: dict) -> dict:
    target = document.get("target", {})
    return {"line": document.get("line"), "url": target.get("url"), "address": target.get("address"),
            "port": target.get("port"), "verdict": document.get("verdict") or "error",
            "direction": document.get("direction"), "hop": document.get("hop"), "rtt_ms": document.get("rtt_ms"),
            "note": document.get("error") or document.get("change") or ""}


def summary_table(tally: Tally, seconds: float, packets_sent: int, frames_dropped: int, paint=None,
                  changed: Tally | None = None) -> str:
    """The counts per verdict and the targets that were not clean, for people (verdicts painted
    with `paint`, `probe.render.colour`: tabulate leaves escape codes out of its widths). With
    `changed` (--alert-on-change: the results that changed since the previous run), every changed
    target with what it was and what it is now, first, and the counts of both."""
    from tabulate import tabulate

    from probe.render.colour import PLAIN

    paint = paint or PLAIN
    sections = []
    if changed is not None and changed.changes:
        change_rows = [[c["line"], c["url"], c["address"] or "", paint.verdict(c["was"]) if c["was"] else "(new)",
                        paint.verdict(c["now"]), c["direction"] or "", "" if c["hop"] is None else paint(str(c["hop"]), "hop")]
                       for c in sorted(changed.changes, key=lambda c: c["line"] or 0)]
        sections.append("changed since the previous run:\n" + tabulate(
            change_rows, headers=["line", "url", "address", "was", "now", "direction", "hop"], tablefmt="simple")
            + (f"\n... and {changed.changes_left_out} more (see the JSON lines)" if changed.changes_left_out else ""))
    order = ["clean", "expired", "server-reset", "ambiguous-reset", "no-answer", "dropped", "unreachable", "middlebox-reset",
             "middlebox-response", "error"]
    verdicts = [v for v in order if tally.counts[v]] + sorted(v for v in tally.counts if v not in order and tally.counts[v])
    if changed is None:
        rows = [[paint.verdict(verdict), tally.counts[verdict]] for verdict in verdicts]
        sections.append(tabulate(rows, headers=["verdict", "targets"], tablefmt="simple"))
    else:
        rows = [[paint.verdict(verdict), tally.counts[verdict], changed.counts[verdict]] for verdict in verdicts]
        sections.append(tabulate(rows, headers=["verdict", "probed", "changed"], tablefmt="simple"))
    if tally.problems and changed is None:
        problem_rows = [[p["line"], p["url"], p["address"] or "", paint.verdict(p["verdict"]), p["direction"] or "",
                         "" if p["hop"] is None else paint(str(p["hop"]), "hop"), "" if p["rtt_ms"] is None else f"{p['rtt_ms']:.1f}",
                         p["note"]] for p in sorted(tally.problems, key=lambda p: p["line"] or 0)]
        sections.append(tabulate(problem_rows, headers=["line", "url", "address", "verdict", "direction", "hop",
                                                        "rtt ms", "note"], tablefmt="simple")
                        + (f"\n... and {tally.problems_left_out} more (see the JSON lines)"
                           if tally.problems_left_out else ""))
    counted = f"{tally.total} target(s) probed in {seconds:.1f} s"
    if changed is not None:
        new = sum(1 for c in changed.changes if c["was"] is None) + changed.new_left_out
        counted += f", {changed.total} changed since the previous run ({new} of them new)"
    sections.append(counted + f", {packets_sent} packet(s) sent"
                    + (f"; the capture lost {frames_dropped} frame(s): results may miss packets" if frames_dropped else ""))
    return "\n\n".join(sections)
