"""What monitoring systems read: a Nagios/Icinga plugin's output, and a node_exporter
textfile. Presentation only: both render a finished batch's tally and results.

Nagios plugin conventions (Nagios Plugin Development Guidelines; Icinga reads the same):
one status line `PROBE <STATE> - text | perfdata`, more lines of detail after it, exit
0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Here: interference anywhere is CRITICAL, a target
that failed on its own (server-reset, no-answer, ...) is WARNING, a target that could not be
measured is UNKNOWN, and the worst state wins in the order CRITICAL, WARNING, UNKNOWN, OK.
"""

from __future__ import annotations

from dataclasses import dataclass

from probe.engine.model import VERDICTS

from probe.outcome import NagiosState, nagios_state, worse_state  # noqa: F401 (nagios_state: API)

OK, WARNING, CRITICAL, UNKNOWN = NagiosState  # the mapping and the order live in probe.outcome
DETAIL_LINES = 20


def nagios_output(tally, trouble: str | None = None) -> tuple[str, int]:
    """The plugin's text (status line, details) and its exit state. `trouble`: what else went
    wrong (the history not written): said on the status line, and at least UNKNOWN."""
    state = nagios_state(code for code, count in tally.codes.items() if count) if tally.total else UNKNOWN
    measured_state = state
    if trouble:
        state = worse_state(state, UNKNOWN)
    interfered = tally.codes[3]
    failed = tally.codes[4]
    unmeasured = tally.codes[1] + tally.codes[2]
    clean = tally.codes[0]
    total = tally.total
    if not total:
        summary = "no targets"
    elif measured_state == OK:
        summary = f"all {total} targets clean"
    else:
        parts = [f"{count} {what}" for count, what in ((interfered, "interfered with"), (failed, "failed"),
                                                       (unmeasured, "not measured")) if count]
        summary = f"{', '.join(parts)} of {total} targets"
    if trouble:
        summary += f"; {trouble}"
    perfdata = [f"clean={clean};;;0;{total}", f"interfered={interfered};;1;0;{total}",
                f"failed={failed};1;;0;{total}", f"unmeasured={unmeasured};;;0;{total}"]
    if tally.rtt_count:
        perfdata += [f"rtt_max={tally.rtt_max:.3f}ms;;;0;", f"rtt_mean={tally.rtt_mean:.3f}ms;;;0;"]
    lines = [f"PROBE {state.name} - {summary} | {' '.join(perfdata)}"]
    for problem in tally.problems[:DETAIL_LINES]:
        where = f" {problem['direction']}" if problem["direction"] else ""
        hop = f" at hop {problem['hop']}" if problem["hop"] is not None else ""
        note = f" ({problem['note']})" if problem["note"] else ""
        lines.append(f"{problem['url']} [{problem['address'] or '-'}]: {problem['verdict']}{where}{hop}{note}")
    left = len(tally.problems) - DETAIL_LINES + tally.problems_left_out
    if left > 0:
        lines.append(f"... and {left} more")
    return "\n".join(lines), state


def nagios_unknown(message: str) -> str:
    return f"PROBE UNKNOWN - {message}"


@dataclass(frozen=True)
class TargetMetric:
    """What the textfile says about one target (kept small: one per target for --prom)."""

    url: str
    address: str
    port: int
    state: str
    rtt_ms: float | None
    exit_code: int
    family: str = ""  # "ipv4" or "ipv6"; "" when the target was never resolved


def metric_of(document: dict, exit_code: int) -> TargetMetric:
    target = document.get("target", {})
    return TargetMetric(target.get("url", ""), target.get("address") or "", target.get("port") or 0,
                        document.get("verdict") or "error", document.get("rtt_ms"), exit_code,
                        target.get("family") or "")


def write_prom(path: str, metrics: list[TargetMetric], finished_at: float, seconds: float, exit_code: int) -> None:
    """node_exporter textfile, written to a temporary file beside `path` and renamed over it
    (atomic: the collector never reads half a file). Per target: one 0/1 series per verdict
    (a state set, so an alert on `probe_target_verdict{verdict="middlebox-reset"} == 1` ends
    when the verdict does), the handshake RTT and the exit code; the labels name the target and
    the family it was probed over (a site can fail over one family and not the other)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    labels = ["url", "address", "port", "family"]
    verdict = Gauge("probe_target_verdict", "1 for the target's verdict in the last batch, 0 for the others "
                    "(error: not measured)", labels + ["verdict"], registry=registry)
    rtt = Gauge("probe_target_rtt_seconds", "handshake round trip from kernel timestamps", labels, registry=registry)
    code = Gauge("probe_target_exit_code", "the exit code probe check would give this target", labels,
                 registry=registry)
    for metric in metrics:
        values = (metric.url, metric.address, str(metric.port), metric.family)
        for name in (*VERDICTS, "error"):
            verdict.labels(*values, name).set(1 if metric.state == name else 0)
        if metric.rtt_ms is not None:
            rtt.labels(*values).set(metric.rtt_ms / 1000)
        code.labels(*values).set(metric.exit_code)
    Gauge("probe_batch_last_run_timestamp_seconds", "when the last batch finished", registry=registry).set(finished_at)
    Gauge("probe_batch_duration_seconds", "how long the last batch took", registry=registry).set(seconds)
    Gauge("probe_batch_exit_code", "the last batch's exit code", registry=registry).set(exit_code)
    Gauge("probe_batch_targets", "targets in the last batch", registry=registry).set(len(metrics))
    write_to_textfile(path, registry)
