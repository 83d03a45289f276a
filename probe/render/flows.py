"""Presentation of `probe analyze` results: JSON per flow, the flows table. Decides nothing."""

from __future__ import annotations

import json

from probe.render.table import MIN_PADDING
from probe.render.report import next_step_of, packet_json, packets_json


def analyzed_flow_json(result, packets: bool = True) -> dict:
    """One flow of `probe analyze --json` (a `probe.files.flows.FlowResult`); without `packets`,
    its packets are left for the caller to write (`analyzed_flow_text`)."""
    flow, analysis = result.flow, result.analysis
    item = {"client": {"address": flow.client, "port": flow.client_port},
            "server": {"address": flow.server, "port": flow.server_port},
            "vantage": flow.vantage, "vantage_evidence": result.vantage.evidence,
            "start": result.packets[0].t if result.packets else None,
            "verdict": analysis.verdict, "direction": analysis.direction, "hop": analysis.hop,
            "rtt_ms": analysis.rtt_ms,
            "packets": packets_json(result.packets, flow, analysis) if packets else None,
            "explanation": analysis.explanation}
    item["next_step"] = next_step_of({**item, "command": "analyze"})
    if result.elided:
        item["elided_packets"] = result.elided
    return item


def analyzed_flow_text(result, packets_text=None) -> str:
    """`flow_json_text(analyzed_flow_json(result))`. `packets_text`, when given, is the compiled writer
    of the packets' array (`probe.files._flowjson.packets_text`): the same text, written in C from
    the records, where building a dict per packet and encoding it took most of `--json`'s time on a
    capture of long flows. `tests/unit/test_flowjson.py` holds the two equal."""
    if packets_text is None or not result.packets or not result.analysis.attributions:
        return flow_json_text(analyzed_flow_json(result))
    flow, packets, attributions = result.flow, result.packets, result.analysis.attributions
    t0 = packets[0].t
    text = packets_text(packets, attributions, flow.client, flow.client_port, flow.server, flow.server_port,
                        flow.vantage == "server", lambda n, packet, attribution: json.dumps(
                            packet_json(n, packet, t0, flow, attribution)))
    return flow_json_text(analyzed_flow_json(result, packets=False), packets_text=text)


def flow_json_text(item: dict, packets_text: str | None = None) -> str:
    """One flow of the `--json` document as text: its fields two spaces in, each packet on one line
    of its own. Python's C encoder (`json.dumps` without an indent) writes every value: with an
    indent, `json` falls back to its encoder in pure Python, three times slower, a quarter of the
    time `analyze --json` took (the same values either way; only the white space differs).
    `packets_text`: the packets' array already written (`analyzed_flow_text`)."""
    dumps = json.dumps
    fields = []
    for key, value in item.items():
        if key == "packets" and packets_text is not None:
            text = packets_text
        elif key == "packets" and value:  # one call for all: a packet's object starts with "n"; inside a
            # string a quote is always escaped, so `}, {"n": ` is found only between two packets
            text = "[\n    " + dumps(value)[1:-1].replace('}, {"n": ', '},\n    {"n": ') + "\n  ]"
        else:
            text = dumps(value)
        fields.append(f"  {dumps(key)}: {text}")
    return "{\n" + ",\n".join(fields) + "\n}" if fields else "{}"


def flow_row(result) -> list:
    """The table row of one analysed flow: client, server, packets, verdict, direction."""
    flow, analysis = result.flow, result.analysis
    return [f"{flow.client}:{flow.client_port}", f"{flow.server}:{flow.server_port}",
            result.packet_count, analysis.verdict, analysis.direction or "-", flow.vantage]


FLOWS_HEADERS = ["client", "server", "packets", "verdict", "direction", "captured at"]


def flows_table(rows: list[list]) -> str:
    from probe.render.table import simple_table  # tabulate's layout, fast enough for a million flows

    return simple_table(rows, FLOWS_HEADERS)


class FlowsTable:
    """`flows_table` of rows that come one by one, in any order: the same text, rows in the order
    of their start times (ties in the order they came), without holding the rows in memory. Each
    row waits in `spool` (`add(start, text)`, then `texts()` in that order: the command's spool on
    disk) while the widths and tabulate's column types are followed as they come, as
    `layout.simple_table` works them out; rows `simple_table` would hand to tabulate (not
    `layout._plain`, or a cell of many lines), or columns of other types than the flows table's,
    fall back to `flows_table` over all the rows at the end."""

    KINDS = (str, str, int, str, str, str)
    SEPARATOR = "\x1f"

    def __init__(self, spool):
        import tabulate

        self.tab, self.spool = tabulate, spool
        self.widths = [len(header) + MIN_PADDING for header in FLOWS_HEADERS]
        self.kinds: list[type] = [bool] * len(FLOWS_HEADERS)
        self.plain = True
        self.padded = False  # some cell of a "P" row has white space at an end (it is stripped when laid out)

    def add(self, start: float, row: list) -> None:
        simple = len(row) == len(FLOWS_HEADERS) and type(row[2]) is int and all(
            type(cell) is str for cell in (row[0], row[1], row[3], row[4], row[5]))
        text = self.SEPARATOR.join((row[0], row[1], str(row[2]), row[3], row[4], row[5])) if simple else ""
        if simple and text.isascii() and not any(mark in text for mark in ("\x1b", "\r", "\t", "\n")) \
                and text.count(self.SEPARATOR) == len(FLOWS_HEADERS) - 1:
            self.spool.add(start, "P" + text)
            if not self.padded and any(cell != cell.strip() for cell in text.split(self.SEPARATOR)):
                self.padded = True
        else:  # kept whole, and laid out by `flows_table` at the end
            self.spool.add(start, "J" + json.dumps(row))
            self.plain = False
        if not self.plain:
            return
        kinds, widths = self.kinds, self.widths
        for column, cell in enumerate(row):
            kind = kinds[column]
            if kind is not str and not (kind is int and type(cell) is int):  # `layout._column_type`'s way
                kinds[column] = self.tab._more_generic(kind, int if type(cell) is int else
                                                       self.tab._type(cell, False, True))
            width = len(str(cell) if type(cell) is int else cell.strip())
            if width > widths[column]:
                widths[column] = width

    def add_clean(self, start: float, client: str, server: str, packets: int) -> None:
        """`add` of the row of a flow summarised as clean (`probe.files.flows.Summary`): the same text
        in the spool, by a shorter way once every column's type is the flows table's."""
        if not self.plain or self.kinds != self._SETTLED:
            return self.add(start, [client, server, packets, "clean", "-", "client"])
        text = f"{client}\x1f{server}\x1f{packets}\x1fclean\x1f-\x1fclient"
        if not text.isascii() or "\x1b" in text or "\r" in text or "\t" in text or "\n" in text \
                or text.count(self.SEPARATOR) != 5:
            return self.add(start, [client, server, packets, "clean", "-", "client"])
        self.spool.add(start, "P" + text)
        widths, stripped_client, stripped_server = self.widths, client.strip(), server.strip()
        if stripped_client != client or stripped_server != server:
            self.padded = True
        client, server = stripped_client, stripped_server
        if len(client) > widths[0]:
            widths[0] = len(client)
        if len(server) > widths[1]:
            widths[1] = len(server)
        if len(str(packets)) > widths[2]:
            widths[2] = len(str(packets))

    _SETTLED = list(KINDS)

    def _rows(self):
        for text in self.spool.texts():
            if text[0] == "J":
                yield json.loads(text[1:])
            else:
                row = text[1:].split(self.SEPARATOR)
                row[2] = int(row[2])
                yield row

    def lines(self):
        """The table's lines, in the order the flows started."""
        if not self.plain or tuple(self.kinds) != self.KINDS:
            yield from flows_table(list(self._rows())).split("\n")
            return
        right = [kind is int for kind in self.KINDS]
        yield "  ".join(header.rjust(width) if at_right else header.ljust(width)
                        for header, width, at_right in zip(FLOWS_HEADERS, self.widths, right)).rstrip()
        yield "  ".join("-" * width for width in self.widths)
        layout = "  ".join(("{:>%d}" if at_right else "{:<%d}") % width for width, at_right in zip(self.widths, right))
        if not self.padded:  # nothing to strip
            for text in self.spool.texts():
                yield layout.format(*text[1:].split(self.SEPARATOR)).rstrip()
            return
        for text in self.spool.texts():
            yield layout.format(*(cell.strip() for cell in text[1:].split(self.SEPARATOR))).rstrip()


def _missing_json(missing) -> dict:
    return {"captured_at": missing.seen_at, "n": missing.index + 1, "flags": missing.packet.flags,
            "ttl": missing.packet.ttl, "ip_id": missing.packet.ip_id, "len": missing.packet.length,
            "sentence": missing.sentence}


def paired_flow_json(pair, client_side, server_side, verdict, direction, explanation) -> dict:
    """One flow of `probe analyze FILE FILE2 --json`: the client's view, the server's beside it, and
    the packets one end received that the other never sent."""
    item = analyzed_flow_json(client_side)
    item.update({"verdict": verdict, "direction": direction, "explanation": explanation,
                 "paired_by": pair.matched_by,
                 "clock_offset_ms": None if pair.offset is None else round(pair.offset * 1000, 3),
                 "one_way_ms": None if pair.one_way is None else round(pair.one_way * 1000, 3),
                 "forged": [_missing_json(m) for m in pair.missing if m.kind == "forged"],
                 "never_arrived": [_missing_json(m) for m in pair.missing if m.kind == "never-arrived"],
                 "matched": [[client + 1, server + 1] for client, server in pair.matched],
                 "server_side": analyzed_flow_json(server_side)})
    item["next_step"] = next_step_of({**item, "command": "analyze"})
    for key in ("verdict", "direction", "explanation"):
        item["server_side"][f"{key}_alone"] = item["server_side"].pop(key)
    item["server_side"].pop("next_step")
    return item


def capture_trace_json(trace) -> dict:
    """A trace found in a capture (`probe.files.traced.CaptureTrace`): `probe trace`'s `hops`,
    `bracket` and `trace` sections, with the server, the box's hop and the router seen there."""
    from probe.render.report import trace_json

    document = trace_json(trace.rows, trace.result, trigger="the capture's requests",
                          control=trace.control_file or "none (no --control)")
    for hop in document["hops"]:
        hop["confirmed"] = None  # a capture cannot be asked twice: every row is what it is
    return {"server": {"address": trace.server, "port": trace.port}, "hop": trace.result.hop,
            "address": trace.address, **document}


def capture_trace_text(trace) -> str:
    """The hop table of a trace found in a capture, and what it shows."""
    from probe.render.report import hops_table

    document = capture_trace_json(trace)
    result = trace.result
    head = f"trace in the capture toward {trace.server}:{trace.port}" + (
        f", against the control {trace.control_file}" if trace.control_file else "")
    if result.interference:
        routers = {row.ttl: row.address for row in trace.rows}
        where = f"box at hop {result.hop}"
        if result.bracket:
            passed, not_reached = result.bracket
            where += (f", after hop {passed}" + (f" ({routers[passed]})" if routers.get(passed) else "")
                      + f", before hop {not_reached}" + (f" ({routers[not_reached]})" if routers.get(not_reached) else ""))
        if trace.address:
            where += f"; middlebox address (CenTrace's sense) {trace.address}"
    else:
        where = "no hop found"
    return "\n".join([head, hops_table(document["hops"]), f"{where}: " + "; ".join(result.evidence)])
