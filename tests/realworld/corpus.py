"""The real captures of ../shared/realworld (public captures of real censors, injectors and ordinary
traffic, each with its source's own ground truth in truth.json), judged by this tree's engine.

Read from where they are, never copied into the project. `judge_file` runs the same code as
`probe analyze FILE [--control CONTROL]` (the reader, the flow table, the trace collector and the
engine) in this process; `corpus_rows` gives one row per file for the README table
(`python3 -m tests.realworld.table --readme README.md`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REALWORLD = Path(__file__).resolve().parents[3] / "shared" / "realworld"
BLAME = ("middlebox-reset", "middlebox-response")


def truth() -> dict:
    return json.loads((REALWORLD / "truth.json").read_text())["files"]


@dataclass
class Judged:
    flows: list  # probe.files.flows.FlowResult
    traces: list  # probe.files.traced.CaptureTrace
    warnings: list


def control_of(name: str) -> str | None:
    """CenTrace's control run beside a test capture: same server, domain example.com."""
    if not name.startswith("centrace/"):
        return None
    stem = Path(name).name
    server, domain = stem.split("_")[:2]
    suffix = "_0.pcap" if stem.endswith("_0.pcap") else ".pcap"
    control = REALWORLD / "centrace" / f"{server}_{domain}_example.com{suffix}"
    return str(control) if control.exists() and control.name != stem else None


def judge_file(name: str, with_control: bool = True) -> Judged:
    from probe.files.flows import analyze_stream
    from probe.files.traced import TraceCollector, control_fates

    flows = []
    collector = TraceCollector(flows.append)
    totals = analyze_stream(str(REALWORLD / name), None, collector.add)
    control = control_of(name) if with_control else None
    traces = collector.finish(control_fates(control) if control else None, control)
    return Judged(flows, traces, list(getattr(totals, "warnings", [])))


def forged(flow) -> list:
    return [p for p, a in zip(flow.packets, flow.analysis.attributions) if a.origin == "middlebox"]


def meets(expect: dict, judged: Judged) -> tuple[bool | None, str]:
    """Whether the judged file meets its source's ground truth (None: not scored), and a summary."""
    flows = judged.flows
    verdicts = sorted({f.analysis.verdict for f in flows})
    kind = expect["expect"]
    if kind == "interference":
        ok = any(f.analysis.verdict in BLAME and forged(f) for f in flows)
    elif kind == "flows":
        by_port = {f.flow.client_port: f for f in flows}
        ok = all(port in by_port and by_port[port].analysis.verdict in BLAME
                 for port in expect["interfered_client_ports"])
        verdicts = [f"{port}: {by_port[port].analysis.verdict if port in by_port else 'no such flow'}"
                    for port in expect["interfered_client_ports"]]
    elif kind in ("no-blame", "clean", "server-reset"):
        ok = not any(f.analysis.verdict in BLAME or forged(f) for f in flows) and bool(flows or kind == "no-blame")
        if kind != "no-blame":
            ok = ok and all(f.analysis.verdict == kind for f in flows)
    else:
        ok = None
    return ok, ", ".join(verdicts) or "no flows"
