"""`probe trace URL`: where along the path the request's fate parts from a control's."""

from __future__ import annotations

import time
from typing import List, Optional

import typer

from probe.commands import common
from probe.commands.common import exit_code_for, open_output, say
from probe.errors import UsageError


def trace(
    url: str = common.URL,
    resolve: Optional[List[str]] = common.RESOLVE,
    ipv4: bool = common.IPV4,
    ipv6: bool = common.IPV6,
    json_output: bool = common.JSON,
    pcap: Optional[str] = common.PCAP,
    report: Optional[str] = common.REPORT,
    output: Optional[str] = common.OUTPUT,
    quiet: bool = common.QUIET,
    method: Optional[str] = common.METHOD,
    header: Optional[List[str]] = common.HEADER,
    user_agent: Optional[str] = common.USER_AGENT,
    data: Optional[str] = common.DATA,
    control_host: str = common.CONTROL_HOST,
    max_ttl: int = common.MAX_TTL,
    wait: Optional[float] = typer.Option(None, "--wait", metavar="SECONDS",
                                         help="how long to wait for replies to each TTL-limited request "
                                              "[default: 0.3 s or 3 round trips, whichever is longer]"),
    max_time: float = typer.Option(120.0, "--max-time", metavar="SECONDS",
                                   help="stop starting new TTLs after this long"),
    sni: Optional[str] = common.SNI,
    cacert: Optional[str] = common.CACERT,
    color: str = common.COLOR,
    interface: Optional[str] = common.INTERFACE,
):
    """Send the request with growing TTL beside a control request; report the hop where the
    interference first shows."""
    started = time.monotonic()
    paint = common.paint_for(color)
    request = common.request_options(method, header, user_agent, data)
    common.check_max_ttl(max_ttl)
    common.check_control_host(control_host)
    if wait is not None and not 0.05 <= wait <= 10:
        raise UsageError("--wait must be from 0.05 to 10 seconds")
    if not 0 < max_time <= 3600:
        raise UsageError("--max-time must be more than 0 and at most 3600 seconds")
    tls = common.tls_options(sni, cacert)
    target = common.target_from(url, resolve, ipv4, ipv6)
    if control_host.lower() == target.host.lower():
        raise UsageError("--control-host must differ from the host under test")
    pcap_handle = open_output(pcap)
    report_handle = open_output(report)
    output_handle = open_output(output)

    from probe.engine import analyze_flow
    from probe.network.single import CheckOptions, run_check
    from probe.render.report import (HOPS_HEADER, application_sections, check_document, dumps, finish_document,
                                     hop_json, hop_line, hops_table, summary_lines, verdict_line, write_pcap)
    from probe.network.tracer import TraceOptions
    from probe.jobs.locating import localize

    measurement = run_check(target, CheckOptions(request=request, tls=tls),
                            on_start=None if quiet else common.announce(target), network=common.network(interface))
    analysis = analyze_flow(measurement.packets, measurement.flow)
    if not quiet:
        say(f"the exchange at full TTL, before locating: {analysis.verdict}")
    options = TraceOptions(request=request, control_host=control_host, max_ttl=max_ttl, window=wait,
                           max_time=max_time, tls=tls)
    streamed = []  # hops printed as they are learned (mtr's manner), so the table is not printed again

    def print_hop(row) -> None:
        if not streamed:
            print(HOPS_HEADER, flush=True)
        streamed.append(row)
        print(hop_line(hop_json(row), paint), flush=True)

    found = localize(target, measurement, analysis, options, always=True, on_progress=common.chatter(quiet),
                     on_hop=None if json_output or quiet else print_hop, network=common.network(interface))
    extra, frames = {}, list(measurement.frames)
    if found is not None:
        analysis, extra, frames = found.analysis, found.extra, frames + found.frames
    document = check_document(target.as_json(), measurement.packets, measurement.flow, analysis,
                              command="trace", extra={**application_sections(measurement.application), **extra})
    document.setdefault("hops", [])
    document.setdefault("bracket", None)
    if pcap_handle is not None:
        pcap_handle.close()
        write_pcap(pcap, sorted(frames, key=lambda frame: frame.t))
    code = exit_code_for(analysis.verdict, analysis.hop)
    finish_document(document, started, code)
    common.write_report(report_handle, document)
    common.write_document(output_handle, document)
    if json_output:
        if output is None:  # -o FILE takes the document instead, as curl's -o takes the body
            print(dumps(document))
    elif quiet:
        print(verdict_line(document, paint))
    else:
        if not streamed:  # a SYN sweep, or nothing to trace: the table once, at the end
            print(hops_table(document["hops"], paint, document["hop"]))
        print()
        print(summary_lines(document, paint))
        for sentence in document.get("trace", {}).get("evidence", []):
            print(f"  - {sentence}")
    if found is not None and found.interrupt is not None:
        raise found.interrupt  # exit 130 (Ctrl-C) or 143, after reporting the hops found so far
    raise typer.Exit(code)
