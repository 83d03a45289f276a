"""`probe check URL`: one crafted exchange, its verdict, and where the box sits."""

from __future__ import annotations

import time
from typing import List, Optional

import typer

from probe.commands import common
from probe.commands.common import exit_code_for, open_output


def check(
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
    linger: Optional[float] = common.LINGER,
    max_time: float = common.MAX_TIME,
    retries: int = common.RETRIES,
    syn_retries: int = common.SYN_RETRIES,
    ttl: int = common.TTL,
    no_locate: bool = typer.Option(False, "--no-locate",
                                   help="never run the TTL sweeps that look for the box when the exchange "
                                        "shows interference"),
    max_ttl: int = common.MAX_TTL,
    control_host: str = common.CONTROL_HOST,
    sni: Optional[str] = common.SNI,
    cacert: Optional[str] = common.CACERT,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="every evidence sentence of every packet"),
    color: str = common.COLOR,
):
    """Probe URL with a hand-made TCP handshake and request; say who answered and who reset."""
    started = time.monotonic()
    paint = common.paint_for(color)
    request = common.request_options(method, header, user_agent, data)
    options = common.exchange_options(request, linger, max_time, retries, syn_retries, ttl,
                                      common.tls_options(sni, cacert))
    common.check_max_ttl(max_ttl)
    common.check_control_host(control_host)
    target = common.target_from(url, resolve, ipv4, ipv6)
    pcap_handle = open_output(pcap)
    report_handle = open_output(report)
    output_handle = open_output(output)

    from probe.engine import analyze_flow
    from probe.live import run_check
    from probe.report import (application_sections, check_document, dumps, finish_document, packet_table,
                              summary_lines, verdict_line, write_pcap)

    measurement = run_check(target, options, on_start=None if quiet else common.announce(target))
    analysis = analyze_flow(measurement.packets, measurement.flow)
    extra, frames, found = {}, list(measurement.frames), None
    if not no_locate:
        from probe.trace import TraceOptions, localize

        found = localize(target, measurement, analysis, TraceOptions(request=options.request, max_ttl=max_ttl,
                                                                     control_host=control_host, tls=options.tls,
                                                                     residual_time=max_time),
                         on_progress=common.chatter(quiet))
        if found is not None:
            analysis, extra, frames = found.analysis, found.extra, frames + found.frames
    document = check_document(target.as_json(), measurement.packets, measurement.flow, analysis,
                              extra={**application_sections(measurement.application), **extra})
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
        print(packet_table(measurement.packets, measurement.flow, analysis, verbose=verbose, paint=paint))
        print()
        print(summary_lines(document, paint))
    if found is not None and found.interrupt is not None:
        raise found.interrupt  # Ctrl-C during the trace: exit 130 after reporting what was found
    raise typer.Exit(code)
