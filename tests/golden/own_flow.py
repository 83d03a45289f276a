"""The probe's own flow of a golden capture, read by the production flow table (`probe analyze`'s
`probe.files.flows`), so that the golden tests judge what users' files meet."""

from __future__ import annotations

from pathlib import Path

from probe.files.flows import FlowResult, analyze_file


def own_flow(capture: Path) -> FlowResult:
    """The first flow to start: the probe's exchange (its sweeps' SYNs, if any, come after)."""
    results, _totals = analyze_file(str(capture))
    return results[0]
