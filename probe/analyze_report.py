"""Presentation of `probe analyze` results: JSON per flow, the flows table. Decides nothing."""

from __future__ import annotations

from probe.report import packets_json


def analyzed_flow_json(result) -> dict:
    """One flow of `probe analyze --json` (a `probe.analyze.FlowResult`)."""
    flow, analysis = result.flow, result.analysis
    item = {"client": {"address": flow.client, "port": flow.client_port},
            "server": {"address": flow.server, "port": flow.server_port},
            "vantage": flow.vantage, "vantage_evidence": result.vantage.evidence,
            "start": result.packets[0].t if result.packets else None,
            "verdict": analysis.verdict, "direction": analysis.direction, "hop": analysis.hop,
            "rtt_ms": analysis.rtt_ms, "packets": packets_json(result.packets, flow, analysis),
            "explanation": analysis.explanation}
    if result.elided:
        item["elided_packets"] = result.elided
    return item


def flow_row(result) -> list:
    """The table row of one analysed flow: client, server, packets, verdict, direction."""
    flow, analysis = result.flow, result.analysis
    return [f"{flow.client}:{flow.client_port}", f"{flow.server}:{flow.server_port}",
            len(result.packets) + result.elided, analysis.verdict, analysis.direction or "-", flow.vantage]


def flows_table(rows: list[list]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=["client", "server", "packets", "verdict", "direction", "captured at"],
                    tablefmt="simple")
