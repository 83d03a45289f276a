"""`probe batch FILE|-`: many targets, one shared capture and guard, one JSON line each."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from probe.commands import common
from probe.commands.common import open_output, say
from probe.errors import ProbeError, UsageError

def batch(
    file: str = typer.Argument(..., metavar="FILE|-", help="targets, one a line: URL [HOST:PORT:ADDR ...]; "
                                                           "# starts a comment; - reads standard input"),
    out: Optional[str] = typer.Option(None, "--out", metavar="FILE",
                                      help="write the JSON lines (one probe/1 check document per target) to FILE "
                                           "instead of stdout"),
    concurrency: int = typer.Option(100, "--concurrency", "-c", help="exchanges in flight at once"),
    rate: float = typer.Option(1000.0, "--rate", metavar="PACKETS/S", help="packets sent per second, all targets "
                                                                           "together"),
    method: Optional[str] = common.METHOD,
    header: Optional[List[str]] = common.HEADER,
    user_agent: Optional[str] = common.USER_AGENT,
    data: Optional[str] = common.DATA,
    linger: Optional[float] = common.LINGER,
    max_time: float = common.MAX_TIME,
    retries: int = common.RETRIES,
    syn_retries: int = common.SYN_RETRIES,
    ttl: int = common.TTL,
    ipv4: bool = common.IPV4,
    ipv6: bool = common.IPV6,
    no_locate: bool = typer.Option(False, "--no-locate", help="never run the TTL sweeps"),
    max_ttl: int = common.MAX_TTL,
    control_host: str = common.CONTROL_HOST,
    cacert: Optional[str] = common.CACERT,
    pcap: Optional[str] = typer.Option(None, "--pcap", metavar="FILE",
                                       help="write every packet of every exchange to FILE (pcap, raw IP)"),
    history: Optional[str] = typer.Option(None, "--history", metavar="FILE|URL", envvar="PROBE_HISTORY",
                                          help="keep every result in this SQLite file or postgresql:// database "
                                               "(see probe history); a database that cannot be written does not "
                                               "stop the batch, it makes the exit code 1"),
    vantage: Optional[str] = typer.Option(None, "--vantage", metavar="NAME", envvar="PROBE_VANTAGE",
                                          help="where this batch runs from, stored with its results "
                                               "[default: the host name]"),
    alert_on_change: bool = typer.Option(False, "--alert-on-change",
                                         help="with --history: print, and exit non-zero, only for targets whose "
                                              "verdict changed since their previous run"),
    nagios: bool = typer.Option(False, "--nagios", help="print a Nagios/Icinga plugin status line and exit "
                                                        "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN"),
    prom: Optional[str] = typer.Option(None, "--prom", metavar="FILE",
                                       help="write a node_exporter textfile (per-target verdict and RTT), atomically"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                            help="progress bar on stderr [default: when stderr is a terminal]"),
    color: str = common.COLOR,
):
    """Probe every target of FILE as probe check would, many at once; one JSON line each."""
    from probe.network.target import checked_family

    family = checked_family(ipv4, ipv6)
    request = common.request_options(method, header, user_agent, data)
    check_options = common.exchange_options(request, linger, max_time, retries, syn_retries, ttl,
                                            common.tls_options(None, cacert))
    common.check_max_ttl(max_ttl)
    if not 1 <= concurrency <= 1000:
        raise UsageError("--concurrency must be from 1 to 1000")
    if not 0 < rate <= 1_000_000:
        raise UsageError("--rate must be more than 0 and at most 1000000 packets per second")
    common.check_control_host(control_host)
    if alert_on_change and not history:
        raise UsageError("--alert-on-change needs --history FILE|URL (where the previous verdicts are)")
    if history:
        from probe.jobs.store import check_location, check_vantage, default_vantage

        check_location(history)
        vantage = check_vantage(vantage if vantage is not None else default_vantage())
    if alert_on_change and nagios:
        raise UsageError("--nagios and --alert-on-change do not go together: the plugin's state is the "
                         "current one")
    arguments = dict(file=file, family=family, out=out, concurrency=concurrency, rate=rate, check_options=check_options,
                     no_locate=no_locate, max_ttl=max_ttl, control_host=control_host, pcap=pcap, history=history,
                     vantage=vantage, alert_on_change=alert_on_change, nagios=nagios, prom=prom, progress=progress,
                     paint=common.paint_for(color, sys.stderr))
    if not nagios:
        raise typer.Exit(_run_batch(**arguments))
    try:  # a plugin that cannot measure says UNKNOWN, on stdout, with the plugin's code
        code = _run_batch(**arguments)
    except UsageError:
        raise
    except ProbeError as error:
        from probe.render.monitor import UNKNOWN, nagios_unknown

        print(nagios_unknown(str(error)))
        raise typer.Exit(UNKNOWN)
    raise typer.Exit(code)


def _lines(file: str, family: int | None = None):
    """The target lines, each checked before anything is sent; then the same lines again."""
    from probe.jobs.targets import read_lines

    if file == "-":
        lines = list(read_lines(sys.stdin, family))
        return len(lines), lambda: iter(lines)
    try:
        with open(file, encoding="utf-8", errors="replace") as handle:
            count = sum(1 for _ in read_lines(handle, family))
    except OSError as error:
        raise ProbeError(f"cannot read {file}: {error.strerror}") from None

    def again():
        with open(file, encoding="utf-8", errors="replace") as handle:
            yield from read_lines(handle, family)

    return count, again


def _run_batch(file, family, out, concurrency, rate, check_options, no_locate, max_ttl, control_host, pcap, history,
               vantage, alert_on_change, nagios, prom, progress, paint=None) -> int:
    import json
    import time

    from probe.jobs.targets import Locator, Outcomes, resolved, run_targets, summary_table
    from probe.network.admission import Session, SessionOptions

    count, lines = _lines(file, family)
    if not count:  # nothing to probe: say so before a capture, a raw socket or a guard is opened
        raise UsageError(f"no targets in {'standard input' if file == '-' else file}: give one URL a line")
    out_handle = open_output(out)
    pcap_handle = open_output(pcap)
    if prom is not None:
        _check_writable_dir(prom)
    from probe.jobs.store import History, HistoryError

    store, history_failure = None, None
    if history:
        try:  # a history that cannot be used does not lose the run: the results still go out
            store = History(history, vantage)
        except HistoryError as error:
            history_failure = str(error)
    options = SessionOptions(check_options, concurrency=concurrency, rate=rate)
    session = Session(options)
    locator = None if no_locate else Locator(max_ttl, check_options.request, control_host, check_options.tls)
    pcap_writer = None
    if pcap_handle is not None:
        import dpkt

        from probe.render.report import LINKTYPE_RAW

        pcap_writer = dpkt.pcap.Writer(pcap_handle, snaplen=65535, linktype=LINKTYPE_RAW, nano=True)
    stream = out_handle if out_handle is not None else sys.stdout.buffer
    metrics = [] if prom is not None else None
    show_bar = progress if progress is not None else sys.stderr.isatty()
    bar = _Progress(count, show_bar)
    started = time.monotonic()

    def speak(document: dict) -> None:
        if not nagios or out_handle is not None:
            stream.write(json.dumps(document).encode() + b"\n")

    def write_frames(frames: list) -> None:
        for frame in frames:
            pcap_writer.writepkt(frame.data, ts=frame.t)

    def keep_metric(document: dict, code: int) -> None:
        from probe.render.monitor import metric_of

        metrics.append(metric_of(document, code))

    outcomes = Outcomes(store, alert_on_change, speak, write_frames if pcap_writer is not None else None,
                        keep_metric if metrics is not None else None)

    def judged(result) -> None:
        outcomes.add(result)
        bar.update(1)

    exit_code, runs = None, None
    try:
        runs = session.run((line, target) for line, target in resolved(lines(), lookahead=2 * concurrency))
        run_targets(runs, locator, judged, lambda: bar.update(1),
                    lambda paths, targets: bar.phase(f"tracing {paths} path(s)", targets))
        seconds = time.monotonic() - started
        exit_code = outcomes.exit_code
    finally:
        if runs is not None:
            runs.close()  # the guard table goes now, whatever stopped us (SIGTERM included)
        bar.close()
        if locator is not None:
            locator.close()
        stream.flush()
        if out_handle is not None:
            out_handle.close()
        if pcap_handle is not None:
            pcap_handle.close()
        if store is not None:  # last: the outputs are complete whatever the database does
            try:
                store.close(exit_code)
            except HistoryError as error:
                history_failure = str(error)
    if prom is not None:
        from probe.render.monitor import write_prom

        write_prom(prom, metrics, time.time(), seconds, exit_code)
    if nagios:
        from probe.render.monitor import nagios_output

        text, state = nagios_output(outcomes.everything, history_failure and "the history was not written")
        print(text)
        if history_failure:
            say(f"probe: {history_failure}")
        return state
    if outcomes.heard.total:  # --alert-on-change: silent when nothing changed
        say(summary_table(outcomes.everything, seconds, session.packets_sent, session.frames_dropped, paint,
                          changed=outcomes.spoken if alert_on_change else None))
    if history_failure:  # the results are above; the history did not get them: the tool failed a job
        say(f"probe: {history_failure} (the results are in the JSON lines)")
        return common.EXIT_FAILED
    return exit_code


class _Progress:
    """The progress bar on stderr, phase by phase: "probing" counts the targets whose exchange is
    over, then "tracing N path(s)" the targets that waited for a trace, each phase with its own
    clock, so its rate is that phase's average (tqdm's smoothing=0) and its ETA holds. A thread
    redraws it twice a second, so the elapsed time moves while nothing finishes."""

    REDRAW = 0.5  # seconds

    def __init__(self, count: int, show: bool):
        import threading

        from tqdm import tqdm

        self.bar = tqdm(total=count, file=sys.stderr, unit="target", desc="probing", disable=not show, leave=False,
                        dynamic_ncols=True, smoothing=0)
        self.stopped = threading.Event()
        self.thread = None
        if show:
            self.thread = threading.Thread(target=self._redraw, name="progress", daemon=True)
            self.thread.start()

    def _redraw(self) -> None:
        while not self.stopped.wait(self.REDRAW):
            self.bar.refresh()

    def phase(self, name: str, total: int) -> None:
        self.bar.reset(total=total)
        self.bar.set_description(name)

    def update(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
        self.bar.close()


def _check_writable_dir(path: str) -> None:
    import os

    directory = os.path.dirname(os.path.abspath(path))
    if not os.access(directory, os.W_OK):
        raise ProbeError(f"cannot write {path}: its directory {directory} is not writable")
