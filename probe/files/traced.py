"""`probe analyze` of captures that hold a trace: one connection per TTL, each with a TTL-limited
request (CenTrace, tracevis, `probe trace --pcap`).

Such flows cannot be judged one by one: what proves that a request with TTL k never reached the
server is another connection of the same capture whose request with TTL k or more expired at a
router. So `TraceCollector` holds back the flows whose request was TTL-limited (they are small),
and at the end of the file judges them again with that fact (`engine.analyze_flow`'s
`expires_within`), builds the hop table as `probe trace` prints it (`engine.trace.capture_rows`,
`locate_box`), optionally beside a control capture's (`--control`), and gives the located flows
their hop. Everything else passes straight through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from probe.files.flows import FlowResult
from probe.engine import analyze_flow
from probe.engine.baseline import hop_distance
from probe.engine.trace import (HopRow, TraceResult, address_at, apply_trace, capture_rows, expired_floor, fate_of,
                                fates_by_ttl, limited_request, locate_box)

MAX_HELD = 20_000  # flows held back at most; past that they are judged alone, as any flow


@dataclass(frozen=True)
class CaptureTrace:
    """The trace one capture holds toward one server address and port."""

    server: str
    port: int
    rows: list[HopRow]
    result: TraceResult
    address: str | None  # CenTrace's "middlebox address" (`_middlebox_address`)
    control_file: str | None


def is_trace_probe(result: FlowResult) -> bool:
    """A flow captured at the client whose request was TTL-limited."""
    return result.flow.vantage == "client" and limited_request(result.packets, result.flow) is not None


def _key(result: FlowResult) -> tuple[str, int]:
    return result.flow.server, result.flow.server_port


class TraceCollector:
    """Feed it every judged flow in place of `on_result`; call `finish` at the end of the file."""

    def __init__(self, on_result: Callable[[FlowResult], None]):
        self.on_result = on_result
        self.held: dict[tuple[str, int], list[FlowResult]] = {}
        self.count = 0

    def add(self, result: FlowResult) -> None:
        if self.count < MAX_HELD and is_trace_probe(result):
            self.held.setdefault(_key(result), []).append(result)
            self.count += 1
        else:
            self.on_result(result)

    def finish(self, control: dict[tuple[str, int], dict] | None = None,
               control_file: str | None = None) -> list[CaptureTrace]:
        """Judge the held flows with what the whole capture proved, hand them on, and return the
        traces (groups of at least two TTLs, or one with a control)."""
        traces = []
        for key, results in self.held.items():
            fates = fates_of(results)
            control_fates = _control_for(control, key)
            floor = expired_floor(fates, *([control_fates] if control_fates else []))
            results = [replace(r, analysis=analyze_flow(r.packets, r.flow, expires_within=floor)) for r in results]
            if len(fates) >= 2 or control_fates:
                rows = capture_rows(fates, control_fates)
                located = locate_box(rows)
                located = _by_forgers_ttl(located, results)
                trace = CaptureTrace(key[0], key[1], rows, located, _middlebox_address(rows, located), control_file)
                traces.append(trace)
                results = [replace(r, analysis=apply_trace(r.analysis, located)) for r in results]
            for result in sorted(results, key=lambda r: r.packets[0].t if r.packets else 0.0):
                self.on_result(result)
        self.held.clear()
        return traces


def fates_of(results: list[FlowResult]) -> dict:
    """The fate of each flow's TTL-limited request, one per TTL (`engine.trace.fates_by_ttl`)."""
    fates = []
    for result in results:
        sent = limited_request(result.packets, result.flow)
        if sent is not None:
            fates.append((sent.ttl, fate_of(result.packets, result.flow, sent, None)))
    return fates_by_ttl(fates)


def control_fates(path: str) -> dict[tuple[str, int], dict]:
    """The fates by TTL of a control capture's TTL-limited requests, per server address and port."""
    from probe.files.flows import analyze_stream

    held: dict[tuple[str, int], list[FlowResult]] = {}

    def keep(result: FlowResult) -> None:
        if is_trace_probe(result):
            held.setdefault(_key(result), []).append(result)

    analyze_stream(path, None, keep)
    return {key: fates_of(results) for key, results in held.items()}


def _control_for(control: dict | None, key: tuple[str, int]) -> dict | None:
    """The control's fates for the same server and port; else for the same server; else, when the
    control holds a single trace, that one (a control run may go to another port or address)."""
    if not control:
        return None
    if key in control:
        return control[key]
    same_server = [fates for (server, _port), fates in control.items() if server == key[0]]
    if same_server:
        return same_server[0]
    return next(iter(control.values())) if len(control) == 1 else None


def _middlebox_address(rows: list[HopRow], located: TraceResult) -> str | None:
    """The router CenTrace names as the middlebox: for a tap (it answered copies that still expired),
    the router at its hop; for a box in the path, the first router the trigger did not reach (the one
    the control still reached at the terminating TTL: the box sits before its TTL check). Both ends
    of the bracket are in the hop table."""
    if located.kind == "in-path" and located.bracket is not None:
        return address_at(rows, located.bracket[1])
    return address_at(rows, located.hop)


def _by_forgers_ttl(located: TraceResult, results: list[FlowResult]) -> TraceResult:
    """When the requests never got a handshake to ride on (a reset answered every SYN), the fates say
    nothing; the forged packets' own TTL still gives their sender's distance (counted from its own
    initial TTL), which is what the trace then reports, and says so."""
    if located.interference:
        return located
    forged = next((p for r in results for p, a in zip(r.packets, r.analysis.attributions)
                   if a.origin == "middlebox" and r.flow.toward_client(p)), None)
    if forged is None:
        return located
    hop = hop_distance(forged.ttl)
    return TraceResult(True, hop, None, "by-ttl", located.reached_server_at, (
        f"the TTL-limited requests met nothing the control did not; the forged packets arrive with TTL "
        f"{forged.ttl}, which puts their sender at about hop {hop} (a TTL the sender may choose)",))
