"""`probe check URL`: one crafted exchange, its verdict, and where the box sits."""

from __future__ import annotations

from typing import List, Optional

import typer

from probe.commands import common
from probe.commands.common import exit_code_for, open_output, say
from probe.errors import UsageError


def check(
    url: str = common.URL,
    resolve: Optional[List[str]] = common.RESOLVE,
    json_output: bool = common.JSON,
    pcap: Optional[str] = common.PCAP,
    method: str = common.METHOD,
    linger: Optional[float] = typer.Option(None, "--linger", metavar="SECONDS",
                                           help="keep listening this long after the exchange "
                                                "[default: 0.5 s or 3 round trips, whichever is longer]"),
    max_time: float = typer.Option(30.0, "--max-time", metavar="SECONDS", help="hard bound on the exchange"),
    retries: int = typer.Option(3, "--retries", help="retransmissions of the request (at least 2)"),
    syn_retries: int = typer.Option(2, "--syn-retries", help="retransmissions of the SYN"),
    ttl: int = typer.Option(64, "--ttl", help="IP TTL of the probe's packets"),
    no_locate: bool = typer.Option(False, "--no-locate",
                                   help="never run the TTL sweeps that look for the box when the exchange "
                                        "shows interference"),
    max_ttl: int = common.MAX_TTL,
    control_host: str = common.CONTROL_HOST,
):
    """Probe URL with a hand-made TCP handshake and request; say who answered and who reset."""
    from probe.target import build_target, parse_resolve

    method = common.checked_method(method)
    if retries < 2 or retries > 10:
        raise UsageError("--retries must be from 2 to 10")
    if not 0 <= syn_retries <= 10:
        raise UsageError("--syn-retries must be from 0 to 10")
    if not 1 <= ttl <= 255:
        raise UsageError("--ttl must be from 1 to 255")
    if not 0 < max_time <= 600:  # (a NaN is refused too)
        raise UsageError("--max-time must be more than 0 and at most 600 seconds")
    common.check_max_ttl(max_ttl)
    common.check_control_host(control_host)
    if linger is not None and not 0 <= linger <= 60:
        raise UsageError("--linger must be from 0 to 60 seconds")
    target = build_target(url, [parse_resolve(entry) for entry in resolve or []])
    pcap_handle = open_output(pcap)

    from probe.engine import analyze_flow
    from probe.live import CheckOptions, run_check
    from probe.report import check_document, dumps, packet_table, summary_lines, write_pcap
    from probe.tcp import Settings

    settings = Settings(data_retries=retries, syn_retries=syn_retries)
    options = CheckOptions(method=method, linger=linger, max_time=max_time, settings=settings, ttl=ttl)
    measurement = run_check(target, options, on_start=lambda flow: say(
        f"probing {target.url} at {target.address}:{target.port} from {flow.client}:{flow.client_port} ..."))
    analysis = analyze_flow(measurement.packets, measurement.flow)
    extra, frames = {}, list(measurement.frames)
    if not no_locate:
        from probe.trace import TraceOptions, localize

        found = localize(target, measurement, analysis, TraceOptions(method=method, max_ttl=max_ttl,
                                                                     control_host=control_host),
                         on_progress=say)
        if found is not None:
            analysis, extra, frames = found.analysis, found.extra, frames + found.frames
    document = check_document(target.as_json(), measurement.packets, measurement.flow, analysis, extra=extra)
    if pcap_handle is not None:
        pcap_handle.close()
        write_pcap(pcap, sorted(frames, key=lambda frame: frame.t))
    if json_output:
        print(dumps(document))
    else:
        print(packet_table(measurement.packets, measurement.flow, analysis))
        print()
        print(summary_lines(document))
    raise typer.Exit(exit_code_for(analysis.verdict, analysis.hop))
