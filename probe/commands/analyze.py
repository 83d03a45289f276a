"""`probe analyze FILE [FILE2]`: the live probe's verdicts over captures taken elsewhere."""

from __future__ import annotations

import heapq
import itertools
import ipaddress
import os
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import List, Optional

import typer

from probe.commands.common import (COLOR, OUTPUT, QUIET, REPORT, exit_code_for, open_output, paint_for, say,
                                   write_report)
from probe.render.colour import PLAIN, Paint
from probe.outcome import worst
from probe.errors import ProbeError, UsageError


def parse_endpoint(text: str) -> tuple[str, int | None]:
    """`ADDR`, `ADDR:PORT`, or over IPv6 `ADDR` and `[ADDR]:PORT` (RFC 3986's brackets) -> (the
    address as records spell it, port or None)."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        address, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise UsageError(f"{text!r}: after [ADDR] only :PORT may follow")
        port = rest[1:]
    elif text.count(":") > 1:  # a bare IPv6 address: its colons are not a port
        address, port = text, ""
    else:
        address, _, port = text.partition(":")
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        raise UsageError(f"{text!r} is not an IP address (ADDR, ADDR:PORT or [IPv6 ADDR]:PORT)") from None
    if not port:
        return address, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{text!r}: the port must be from 1 to 65535")
    return address, int(port)


def parse_flow(text: str) -> tuple[tuple[str, int | None], ...]:
    """`ADDR[:PORT]` or `ADDR[:PORT]-ADDR[:PORT]` (either end first)."""
    return tuple(parse_endpoint(part) for part in text.split("-", 1))


class _Pieces:
    """How UTF-8 pieces of text go into `document` (a text stream): straight to its file with
    `write_all` (its buffer flushed first), or, when it has none (a test's capture), through it.
    `copy` writes a long text where another file holds it (`_Spool.Stored`) with `os.sendfile`:
    the kernel copies it, not this process (reading it in would cost a copy and a fresh buffer's
    page faults for each, a fifth of `--json`'s time on a capture of long flows)."""

    def __init__(self, document):
        import io

        try:
            document.flush()
            self.descriptor = document.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            self.descriptor, self.document = None, document
        self.sendfile = self.descriptor is not None

    @classmethod
    def of_descriptor(cls, descriptor: int) -> "_Pieces":
        """Pieces written straight to the open file `descriptor` (a forked writer's, `_Writers`)."""
        pieces = cls.__new__(cls)
        pieces.descriptor, pieces.sendfile = descriptor, True
        return pieces

    def write(self, pieces: list) -> None:
        from probe.files.flows import write_all

        if self.descriptor is None:
            self.document.write("".join(bytes(piece).decode() for piece in pieces))
        else:
            write_all(self.descriptor, pieces)

    def copy(self, stored: "_Spool.Stored") -> None:
        offset, left = stored.offset, stored.length
        while left and self.sendfile:
            try:
                sent = os.sendfile(self.descriptor, stored.descriptor, offset, left)
            except OSError:  # not to this kind of file (an O_APPEND file, a terminal, ...): read and write
                self.sendfile = False
                break
            if not sent:
                break
            offset, left = offset + sent, left - sent
        if left:
            self.write([os.pread(stored.descriptor, left, offset)])


class _Spool:
    """Rendered flows on disk, not in memory: a capture may hold ten million flows. Read back in the
    order the flows started, whatever order they finished in (flows that started at the same time
    in the order they came). The index is sorted in runs of `RUN` entries, each written to disk as
    it fills, and the runs are merged on the way out, so memory does not grow with the flows. Beside
    texts, it keeps recipes (`add_recipe`: what an ordinary flow's text is written from, later)."""

    RUN = 1 << 16

    @dataclass(frozen=True)
    class Stored:
        """A long text where it is: `length` bytes at `offset` of the open file `descriptor`."""

        descriptor: int
        offset: int
        length: int

    _ENTRY = struct.Struct("=dqqqB")  # start, arrival, offset, length, a recipe (1) or a text (0)
    WRITE, WRITE_PIECES = 1 << 20, 512  # bytes (or texts: a system call takes 1024 at most) gathered per write
    WINDOW, BEHIND, WINDOWS = 4 << 20, 1 << 20, 4  # bytes read at a time, from this far before the text wanted;
    # windows kept

    def __init__(self):
        self.file = tempfile.TemporaryFile()
        self.index = tempfile.TemporaryFile()
        self.entries: list[tuple[float, int, int, int, int]] = []
        self.runs: list[tuple[int, int]] = []  # (where in `index`, entries)
        self.count = self.size = 0
        self.pending: list[bytes] = []  # texts not yet written (`WRITE`)
        self.pending_size = 0
        self.recipes = 0  # of `count`

    def __len__(self) -> int:
        return self.count

    def add(self, start: float, text: str) -> None:
        self.add_bytes(start, text.encode())

    def add_bytes(self, start: float, data: bytes) -> None:
        offset, length = self.put(data)
        self.entries.append((start, self.count, offset, length, 0))
        self.count += 1
        if len(self.entries) >= self.RUN:
            self._write_run()

    def put(self, data: bytes) -> tuple[int, int]:
        """`data` into the file, not yet in the order (`add_recipe`): where it is, (offset, length)."""
        place = self.size, len(data)
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= self.WRITE or len(self.pending) >= self.WRITE_PIECES:
            self._write_pending()
        self.size += len(data)
        return place

    def add_recipe(self, start: float, place: tuple[int, int]) -> None:
        """What an ordinary flow's text is written from, `put` at `place` (`chunks` gives back where it is)."""
        self.entries.append((start, self.count, place[0], place[1], 1))
        self.count += 1
        self.recipes += 1
        if len(self.entries) >= self.RUN:
            self._write_run()

    def _write_pending(self) -> None:
        from probe.files.flows import write_all

        write_all(self.file.fileno(), self.pending)
        self.pending, self.pending_size = [], 0

    def _write_run(self) -> None:
        self.entries.sort()
        self.index.seek(0, 2)
        self.runs.append((self.index.tell(), len(self.entries)))
        self.index.write(b"".join(self._ENTRY.pack(*entry) for entry in self.entries))
        self.entries = []

    def _run(self, where: int, count: int):
        entry, chunk = self._ENTRY, 4096
        for first in range(0, count, chunk):
            self.index.seek(where + first * entry.size)
            data = self.index.read(min(chunk, count - first) * entry.size)
            yield from entry.iter_unpack(data)

    def texts(self):
        return (str(data, "utf-8") for data in self.chunks())

    def chunks(self, stored: bool = False):
        """`texts`, as the UTF-8 bytes they were added as (bytes-like: a text inside a window read is a
        memoryview of it, not a copy; with `stored`, a long text is a `Stored`, where it is), and
        each recipe as where it is in `file`, (offset, length), not read. The texts are mostly in the order
        written, but flows that finish late (idle, lingering) make the reading go back and forth
        between two or three places: a few windows of the file are kept (`WINDOWS`, the least
        recently used replaced), and a long text is read alone."""
        self._write_pending()
        self.index.flush()
        self.entries.sort()
        runs = [self._run(where, count) for where, count in self.runs] + [iter(self.entries)]
        descriptor = self.file.fileno()
        windows = []  # (start, bytes), the most recently used last
        start_now, end_now, view = 0, 0, memoryview(b"")  # the last window used
        for _start, _arrival, offset, length, recipe in heapq.merge(*runs):
            if recipe:
                yield offset, length
                continue
            if not (start_now <= offset and offset + length <= end_now):
                if length >= self.WINDOW // 4:
                    yield self.Stored(descriptor, offset, length) if stored else os.pread(descriptor, length, offset)
                    continue
                for n in range(len(windows) - 1, -1, -1):
                    window_start, window = windows[n]
                    if window_start <= offset and offset + length <= window_start + len(window):
                        if n != len(windows) - 1:
                            windows.append(windows.pop(n))
                        break
                else:
                    window_start = max(0, offset - self.BEHIND)
                    window = os.pread(descriptor, self.WINDOW, window_start)
                    windows.append((window_start, window))
                    if len(windows) > self.WINDOWS:
                        windows.pop(0)
                start_now, end_now, view = window_start, window_start + len(window), memoryview(window)
            yield view[offset - start_now:offset - start_now + length]  # the common case


def analyze(
    file: str = typer.Argument(..., metavar="FILE", help="a capture (pcap, pcapng, or text: tcpdump -x/-X rows, "
                                                          "a hex dump), client or server side"),
    file2: Optional[str] = typer.Argument(None, metavar="[FILE2]",
                                          help="a capture of the same traffic taken at the other end"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON document (schema probe/1) on stdout"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print the packet table of every flow, clean too"),
    flows: Optional[List[str]] = typer.Option(None, "--flow", metavar="ADDR[:PORT][-ADDR[:PORT]]",
                                              help="only flows with these ends (repeatable: any of them; "
                                                   "an IPv6 end with a port as [ADDR]:PORT)"),
    hosts: Optional[List[str]] = typer.Option(None, "--host", metavar="ADDR",
                                              help="only flows with this address at one end (repeatable)"),
    write_pcap: Optional[str] = typer.Option(None, "--write-pcap", metavar="OUT",
                                             help="write the packets of a text capture FILE as a pcap (as text2pcap)"),
    control: Optional[str] = typer.Option(None, "--control", metavar="CONTROL",
                                          help="a capture of the same trace with an innocuous request (CenTrace's "
                                               "control run): compared TTL by TTL with FILE's"),
    report: Optional[str] = REPORT,
    output: Optional[str] = OUTPUT,
    quiet: bool = QUIET,
    color: str = COLOR,
):
    """Analyse every TCP flow of a capture (and pair it with a capture of the other end)."""
    from probe.files.flows import FlowFilter

    paint = paint_for(color)
    wanted = FlowFilter(tuple(parse_endpoint(h)[0] for h in hosts or []), tuple(parse_flow(f) for f in flows or []))
    if write_pcap is not None:
        from probe.commands.write_pcap import write_text_capture

        if file2 is not None:
            raise UsageError("--write-pcap converts one text capture: give FILE alone")
        write_text_capture(file, write_pcap)
    if file2 is not None:
        if control is not None:
            raise UsageError("--control compares a trace with its control: give FILE alone")
        raise typer.Exit(_analyze_two(file, file2, wanted, _Outputs.open(json_output, verbose, quiet, output, report,
                                                                         paint)))
    raise typer.Exit(_analyze_one(file, wanted, _Outputs.open(json_output, verbose, quiet, output, report, paint),
                                  control))


class _ReportFlows:
    """The flows a `--report` draws: the first MAX_FLOWS that are not clean (every flow with -v),
    or, when all are clean, the first MAX_FLOWS of them; the flows table lists up to MAX_ROWS."""

    MAX_ROWS = 1000

    def __init__(self, verbose: bool):
        from probe.render.html import MAX_FLOWS

        self.verbose, self.limit = verbose, MAX_FLOWS
        self.shown: list[tuple[float, dict]] = []
        self.clean: list[tuple[float, dict]] = []

    def add(self, start: float, verdict: str, make) -> None:
        chosen = self.shown if self.verbose or verdict != "clean" else self.clean
        if len(chosen) < self.limit:
            chosen.append((start, make()))

    def document(self, head: dict, rows: list, traces: list) -> dict:
        flows = sorted(self.shown or self.clean, key=lambda item: item[0])
        return {**head, "flows": [flow for _start, flow in flows], "traces": traces,
                "flow_rows": [row for _start, row in sorted(rows, key=lambda item: item[0])][:self.MAX_ROWS]}


@dataclass
class _Outputs:
    """Where analyze's results go: the JSON document (`document`: stdout under --json, the -o
    file, or nowhere), the text on stdout (`text`: not under --json; only verdict lines under -q),
    the --report page, and the colours."""

    document: object | None
    text: bool
    verbose: bool
    quiet: bool
    report_handle: object | None
    paint: Paint = PLAIN

    @classmethod
    def open(cls, json_output: bool, verbose: bool, quiet: bool, output: str | None, report: str | None,
             paint: Paint) -> "_Outputs":
        import io
        import sys

        document = None
        if output is not None:
            handle = open_output(output)
            document = io.TextIOWrapper(handle, encoding="utf-8")
        elif json_output:
            document = sys.stdout
        return cls(document, not json_output, verbose, quiet, open_output(report), paint)

    def close(self) -> None:
        import sys

        if self.document is not None and self.document is not sys.stdout:
            self.document.close()

    def verdict_line(self, client: str, server: str, verdict: str, direction: str | None) -> str:
        return f"{client} -> {server}  verdict: {self.paint.verdict(verdict)}  direction: {direction or '-'}"


def _analyze_one(path: str, wanted, outputs: _Outputs, control: str | None = None) -> int:
    import json
    import sys

    from probe.files.flows import analyze_stream, judged_packets_writer, writes_ordinary_json
    from probe.render.flows import (FlowsTable, analyzed_flow_json, analyzed_flow_text, capture_trace_json,
                                    capture_trace_text, flow_row)
    from probe.render.report import SCHEMA, packet_table

    spool, text_spool, table, codes = _Spool(), _Spool(), FlowsTable(_Spool()), set()
    verbose, paint = outputs.verbose, outputs.paint
    reported = _ReportFlows(verbose) if outputs.report_handle is not None else None
    rows = []  # the report's flows table (only with --report)
    packets_writer = judged_packets_writer() if outputs.document is not None else None

    def texts_of(result) -> tuple[str | None, str | None]:
        """What the flow adds besides its row: its JSON for the document, and its text (not clean, or -v)."""
        document = analyzed_flow_text(result, packets_writer) if outputs.document is not None else None
        if not outputs.text or not (verbose or result.analysis.verdict != "clean"):
            return document, None
        row = flow_row(result)
        if outputs.quiet:
            return document, outputs.verdict_line(row[0], row[1], result.analysis.verdict, result.analysis.direction)
        return document, (f"{row[0]} -> {row[1]} (captured at the {result.flow.vantage}: {result.vantage.evidence})\n"
                          f"{packet_table(result.packets, result.flow, result.analysis, verbose=verbose, paint=paint)}"
                          f"\nverdict: {paint.verdict(result.analysis.verdict)}  "
                          f"direction: {result.analysis.direction or '-'}\n"
                          f"{result.analysis.explanation}\n"
                          + (f"{step}\n" if (step := _next_step(result.analysis)) else ""))

    def prepare(result):
        """`texts_of`, in the worker that judged the flow; not for a trace's flows (judged again at the end)."""
        return None if is_trace_probe(result) else texts_of(result)

    def render(result) -> None:
        start = result.start
        codes.add(exit_code_for(result.analysis.verdict, result.analysis.hop))  # the worst is all that counts
        row = flow_row(result)
        table.add(start, row)
        if reported is not None:
            rows.append((start, row))
            reported.add(start, result.analysis.verdict, lambda: analyzed_flow_json(result))
        document, text = result.prepared if result.prepared is not None else texts_of(result)
        if document is not None:
            spool.add(start, document)
        if text is not None:
            text_spool.add(start, text)

    clean_code = exit_code_for("clean", None)

    def render_summary(summary) -> None:
        """`render` of an ordinary flow (`probe.files.flows.Summary`): its row and, when the document
        is written, its recipe (`flows.ordinary_recipe`, already `put` in the spool: its text is
        written from it at the end, `_write_joined`) are all it adds (only asked for when nothing
        prints its packets), and it is never a trace's."""
        codes.add(clean_code)
        if outputs.text:
            table.add_clean(summary.start, f"{summary.client}:{summary.client_port}",
                            f"{summary.server}:{summary.server_port}", summary.packet_count)
        if summary.recipe is not None:
            spool.add_recipe(summary.start, summary.recipe)

    from probe.files.traced import TraceCollector, control_fates, is_trace_probe

    control_traces = control_fates(control) if control is not None else None
    collector = TraceCollector(render)
    # the table and the exit code need no more of an ordinary flow than its verdict (`probe.files.ordinary`)
    summarise = not (outputs.document or verbose or reported is not None)
    # the document needs an ordinary flow's packets, origins and evidence: written without the
    # engine, from a recipe, when the compiled writer is there (`probe.files.flows.texts_of_recipes`)
    recipes = outputs.document is not None and not verbose and reported is None and writes_ordinary_json()
    workers = _workers(path)
    writers = _Writers.start(outputs.document, workers, spool) if recipes else None  # forked while this is small
    try:
        with _progress_bar(path, outputs.quiet) as progress:
            totals = analyze_stream(path, wanted, collector.add, progress=progress, summarise=summarise,
                                    workers=workers, prepare=prepare if reported is None else None,
                                    on_summary=render_summary if summarise or recipes else None,
                                    recipes=spool.put if recipes else None)
        traces = collector.finish(control_traces, control)
        if not codes:
            raise ProbeError(_no_flows(path, totals))
        if reported is not None:
            write_report(outputs.report_handle, reported.document(
                {"schema": SCHEMA, "command": "analyze", "file": path}, rows, [capture_trace_json(t) for t in traces]))
        if outputs.document is not None:
            write = outputs.document.write  # flow by flow: the whole document may not fit in memory
            write('{"schema": %s, "command": "analyze", "file": %s, "flows": [\n' % (json.dumps(SCHEMA), json.dumps(path)))
            _write_joined(spool, outputs.document, writers)
            write('\n], "traces": %s, "totals": %s}\n' % (json.dumps([capture_trace_json(t) for t in traces], indent=2),
                                                           json.dumps(vars(totals))))
            outputs.close()
        if outputs.text:
            for text in text_spool.texts():
                print(text)
            if not outputs.quiet:
                lines = table.lines()  # a few thousand lines at a time: ten million flows make a big table
                while chunk := list(itertools.islice(lines, 4096)):
                    sys.stdout.write("\n".join(chunk) + "\n")
                for trace in traces:
                    print("\n" + capture_trace_text(trace))
        _say_warnings(totals.warnings)
        if outputs.text and not outputs.quiet:
            _say_totals(totals)
        return worst(codes)
    finally:
        if writers is not None:
            writers.close()


PROGRESS_FROM = 64 << 20  # bytes: a capture read in a few seconds needs no progress bar
PARALLEL_FROM = 8 << 20  # bytes: below, starting worker processes costs more than they save


def _workers(path: str) -> int:
    """Processes that run the engine beside the reader (`analyze.Judges`): one per core for a big
    capture, none for a small one or on one core; `PROBE_WORKERS=N` sets it."""
    import os

    chosen = os.environ.get("PROBE_WORKERS", "")
    if chosen.isdigit():
        return int(chosen)
    try:
        size = os.path.getsize(path)
    except OSError:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if size >= PARALLEL_FROM and cores > 1 else 0


@contextmanager
def _progress_bar(path: str, quiet: bool = False):
    """A progress bar on stderr (bytes read of the file's size) when stderr is a terminal and the
    file is large (and not -q); yields the callback for `analyze_stream`, or None."""
    import os
    import sys

    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    if quiet or size < PROGRESS_FROM or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=os.path.basename(path),
              file=sys.stderr, leave=False) as bar:
        yield lambda done, _size: bar.update(done - bar.n)


def _analyze_two(first: str, second: str, wanted, outputs: _Outputs) -> int:
    """FILE and FILE2 hold the two ends of the same traffic (either order): pair and compare. Each
    file's judged flows wait on disk; pairs are loaded one at a time (`probe.files.pair`)."""
    import sys

    from probe.files.pair import compare, estimate_clock, load_pairs, pair_keys, spool_capture, with_proof
    from probe.render.flows import analyzed_flow_json, paired_flow_json
    from probe.render.report import SCHEMA

    spooled, warnings = {}, []
    for path in (first, second):
        spool, totals = spool_capture(path, wanted)
        if not len(spool):
            raise ProbeError(_no_flows(path, totals))
        spooled[path] = spool
        warnings += totals.warnings
    by_side = {path: sum(1 if key.vantage == "client" else -1 for key in spool.keys) for path, spool in spooled.items()}
    client_file = max(by_side, key=lambda path: by_side[path])
    server_file = second if client_file == first else first
    if client_file == server_file or by_side[client_file] <= 0 <= by_side[server_file] and \
            by_side[client_file] == by_side[server_file]:
        say("probe: cannot tell which capture is the client's: taking FILE as the client's")
        client_file, server_file = first, second
    client, server = spooled[client_file], spooled[server_file]
    matches = pair_keys(client.keys, server.keys)
    if not matches:
        raise ProbeError(f"no flow of {client_file} is also in {server_file}: they do not hold the same traffic")
    offset, one_way = estimate_clock(load_pairs(client, server, matches))
    codes = []

    def judged():
        for pair in load_pairs(client, server, matches):
            pair = compare(pair, offset, one_way)
            client_side, server_side, verdict, direction, explanation = with_proof(pair)
            codes.append(exit_code_for(verdict, client_side.analysis.hop))
            yield pair, client_side, server_side, verdict, direction, explanation

    paired = {i for i, _j, _how in matches}
    alone = (n for n in range(len(client)) if n not in paired)
    head = {"schema": SCHEMA, "command": "analyze", "files": {"client": client_file, "server": server_file}}
    passes = [name for name, wanted in (("report", outputs.report_handle is not None),
                                        ("document", outputs.document is not None), ("text", outputs.text)) if wanted]
    for name in passes:  # each output judges the pairs again: they are loaded one at a time, never all kept
        codes.clear()
        if name == "report":
            reported = _ReportFlows(outputs.verbose)
            for item in judged():
                reported.add(item[1].start, item[3], lambda: paired_flow_json(*item))
            write_report(outputs.report_handle, reported.document(head, [], []))
        elif name == "document":
            _write_json_document(head, {"flows": (paired_flow_json(*item) for item in judged()),
                                        "unpaired": (analyzed_flow_json(client.load(n)) for n in alone)},
                                 outputs.document)
            outputs.close()
        elif outputs.quiet:
            for item in judged():
                if outputs.verbose or item[3] != "clean":
                    print(outputs.verdict_line(f"{item[1].flow.client}:{item[1].flow.client_port}",
                                               f"{item[1].flow.server}:{item[1].flow.server_port}", item[3], item[4]))
        else:
            for n, item in enumerate(judged()):
                sys.stdout.write(("\n\n" if n else "")
                                 + _pair_text(*item, client_file, server_file, outputs.verbose, outputs.paint))
            sys.stdout.write("\n")
    if outputs.text and not outputs.quiet:
        if len(client) > len(matches):
            say(f"{len(client) - len(matches)} flow(s) of {client_file} have no counterpart in {server_file}")
    _say_warnings(warnings)
    return worst(codes)


def _pair_text(pair, client_side, server_side, verdict, direction, explanation, client_file: str,
               server_file: str, verbose: bool, paint: Paint = PLAIN) -> str:
    """One pair for people: both packet tables, what is missing at either end, the verdict."""
    from probe.render.report import packet_table

    offset = "unknown" if pair.offset is None else f"{pair.offset * 1000:+.1f} ms"
    head = (f"{client_side.flow.client}:{client_side.flow.client_port} -> {client_side.flow.server}:"
            f"{client_side.flow.server_port}, paired by {pair.matched_by}; server clock {offset}")
    if not (verbose or verdict != "clean" or pair.missing):
        return head + f"\nverdict: {paint.verdict(verdict)}"
    lines = [head,
             f"at the client ({client_file}):", packet_table(client_side.packets, client_side.flow,
                                                             client_side.analysis, verbose=verbose, paint=paint),
             f"at the server ({server_file}):", packet_table(server_side.packets, server_side.flow,
                                                             server_side.analysis, verbose=verbose, paint=paint)]
    lines += [paint(f"FORGED: {m.sentence}", "forged") for m in pair.missing if m.kind == "forged"]
    lines += [f"NEVER ARRIVED: {m.sentence}" for m in pair.missing if m.kind == "never-arrived"]
    lines.append(f"verdict: {paint.verdict(verdict)}  direction: {direction or '-'}")
    step = _next_step(client_side.analysis, verdict, direction)
    if step:
        lines.append(step)
    return "\n".join(lines)


def _next_step(analysis, verdict: str | None = None, direction: str | None = None) -> str | None:
    from probe.render.advice import next_step

    return next_step(verdict or analysis.verdict, direction or analysis.direction, analysis.hop, command="analyze")


def _write_joined(spool: _Spool, document, writers: "_Writers | None" = None) -> None:
    """The spool's texts into `document`, in start order, joined by ",\n", its recipes (ordinary
    flows) written as their texts on the way (`_texts_of_recipes`). They go in parts (`_parts`);
    with `writers` (`_Writers.start`, for this document) and recipes in the spool, the writers'
    processes write them, each part's texts made while the parts before it are written, and
    written to the file in its turn: the whole read is over, so every core is free for them, and
    no text is copied through this process."""
    pieces = _Pieces(document)  # what `document` holds in its buffer goes to the file first
    if writers is None or not spool.recipes:
        for n, part in enumerate(_parts(spool, copy=False)):
            _write_part(pieces, spool.file.fileno(), n, part)
        return
    for part in _parts(spool, copy=True):
        writers.write(part)
    writers.finish()


def _parts(spool: _Spool, copy: bool):
    """The spool's texts and recipes in start order, in lists of `PART_TEXTS` texts (or recipes, each
    as its place in the spool's file: (offset, length)) or `PART_BYTES` bytes of text; a long text
    is a `_Spool.Stored`, where it is. A text is a view of what `chunks` read, or with `copy` its
    bytes (for another process)."""
    part, size = [], 0
    for data in spool.chunks(stored=True):
        if type(data) is tuple:  # a recipe
            part.append(data)
            size += data[1] * 4  # about the size of its text
        elif type(data) is _Spool.Stored:
            part.append(data)
        else:
            part.append(bytes(data) if copy else data)
            size += len(data)
        if len(part) >= PART_TEXTS or size >= PART_BYTES:
            yield part
            part, size = [], 0
    if part:
        yield part


PART_TEXTS, PART_BYTES = 256, 1 << 20


def _write_part(pieces: _Pieces, spool: int, n: int, part: list, turn=None) -> None:
    """Part `n` of the document's flows (`_parts`) into `pieces`, after a ",\n" unless it is the first:
    its recipes read from the spool's file (descriptor `spool`) and written as their texts
    (`_texts_of_recipes`). With `turn` (`_Writers`), the texts are made first, then written once
    `turn(n)` returns (every part before it is written); `turn(n + 1)` then passes the turn on,
    whatever happened."""
    taken = False
    try:
        texts = [b"" if n == 0 else b",\n"]
        recipes = [item for item in part if type(item) is tuple]
        made = iter(_texts_of_recipes(spool, recipes) if recipes else ())
        for item in part:
            if len(texts) > 1:
                texts.append(b",\n")
            texts.append(next(made) if type(item) is tuple else item)
        if turn is not None:
            turn(n)
            taken = True
        batch = []
        for text in texts:
            if type(text) is _Spool.Stored:
                pieces.write(batch)
                batch = []
                pieces.copy(text)
            else:
                batch.append(text)
        pieces.write(batch)
    finally:
        if turn is not None:
            if not taken:  # nothing to write (it failed): the parts before it still go first
                turn(n)
            turn(n + 1)


def _texts_of_recipes(spool: int, places: list[tuple[int, int]]) -> list[bytes]:
    """Ordinary flows' `--json` texts from their recipes (`flows.texts_of_recipes`), at `places`
    (offset, length) of the file `spool` (read at once when they are close together, as they
    mostly are): a flow the compiled writer leaves to the engine is written as `_analyze_one`'s
    `texts_of` writes every judged flow."""
    from probe.files.flows import judged_packets_writer, texts_of_recipes
    from probe.render.flows import analyzed_flow_text

    first = min(offset for offset, _length in places)
    end = max(offset + length for offset, length in places)
    if end - first <= 2 * sum(length for _offset, length in places):
        span = memoryview(os.pread(spool, end - first, first))
        recipes = [span[offset - first:offset - first + length] for offset, length in places]
    else:
        recipes = [os.pread(spool, length, offset) for offset, length in places]
    packets_writer = judged_packets_writer()
    return [text if type(text) is bytes else analyzed_flow_text(text, packets_writer).encode()
            for text in texts_of_recipes(recipes)]


class _Writers:
    """A pool of forked processes writing a document's parts (`_write_part`) to the file
    `descriptor` they share with this one, in order: a part's texts are made at once, and written
    when the part before it is (the shared `turn`: the number of the part to write next). Parts go
    to the pool in order and its processes take them in order, so the part a process waits for is
    always being made by another. At most `OUT` parts per process are out at a time."""

    OUT = 3

    def __init__(self, workers: int, descriptor: int, spool: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("fork")
        _WRITERS["turn"], _WRITERS["changed"] = context.Value("q", 0, lock=False), context.Condition()
        _WRITERS["descriptor"], _WRITERS["spool"] = descriptor, spool
        self.workers, self.out, self.parts = workers, [], 0
        self.pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_deaf_to_interrupts,
                                        initargs=(os.getpid(),))
        self.pool.submit(int).result()  # fork them now, while this process holds little

    @classmethod
    def start(cls, document, workers: int, spool: _Spool) -> "_Writers | None":
        """Writers for `document` (`_write_joined`), from `spool`'s file: None without workers, or
        when no file is under `document` (a test's capture: the texts then go through it)."""
        pieces = _Pieces(document) if workers > 0 else None
        if pieces is None or pieces.descriptor is None:
            return None
        return cls(workers, pieces.descriptor, spool.file.fileno())

    def write(self, part: list) -> None:
        self.out.append(self.pool.submit(_write_part_in_turn, self.parts, part))
        self.parts += 1
        while len(self.out) > self.OUT * self.workers or self.out and self.out[0].done():
            self.out.pop(0).result()

    def finish(self) -> None:
        """Wait for every part to be written (raising what a writer raised)."""
        while self.out:
            self.out.pop(0).result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        _WRITERS.clear()


_WRITERS: dict = {}  # what `_Writers`' processes inherit: the turn, its condition, the two files


def _deaf_to_interrupts(parent: int) -> None:
    """In a `_Writers` process: ^C (or SIGTERM to the whole group) is for the reader, which stops
    handing out parts; a writer interrupted while it waits for its turn would leave the parts after
    it waiting for ever. It finishes the few parts it was given (the pool stops once they are done).
    A reader killed outright takes its writers with it (`flows.die_with_parent`)."""
    import signal

    from probe.files.flows import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(parent)


def _write_part_in_turn(n: int, part: list) -> None:
    """`_write_part` in a `_Writers` process, to the document's file, in the part's turn."""
    turn, changed = _WRITERS["turn"], _WRITERS["changed"]

    def wait_or_pass(number: int) -> None:
        with changed:
            if number == n:
                changed.wait_for(lambda: turn.value == n)
            else:
                turn.value = number
                changed.notify_all()

    _write_part(_Pieces.of_descriptor(_WRITERS["descriptor"]), _WRITERS["spool"], n, part, wait_or_pass)


def _write_json_document(head: dict, arrays: dict, out) -> None:
    """Print `head` with `arrays` (name -> iterable of dicts) after it, as `json.dumps(..., indent=2)`
    of the whole would, one item at a time: the whole document may not fit in memory."""
    import json

    marks = {name: f"\0{name}" for name in arrays}
    rest = json.dumps({**head, **marks}, indent=2)
    for name, items in arrays.items():
        before, rest = rest.split(json.dumps(marks[name]), 1)
        out.write(before)
        n = -1
        for n, item in enumerate(items):
            text = json.dumps(item, indent=2).replace("\n", "\n    ")
            out.write(("[\n    " if n == 0 else ",\n    ") + text)
        out.write("[]" if n < 0 else "\n  ]")
    out.write(rest + "\n")


def _no_flows(path: str, totals) -> str:
    """Why there is nothing to analyse, in one line (with what the reader said about the file)."""
    if totals.tcp_packets == 0:
        why = f"{path} holds no TCP packets ({_ip_packets(totals)}): nothing to analyse"
    elif totals.filtered_out and not totals.flows:
        why = f"no flow in {path} matches --flow/--host"
    else:
        why = (f"{path} holds no TCP handshake ({totals.tcp_packets} TCP packet(s) of connections that started "
               f"before the capture): nothing to analyse")
    return "; ".join([why, *totals.warnings])


def _ip_packets(totals) -> str:
    return f"{totals.packets} IP packet(s)" + (f", {totals.ipv6_packets} of them IPv6" if totals.ipv6_packets else "")


def _say_warnings(warnings: list[str]) -> None:
    """What the reader said about damaged files: one line each, after the results."""
    for warning in warnings:
        say(f"probe: {warning}")


def _say_totals(totals) -> None:
    say(f"{totals.flows} flow(s) analysed, {_ip_packets(totals)} read"
        + (f"; {totals.without_handshake} TCP packet(s) of connections whose handshake is not in the file were "
           f"skipped" if totals.without_handshake else "")
        + (f"; {totals.late} TCP packet(s) came after their flow was over and judged (late packets of a finished "
           f"flow)" if totals.late else ""))
