"""Presentation only: JSON documents, packet tables and pcap files from finished results."""

from __future__ import annotations

import json

from probe.render.colour import PLAIN, Paint
from probe.engine.model import Analysis, Flow
from probe.record import PacketRecord
from probe.protocol.tls import describe

SCHEMA = "probe/1"
LINKTYPE_RAW = 101  # pcap link type for packets that start at the IP header


def _direction(packet: PacketRecord, flow: Flow) -> str:
    sent = flow.sent_by_client(packet)
    if flow.vantage == "server":
        sent = not sent
    return "sent" if sent else "received"


def packet_json(n: int, packet: PacketRecord, t0: float, flow: Flow, attribution) -> dict:
    item = {"n": n, "dir": _direction(packet, flow), "t_ms": round((packet.t - t0) * 1000, 3),
            "proto": packet.proto, "src": packet.src, "dst": packet.dst, "ttl": packet.ttl,
            "ip_id": packet.ip_id, "df": packet.df, "tos": packet.tos}
    if packet.version == 6:  # no IP-ID outside a fragment header; the flow label instead (RFC 6437)
        item.update({"version": 6, "flow_label": packet.flow_label})
    if packet.proto == "tcp":
        item.update({"sport": packet.sport, "dport": packet.dport, "flags": packet.flags, "seq": packet.seq,
                     "ack": packet.ack, "win": packet.win, "len": packet.length,
                     "options": [[name, _jsonable(value)] for name, value in packet.options]})
        if packet.length:
            item["payload_head"] = packet.payload[:64].decode("latin-1")
            item["info"] = describe(packet.payload)
    elif packet.proto == "icmp":
        item.update({"icmp_type": packet.icmp_type, "icmp_code": packet.icmp_code})
        if packet.quoted is not None:
            q = packet.quoted
            item["quoted"] = {"src": q.src, "dst": q.dst, "proto": q.proto, "ttl": q.ttl, "ip_id": q.ip_id,
                              "tos": q.tos, "sport": q.sport, "dport": q.dport, "seq": q.seq}
            if q.version == 6:
                item["quoted"]["flow_label"] = q.flow_label
    item.update({"origin": attribution.origin, "confidence": attribution.confidence,
                 "evidence": list(attribution.evidence)})
    return item


def _jsonable(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def packets_json(packets: list[PacketRecord], flow: Flow, analysis: Analysis) -> list[dict]:
    t0 = packets[0].t if packets else 0.0
    return [packet_json(n, p, t0, flow, a) for n, (p, a) in enumerate(zip(packets, analysis.attributions), 1)]


def started_at(packets: list[PacketRecord]) -> str | None:
    """When the exchange began (the first packet's kernel timestamp), ISO 8601 in UTC: `t_ms`
    of every packet counts from here, and a log of JSON lines can be read against a clock."""
    if not packets:
        return None
    from datetime import datetime, timezone

    return datetime.fromtimestamp(packets[0].t, timezone.utc).isoformat(timespec="microseconds")


def check_document(target_json: dict, packets: list[PacketRecord], flow: Flow, analysis: Analysis,
                   command: str = "check", extra: dict | None = None) -> dict:
    from probe import __version__

    document = {"schema": SCHEMA, "command": command, "version": __version__, "target": target_json,
                "started_at": started_at(packets),
                "verdict": analysis.verdict, "direction": analysis.direction, "hop": analysis.hop,
                "hop_basis": analysis.hop_basis or None, "rtt_ms": analysis.rtt_ms,
                "client": {"address": flow.client, "port": flow.client_port},
                "packets": packets_json(packets, flow, analysis), "explanation": analysis.explanation,
                # issue 16: null until a residual watch or a trace fills them in (`extra`)
                "residual_blocking": None, "multipath": None}
    document.update(extra or {})
    document["next_step"] = next_step_of(document)
    return document


def next_step_of(document: dict) -> str | None:
    """The document's `next_step` (`probe.render.advice`): who to call, from the verdict and the hop."""
    from probe.render.advice import next_step

    address = next((hop["address"] for hop in document.get("hops") or [] if hop["ttl"] == document.get("hop")), None)
    return next_step(document["verdict"], document.get("direction"), document.get("hop"), address,
                     document.get("command") or "analyze")


def finish_document(document: dict, started: float, exit_code: int) -> dict:
    """What a cron job logs beside the verdict: how long the command took and how it exited."""
    import time

    document["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
    document["exit_code"] = exit_code
    return document


def application_sections(application) -> dict:
    """The `http` section (what the response said) and, over TLS, the `tls` section (what the
    handshake and the certificate showed), from what rode on the connection."""
    if application is None:
        return {}
    http = getattr(application, "http", application)
    sections = {"http": http.report()}
    if http is not application:
        sections["tls"] = application.report()
    return sections


def tls_sentence(tls: dict) -> str | None:
    """One sentence on the TLS facts, for the people reading the explanation."""
    if tls["handshake"] == "failed":
        return f"The TLS handshake failed: {tls['error']}."
    if tls["handshake"] != "complete":
        return "The TLS handshake did not complete."
    head = f"TLS {tls['version'].removeprefix('TLSv')} with {tls['cipher']}"
    if tls["verified"]:
        return f"{head}; the certificate is valid for {tls['sni'] or 'the host'}."
    return f"{head}; the certificate does not validate: {'; '.join(tls['verify_problems'])}."


def locate_json(location, tcp_sweep, echo_sweep) -> dict:
    """The `locate` section of a check document: the conclusion and every probe of both sweeps."""
    from dataclasses import asdict

    return {"tcp_answer_at": location.tcp_answer_at, "address_at": location.address_at,
            "in_front": location.in_front, "hop": location.hop, "evidence": list(location.evidence),
            "tcp": [asdict(reply) for reply in tcp_sweep], "echo": [asdict(reply) for reply in echo_sweep]}


def dumps(document: dict) -> str:
    return json.dumps(document, indent=2)


def _relative(value: int, base: int | None) -> int:
    return (value - base) % (1 << 32) if base is not None else value


def window_scales(segments) -> tuple[int, int] | None:
    """(client's shift, server's shift) when both SYNs carried a window scale option (RFC 7323 2.2:
    else neither side scales), from (sent by the client, flags, options) of each TCP segment."""
    scales = {}
    for from_client, flags, options in segments:
        if "S" in flags and from_client not in scales:
            scales[from_client] = next((int(value) for name, value in options if name == "WScale"), None)
        if len(scales) == 2:
            break
    if scales.get(True) is None or scales.get(False) is None:
        return None
    return min(scales[True], 14), min(scales[False], 14)  # RFC 7323 2.3: a shift above 14 is taken as 14


def scaled_window(win: int, flags: str, from_client: bool, scales: tuple[int, int] | None) -> int:
    """The window a segment offers, as tshark's "calculated window size". A SYN's is never scaled;
    nor, here, is a reset's: it offers nothing (RFC 9293 3.10.7), and an injector's raw value (ours
    copied, a constant) is what the evidence quotes."""
    if scales is None or "S" in flags or "R" in flags:
        return win
    return win << (scales[0] if from_client else scales[1])


WIDE_TABLE = 160  # columns from which the packet table keeps evidence in a column of its own
EVIDENCE_INDENT = " " * 8  # below that, each packet's evidence under its row
SHORT_EVIDENCE = 3  # sentences of evidence per packet without -v


def terminal_width() -> int:
    """`COLUMNS`, else the terminal's width, else 80 (as ls and tshark decide it)."""
    import shutil

    return shutil.get_terminal_size((80, 24)).columns


def packet_table(packets: list[PacketRecord], flow: Flow, analysis: Analysis, width: int | None = None,
                 verbose: bool = False, paint: Paint = PLAIN) -> str:
    """A Wireshark-like table: relative sequence numbers, what each packet carries, who sent it.

    Laid out for `width` columns (default: the terminal's). From WIDE_TABLE columns on, the
    evidence is a column with one sentence per line; below, each packet is one line (cut at
    the width) and its evidence follows it, indented, as tcpdump -v puts details under a packet:
    the first SHORT_EVIDENCE sentences (the decisive ones come first), all of them if `verbose`.
    The rows of forged packets are painted (`probe.render.colour`), evidence included."""
    from probe.render.table import simple_table  # tabulate's layout, fast enough for a flow of thousands of packets

    width = width or terminal_width()
    wide = width >= WIDE_TABLE
    our_isn = next((p.seq for p in packets if flow.sent_by_client(p) and "S" in p.flags), None)
    their_isn = next((p.seq for p in packets if flow.toward_client(p) and "S" in p.flags), None)
    t0 = packets[0].t if packets else 0.0
    scales = window_scales((flow.sent_by_client(p), p.flags, p.options) for p in packets if p.proto == "tcp")
    rows, evidence_lines = [], []
    for n, (packet, attribution) in enumerate(zip(packets, analysis.attributions), 1):
        mine = flow.sent_by_client(packet)
        arrow = "->" if mine else "<-"
        if packet.proto == "tcp":
            seq_base, ack_base = (our_isn, their_isn) if mine else (their_isn, our_isn)
            seq = _relative(packet.seq, seq_base)
            ack = _relative(packet.ack, ack_base) if "A" in packet.flags else ""
            flags, win, length = packet.flags, scaled_window(packet.win, packet.flags, mine, scales), packet.length
            info = describe(packet.payload) if packet.length else ""
        else:
            seq = ack = win = ""
            flags, length = f"icmp {packet.icmp_type}/{packet.icmp_code}", packet.ip_len
            info = "" if wide else f"from {packet.src}"
        confident = attribution.origin in ("self", "server") or attribution.confidence == "high"
        if wide:
            origin = attribution.origin if confident else f"{attribution.origin} ({attribution.confidence})"
            evidence = "\n".join(_wrap(sentence, 70) for sentence in attribution.evidence)
            rows.append([n, f"{(packet.t - t0) * 1000:.2f}", arrow, packet.src if not mine else "", packet.ttl,
                         packet.ip_id, flags, seq, ack, win, length, _wrap(info, 24), origin, evidence])
        else:
            origin = attribution.origin if confident else f"{attribution.origin}?"
            rows.append([n, f"{(packet.t - t0) * 1000:.1f}", arrow, packet.ttl, packet.ip_id, flags, seq, ack, win,
                         length, origin, info])
            shown = attribution.evidence if verbose else attribution.evidence[:SHORT_EVIDENCE]
            more = len(attribution.evidence) - len(shown)
            evidence_lines.append([line for sentence in shown
                                   for line in _wrap(sentence, max(width - len(EVIDENCE_INDENT), 30)).splitlines()]
                                  + ([f"(and {more} more: -v)"] if more else []))
    if wide:
        headers = ["#", "ms", "dir", "from", "ttl", "ip-id", "flags", "seq", "ack", "win", "len", "info", "origin",
                   "evidence"]
        forged = {i for i, attribution in enumerate(analysis.attributions) if attribution.origin == "middlebox"}
        return simple_table(rows, headers, style_row=(lambda i, line: paint(line, "forged") if i in forged else line)
                            if forged and paint.enabled else None)
    headers = ["#", "ms", "dir", "ttl", "ip-id", "flags", "seq", "ack", "win", "len", "origin", "info"]
    lines = _compact(rows, headers, left={"dir", "flags", "origin", "info"})
    out = [_cut(lines[0], width)]
    for line, evidence, attribution in zip(lines[1:], evidence_lines, analysis.attributions):
        role = "forged" if attribution.origin == "middlebox" else None
        out.append(paint(_cut(line, width), role) if role else _cut(line, width))
        out.extend(paint(EVIDENCE_INDENT + sentence, role) if role else EVIDENCE_INDENT + sentence
                   for sentence in evidence)
    return "\n".join(out)


def _compact(rows: list[list], headers: list[str], left: set[str]) -> list[str]:
    """Columns one space apart, numbers to the right, words to the left: the header line, then
    one line per row (mtr's and ss's density, where tabulate pads every column by two)."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)]

    def line(values):
        return " ".join(value.ljust(w) if header in left else value.rjust(w)
                        for value, w, header in zip(values, widths, headers))

    return [line(headers)] + [line(row) for row in cells]


def _cut(line: str, width: int) -> str:
    line = line.rstrip()
    return line if len(line) <= width else line[:width - 3] + "..."


def _wrap(text: str, width: int) -> str:
    """`"\n".join(textwrap.wrap(text, width)) or text`, the same lines. Most evidence sentences
    are plain words one space apart; textwrap's regular expressions took a third of the time of
    the packet tables of a big capture's forged flows, so those are packed here the greedy way
    textwrap packs them (a word joins the line while line, space and word fit in `width`)."""
    if len(text) <= width and text.isprintable() and text == text.strip():
        return text  # what textwrap makes of it (most evidence sentences), without its regular expressions
    if text and text.isascii() and text.isprintable() and "-" not in text and "  " not in text \
            and text == text.strip():  # no hyphen or em-dash to break at, no run of spaces, no tab
        words = text.split(" ")
        if max(map(len, words)) <= width:  # else textwrap breaks the long word
            lines, line = [], words[0]
            for word in words[1:]:
                if len(line) + 1 + len(word) <= width:
                    line += " " + word
                else:
                    lines.append(line)
                    line = word
            lines.append(line)
            return "\n".join(lines)
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def summary_lines(document: dict, paint: Paint = PLAIN) -> str:
    """The verdict line, the explanation, and over TLS what the handshake showed."""
    lines = [verdict_line(document, paint), document["explanation"]]
    if document.get("tls"):
        lines.append(tls_sentence(document["tls"]))
    if document.get("next_step"):
        lines.append(document["next_step"])
    return "\n".join(lines)


def verdict_line(document: dict, paint: Paint = PLAIN) -> str:
    """`verdict: ...  direction: ...  hop: ...  rtt: ...  http: ...`, what -q prints."""
    hop = document.get("hop")
    parts = [f"verdict: {paint.verdict(document['verdict'])}"]
    if document.get("direction"):
        parts.append(f"direction: {document['direction']}")
    if hop is not None:
        parts.append(paint(f"hop: {hop}", "hop"))
    if document.get("rtt_ms") is not None:
        parts.append(f"rtt: {document['rtt_ms']:.1f} ms")
    if (document.get("http") or {}).get("status") is not None:  # what curl -I shows first
        parts.append(f"http: {document['http']['status']} {document['http']['reason'] or ''}".rstrip())
    return "  ".join(parts)


def write_pcap(path: str, frames) -> None:
    """Raw-IP pcap with nanosecond kernel timestamps (tcpdump and Wireshark read it)."""
    import dpkt

    with open(path, "wb") as handle:
        writer = dpkt.pcap.Writer(handle, snaplen=65535, linktype=LINKTYPE_RAW, nano=True)
        for frame in frames:
            writer.writepkt(frame.data, ts=frame.t)


def _fate_json(fate) -> dict:
    item = {"fate": fate.word}
    for key in ("router", "rtt_ms", "reply_src", "reply_ttl"):
        if getattr(fate, key) is not None:
            item[key] = getattr(fate, key)
    if fate.rewritten:
        item["rewritten"] = list(fate.rewritten)
    return item


def hop_json(row) -> dict:
    """One hop of the `hops` section (a `probe.engine.trace.HopRow`)."""
    return {"ttl": row.ttl, "address": row.address, "rtt_ms": row.rtt_ms, "trigger": row.trigger.word,
            "control": row.control.word, "confirmed": row.confirmed,
            "details": {"trigger": _fate_json(row.trigger), "control": _fate_json(row.control)}}


def trace_json(rows, result, trigger: str, control: str) -> dict:
    """The `hops` and `bracket` sections (contract), with each hop's details under `trace`."""
    hops = [hop_json(row) for row in rows]
    bracket = {"passed": result.bracket[0], "not_reached": result.bracket[1]} if result.bracket else None
    return {"hops": hops, "bracket": bracket,
            "trace": {"trigger": trigger, "control": control, "interference": result.interference,
                      "hop": result.hop, "kind": result.kind, "reached_server_at": result.reached_server_at,
                      "evidence": list(result.evidence)}}


HOPS_HEADER = f"{'ttl':>3}  {'router':<39} {'ms':>7}  {'trigger':<20} {'control':<20} notes"


def hop_line(hop: dict, paint: Paint = PLAIN, box_hop: int | None = None) -> str:
    """One hop of a trace, in fixed columns (as mtr prints them, so that each line can be printed
    as soon as its hop is learned, and the lines still align); painted as the box's hop when it is
    `box_hop`, or, while that is not known yet, when the trigger's fate differs from the control's."""
    notes = [*hop["details"]["trigger"].get("rewritten", []), *hop["details"]["control"].get("rewritten", [])]
    if hop.get("confirmed"):
        notes.insert(0, "difference seen twice")
    ms = "" if hop["rtt_ms"] is None else f"{hop['rtt_ms']:.2f}"
    line = (f"{hop['ttl']:>3}  {hop['address'] or '*':<39} {ms:>7}  {hop['trigger']:<20} {hop['control']:<20} "
            f"{'; '.join(notes)}").rstrip()
    found = hop["ttl"] == box_hop if box_hop is not None else hop["trigger"] != hop["control"]
    return paint(line, "hop") if found else line


def hops_table(hops: list[dict], paint: Paint = PLAIN, box_hop: int | None = None) -> str:
    """The hop table of a trace, for people (the box's row painted)."""
    return "\n".join([HOPS_HEADER] + [hop_line(hop, paint, box_hop if box_hop is not None else -1) for hop in hops])



# -- check --both-families ---------------------------------------------------------------------------

COMPARED = ("verdict", "direction", "hop")  # what must agree for two families to say the same


def unmeasured_document(target, family: str, error: str) -> dict:
    """One family's entry when it could not be probed (no address of that family, no route)."""
    return {"schema": SCHEMA, "command": "check",
            "target": {"url": target.url, "host": target.host, "address": None, "port": target.port,
                       "family": family},
            "verdict": None, "direction": None, "hop": None, "rtt_ms": None, "packets": [], "error": error,
            "explanation": f"not measured over {_family_word(family)}: {error}", "exit_code": 1,
            "next_step": None, "residual_blocking": None, "multipath": None}


def _family_word(family: str | None) -> str:
    return {"ipv4": "IPv4", "ipv6": "IPv6"}.get(family or "", "?")


def _said(document: dict) -> str:
    if document["verdict"] is None:
        return "not measured"
    details = [document["direction"]] if document.get("direction") else []
    if document.get("hop") is not None:
        details.append(f"hop {document['hop']}")
    return document["verdict"] + (f" ({', '.join(details)})" if details else "")


def both_families_document(documents: list[dict], exit_code: int) -> dict:
    """`check --both-families --json`: each family's own check document under `families`, in
    probing order, and what the two say together: `differ` (verdict, direction or hop not the
    same), `differences` (which of those), and `verdict`, the verdict of the family whose exit
    code is the worse (the one a monitor should see)."""
    first = documents[0]["target"]
    differences = [key for key in COMPARED if len({json.dumps(d.get(key)) for d in documents}) > 1]
    from probe.outcome import SEVERITY, exit_status

    def rank(document: dict) -> int:
        code = 1 if document["verdict"] is None else exit_status(document["verdict"], document.get("hop"))
        return SEVERITY.index(code)

    worst_document = max(documents, key=rank)
    said = "; ".join(f"over {_family_word(d['target'].get('family'))} {_said(d)}" for d in documents)
    if differences:
        explanation = f"The families differ ({', '.join(differences)}): {said}."
    else:
        explanation = f"Both families say the same: {said}."
    return {"schema": SCHEMA, "command": "check",
            "target": {"url": first["url"], "host": first["host"], "port": first["port"]},
            "families": documents, "differ": bool(differences), "differences": differences,
            "verdict": worst_document["verdict"], "explanation": explanation}


def both_families_table(document: dict) -> str:
    """The comparison that ends `check --both-families`: one row per family, then the sentence."""
    from tabulate import tabulate

    rows = []
    for one in document["families"]:
        http = one.get("http") or {}
        rows.append([_family_word(one["target"].get("family")), one["target"].get("address") or "-",
                     one["verdict"] or "not measured", one.get("direction") or "-",
                     "-" if one.get("hop") is None else one["hop"],
                     "-" if one.get("rtt_ms") is None else f"{one['rtt_ms']:.1f}",
                     f"{http['status']} {http.get('reason') or ''}".rstrip() if http.get("status") else "-"])
    table = tabulate(rows, headers=["family", "address", "verdict", "direction", "hop", "rtt ms", "http"],
                     tablefmt="simple")
    return f"{table}\n{document['explanation']}"
