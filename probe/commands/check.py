"""`probe check URL`: one crafted exchange, its verdict, and where the box sits."""

from __future__ import annotations

from typing import List, Optional

import typer

from probe.commands.common import exit_code_for, open_output, say
from probe.errors import UsageError


def check(
    url: str = typer.Argument(..., metavar="URL", help="http://HOST[:PORT][/PATH], or a bare host name or address"),
    resolve: Optional[List[str]] = typer.Option(None, "--resolve", metavar="HOST:PORT:ADDR",
                                                help="connect to ADDR while the request still names HOST"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON document (schema probe/1) on stdout"),
    pcap: Optional[str] = typer.Option(None, "--pcap", metavar="FILE",
                                       help="write every packet sent and received to FILE (pcap, raw IP)"),
    method: str = typer.Option("HEAD", "--method", "-X", help="HTTP method: HEAD or GET"),
    linger: Optional[float] = typer.Option(None, "--linger", metavar="SECONDS",
                                           help="keep listening this long after the exchange "
                                                "[default: 0.5 s or 3 round trips, whichever is longer]"),
    max_time: float = typer.Option(30.0, "--max-time", metavar="SECONDS", help="hard bound on the exchange"),
    retries: int = typer.Option(3, "--retries", help="retransmissions of the request (at least 2)"),
    syn_retries: int = typer.Option(2, "--syn-retries", help="retransmissions of the SYN"),
    ttl: int = typer.Option(64, "--ttl", help="IP TTL of the probe's packets"),
    no_locate: bool = typer.Option(False, "--no-locate",
                                   help="never run the TTL sweeps that look for a box answering in the "
                                        "server's place"),
    max_ttl: int = typer.Option(16, "--max-ttl", help="highest TTL the sweeps try"),
):
    """Probe URL with a hand-made TCP handshake and request; say who answered and who reset."""
    from probe.target import build_target, parse_resolve

    method = method.upper()
    if method not in ("HEAD", "GET"):
        raise UsageError(f"unsupported --method {method}: use HEAD or GET")
    if retries < 2 or retries > 10:
        raise UsageError("--retries must be from 2 to 10")
    if not 0 <= syn_retries <= 10:
        raise UsageError("--syn-retries must be from 0 to 10")
    if not 1 <= ttl <= 255:
        raise UsageError("--ttl must be from 1 to 255")
    if max_time <= 0 or max_time > 600:
        raise UsageError("--max-time must be more than 0 and at most 600 seconds")
    if not 1 <= max_ttl <= 64:
        raise UsageError("--max-ttl must be from 1 to 64")
    if linger is not None and not 0 <= linger <= 60:
        raise UsageError("--linger must be from 0 to 60 seconds")
    target = build_target(url, [parse_resolve(entry) for entry in resolve or []])
    pcap_handle = open_output(pcap)

    from probe.engine import analyze_flow
    from probe.live import CheckOptions, run_check
    from probe.report import check_document, dumps, locate_json, packet_table, summary_lines, write_pcap
    from probe.tcp import Settings

    settings = Settings(data_retries=retries, syn_retries=syn_retries)
    options = CheckOptions(method=method, linger=linger, max_time=max_time, settings=settings, ttl=ttl)
    measurement = run_check(target, options, on_start=lambda flow: say(
        f"probing {target.url} at {target.address}:{target.port} from {flow.client}:{flow.client_port} ..."))
    analysis = analyze_flow(measurement.packets, measurement.flow)
    extra, frames = {}, list(measurement.frames)
    from probe.engine.verdict import wants_location

    if wants_location(analysis) and not no_locate:
        from probe.engine.locate import locate
        from probe.locate import run_sweeps

        say("the answer may come from a box in front of the server: sweeping TTLs to find where ...")
        wait = max(0.5, 3 * (analysis.rtt_ms or 0) / 1000)
        sweeps = run_sweeps(measurement.flow.client, target.address, target.port, max_ttl=max_ttl, wait=wait)
        location = locate(sweeps.tcp, sweeps.echo, target.address)
        analysis = analyze_flow(measurement.packets, measurement.flow, location)
        frames += sweeps.frames
        extra["locate"] = locate_json(location, sweeps.tcp, sweeps.echo)
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
