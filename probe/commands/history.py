"""`probe history FILE [TARGET]`: what `probe batch --history FILE` kept, and what changed."""

from __future__ import annotations

from typing import Optional

import typer


def history(
    file: str = typer.Argument(..., metavar="FILE", help="the SQLite file of probe batch --history"),
    target: Optional[str] = typer.Argument(None, metavar="TARGET",
                                           help="a target's name, or a unique part of it: show its timeline"),
    changes: bool = typer.Option(False, "--changes", help="with TARGET: only the runs where the verdict changed"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON document on stdout"),
):
    """Without TARGET, every target with its verdict and since when; with TARGET, its timeline."""
    import json

    from tabulate import tabulate

    from probe.history import targets, timeline

    if target is None:
        rows = targets(file)
        if json_output:
            print(json.dumps({"schema": "probe/1", "command": "history", "targets": rows}, indent=2))
            return
        print(tabulate([[r["target"], r["state"], _when(r["since"]), _when(r["last"]), r["runs"], r["changes"]]
                        for r in rows], headers=["target", "verdict", "since", "last run", "runs", "changes"],
                       tablefmt="simple"))
        return
    name, entries = timeline(file, target)
    shown = [e for i, e in enumerate(entries) if not changes or i == 0 or e.changed_from is not None]
    if json_output:
        from dataclasses import asdict

        print(json.dumps({"schema": "probe/1", "command": "history", "target": name,
                          "entries": [asdict(e) for e in shown]}, indent=2))
        return
    print(name)
    print(tabulate([[_when(e.at), e.state, e.direction or "", "" if e.hop is None else e.hop,
                     "" if e.rtt_ms is None else f"{e.rtt_ms:.1f}", e.address or "",
                     f"changed from {e.changed_from}" if e.changed_from else ""] for e in shown],
                   headers=["when", "verdict", "direction", "hop", "rtt ms", "address", "change"], tablefmt="simple"))
    if entries[-1].explanation:
        print(f"\nlast: {entries[-1].explanation}")


def _when(at: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
