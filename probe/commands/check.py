"""`probe check URL`: one crafted exchange, its verdict, and where the box sits."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional

import typer

from probe.commands import common
from probe.commands.common import exit_code_for, open_output, say
from probe.errors import UsageError


def check(
    url: str = common.URL,
    resolve: Optional[List[str]] = common.RESOLVE,
    ipv4: bool = common.IPV4,
    ipv6: bool = common.IPV6,
    both_families: bool = typer.Option(False, "--both-families", "-46",
                                       help="probe the name over IPv4 and over IPv6, one after the other, and "
                                            "say where the two differ (also: -4 -6)"),
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
    interface: Optional[str] = common.INTERFACE,
    source_port: Optional[int] = common.SOURCE_PORT,
):
    """Probe URL with a hand-made TCP handshake and request; say who answered and who reset."""
    started = time.monotonic()
    paint = common.paint_for(color)
    request = common.request_options(method, header, user_agent, data)
    options = common.exchange_options(request, linger, max_time, retries, syn_retries, ttl,
                                      common.tls_options(sni, cacert))
    common.check_max_ttl(max_ttl)
    common.check_control_host(control_host)
    if both_families and ipv4 != ipv6:
        raise UsageError(f"--both-families and -{4 if ipv4 else 6} contradict each other: give one of them")
    locating = None if no_locate else (max_ttl, control_host)
    where = (interface, source_port)
    outputs = _Outputs(json_output, quiet, verbose, paint, open_output(output))
    if both_families or (ipv4 and ipv6):
        from probe.network.target import parse_resolve, targets_by_family

        if report is not None:
            raise UsageError("--report draws one exchange: with --both-families, run check once per family (-4, -6)")
        found = targets_by_family(url, [parse_resolve(entry) for entry in resolve or []])
        _check_both(found, options, locating, outputs, pcap, started, where)
    target = common.target_from(url, resolve, ipv4, ipv6)
    pcap_handle = open_output(pcap)
    report_handle = open_output(report)
    probed = _probe(target, options, locating, quiet, where)
    if pcap_handle is not None:
        pcap_handle.close()
        _write_frames(pcap, probed.frames)
    from probe.render.report import finish_document, verdict_line

    finish_document(probed.document, started, probed.code)
    common.write_report(report_handle, probed.document)
    outputs.emit(probed.document, lambda: verdict_line(probed.document, paint), lambda: probed.table(verbose, paint))
    probed.reraise()
    raise typer.Exit(probed.code)


@dataclass
class _Outputs:
    """Where check's result goes: the JSON document (stdout under --json, or the -o file, as
    curl's -o takes the body), or the text: the verdict line alone under -q, else the tables."""

    json_output: bool
    quiet: bool
    verbose: bool
    paint: object
    output_handle: object | None

    def emit(self, document: dict, verdict_line, tables) -> None:
        from probe.render.report import dumps

        common.write_document(self.output_handle, document)
        if self.json_output:
            if self.output_handle is None:
                print(dumps(document))
        elif self.quiet:
            print(verdict_line())
        else:
            print(tables())


@dataclass
class _Probed:
    """One family's exchange, judged and located, as `check` reports it."""

    document: dict
    code: int
    frames: list
    measurement: object = None
    analysis: object = None
    interrupt: BaseException | None = None

    def table(self, verbose: bool, paint=None) -> str:
        from probe.render.colour import PLAIN
        from probe.render.report import packet_table, summary_lines

        if self.measurement is None:
            return f"not measured: {self.document['error']}"
        paint = paint or PLAIN
        return (packet_table(self.measurement.packets, self.measurement.flow, self.analysis, verbose=verbose,
                             paint=paint) + "\n\n" + summary_lines(self.document, paint))

    def reraise(self) -> None:
        if self.interrupt is not None:
            raise self.interrupt  # Ctrl-C during the trace: exit 130 after reporting what was found


def _probe(target, options, locating, quiet: bool = False, where: tuple = (None, None)) -> _Probed:
    """The exchange, its judgement and, unless `locating` is None, the search for the box;
    `where`: (-i, --source-port); the search's own connections take ephemeral ports."""
    from probe.engine import analyze_flow
    from probe.network.single import run_check
    from probe.render.report import application_sections, check_document

    interface, source_port = where
    measurement = run_check(target, options, on_start=None if quiet else common.announce(target),
                            network=common.network(interface, source_port))
    analysis = analyze_flow(measurement.packets, measurement.flow)
    extra, frames, found = {}, list(measurement.frames), None
    if locating is not None:
        from probe.network.tracer import TraceOptions
        from probe.jobs.locating import localize

        max_ttl, control_host = locating
        found = localize(target, measurement, analysis, TraceOptions(request=options.request, max_ttl=max_ttl,
                                                                     control_host=control_host, tls=options.tls,
                                                                     residual_time=options.max_time),
                         on_progress=common.chatter(quiet), network=common.network(interface))
        if found is not None:
            analysis, extra, frames = found.analysis, found.extra, frames + found.frames
    document = check_document(target.as_json(), measurement.packets, measurement.flow, analysis,
                              extra={**application_sections(measurement.application), **extra})
    code = exit_code_for(analysis.verdict, analysis.hop)
    return _Probed(document, code, frames, measurement, analysis, found.interrupt if found is not None else None)


def _write_frames(path: str, frames) -> None:
    from probe.render.report import write_pcap

    write_pcap(path, sorted(frames, key=lambda frame: frame.t))


def _check_both(found, options, locating, outputs: "_Outputs", pcap: str | None, started: float,
                where: tuple = (None, None)):
    """`--both-families`: the same check over IPv4, then over IPv6; one document (or report) that
    holds both and says where they differ. A family without an address, or that this host cannot
    reach (no route), is reported as not measured, and the other is still probed."""
    from probe.errors import ProbeError
    from probe.outcome import worst
    from probe.render.report import both_families_document, both_families_table, finish_document

    pcap_handle = open_output(pcap)
    probed: list[_Probed] = []
    for family, target in found:
        if isinstance(target, str):
            probed.append(_unmeasured(url_of(found), family, target))
            continue
        try:
            probed.append(_probe(target, options, locating, outputs.quiet, where))
        except UsageError:
            raise
        except ProbeError as error:  # no route over this family here: a result, not the end
            probed.append(_unmeasured(target, family, str(error)))
        if probed[-1].interrupt is not None:
            break
    if pcap_handle is not None:
        pcap_handle.close()
        _write_frames(pcap, [frame for one in probed for frame in one.frames])
    for one in probed:
        one.document["exit_code"] = one.code
    codes = [one.code for one in probed]
    document = finish_document(both_families_document([one.document for one in probed], worst(codes)), started,
                               worst(codes))

    def tables() -> str:
        return "\n".join(f"== over IPv{4 if one.document['target'].get('family') == 'ipv4' else 6} ==\n"
                         f"{one.table(outputs.verbose, outputs.paint)}\n" for one in probed) + "\n" + \
            both_families_table(document)

    def verdict_lines() -> str:
        from probe.render.report import verdict_line

        return "\n".join(verdict_line(one.document, outputs.paint) for one in probed if one.measurement is not None)

    outputs.emit(document, verdict_lines, tables)
    for one in probed:
        one.reraise()
    raise typer.Exit(worst(codes))


def url_of(found) -> str:
    return next(target for _, target in found if not isinstance(target, str))


def _unmeasured(target, family: int, error: str) -> _Probed:
    from probe.render.report import unmeasured_document
    from probe.network.target import FAMILY_NAMES

    say(f"probe: not probed over IPv{family}: {error}")
    return _Probed(unmeasured_document(target, FAMILY_NAMES[family], error), 1, [])
