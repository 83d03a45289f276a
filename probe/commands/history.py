"""`probe history FILE|URL [TARGET]`: what `probe batch --history` kept, from every vantage point,
and what changed."""

from __future__ import annotations

from typing import List, Optional

import typer


def history(
    location: str = typer.Argument(..., metavar="FILE|URL", envvar="PROBE_HISTORY",
                                   help="the SQLite file or postgresql:// database of probe batch --history"),
    target: Optional[str] = typer.Argument(None, metavar="TARGET",
                                           help="a target's name, or a unique part of it: show its timeline"),
    changes: bool = typer.Option(False, "--changes", help="only the runs where the verdict changed from the same "
                                                          "vantage (and each vantage's first); without TARGET, only "
                                                          "the targets that changed"),
    vantages: Optional[List[str]] = typer.Option(None, "--vantage", metavar="NAME",
                                                 help="only results from this vantage point (repeat for more)"),
    differ: bool = typer.Option(False, "--differ", help="the targets whose latest verdict differs between vantage "
                                                        "points: blocked from one, clean from another"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON document on stdout"),
):
    """Without TARGET, every target from each vantage with its verdict and since when; with
    TARGET, its timeline from each vantage; with --differ, where the vantage points disagree."""
    import json

    from tabulate import tabulate

    from probe.errors import UsageError
    from probe.jobs.store import differing, redact, targets, timeline

    vantages = tuple(vantages or ())
    if differ and target is not None:
        raise UsageError("--differ shows every target: give no TARGET (or leave out --differ)")
    if differ:
        rows = differing(location, vantages)
        if json_output:
            print(json.dumps({"schema": "probe/1", "command": "history", "view": "differ", "targets": rows},
                             indent=2))
            return
        if not rows:
            print(f"every target has the same latest verdict from every vantage in {redact(location)}")
            return
        table = []
        for row in rows:
            for n, seen in enumerate(row["vantages"]):
                table.append([row["target"] if n == 0 else "", seen["vantage"], seen["state"], _when(seen["at"])])
        print(tabulate(table, headers=["target", "vantage", "verdict", "last run"], tablefmt="simple"))
        return
    if target is None:
        rows = [r for r in targets(location, vantages) if r["changes"] or not changes]
        if json_output:
            print(json.dumps({"schema": "probe/1", "command": "history", "targets": rows}, indent=2))
            return
        print(tabulate([[r["target"], r["vantage"], r["state"], _family(r["family"]), _when(r["since"]),
                         _when(r["last"]), r["runs"], r["changes"]] for r in rows],
                       headers=["target", "vantage", "verdict", "over", "since", "last run", "runs", "changes"],
                       tablefmt="simple"))
        return
    name, entries = timeline(location, target, vantages)
    seen_vantages: set[str] = set()
    shown = []
    for entry in entries:
        if not changes or entry.vantage not in seen_vantages or entry.changed_from is not None:
            shown.append(entry)
        seen_vantages.add(entry.vantage)
    if json_output:
        from dataclasses import asdict

        print(json.dumps({"schema": "probe/1", "command": "history", "target": name,
                          "entries": [asdict(e) for e in shown]}, indent=2))
        return
    print(name)
    print(tabulate([[_when(e.at), e.vantage, e.state, e.direction or "", "" if e.hop is None else e.hop,
                     "" if e.rtt_ms is None else f"{e.rtt_ms:.1f}", e.address or "", _family(e.family),
                     f"changed from {e.changed_from}" if e.changed_from else ""] for e in shown],
                   headers=["when", "vantage", "verdict", "direction", "hop", "rtt ms", "address", "over", "change"],
                   tablefmt="simple"))
    last = {}
    for entry in entries:
        last[entry.vantage] = entry
    for vantage, entry in sorted(last.items()):
        if entry.explanation:
            print(f"\nlast from {vantage}: {entry.explanation}")


def _family(family: str | None) -> str:
    return {"ipv4": "IPv4", "ipv6": "IPv6"}.get(family or "", "")


def _when(at: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
