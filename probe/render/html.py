"""`--report FILE.html`: the JSON document of check, trace or analyze as one self-contained page
for a ticket. Presentation only: it reads the document the CLI already made and decides nothing.

The page fetches nothing (inline CSS, inline SVG, no script, no font, no image file), so it can be
mailed, attached or printed as it is. It holds, for each exchange: the verdict, its direction and
hop, the explanation; a ladder diagram (client, the path in between, server; time downward, one
row per captured packet, forged packets in red); the hop table of a trace; and the packet table
with every evidence sentence. For two captures of the same traffic, the ladder draws each packet
from where it was sent to where it arrived, a packet one end received that the other never sent
from the middle (forged), and a packet that was sent and never arrived ending in the middle.
"""

from __future__ import annotations

from html import escape

LANE = {"client": 170, "middle": 420, "server": 670}  # x of each lane in the ladder
LADDER_WIDTH = 760
ROW = 30  # px between two rows of the ladder (the rows keep time order; the spacing is not to scale)
SLANT = 12  # px an arrow drops from its sender to its receiver
TOP = 64
MAX_FLOWS = 20  # exchanges drawn in one report of `analyze` (the flows table lists the rest)

CSS = """
:root { --forged: #c0121b; --server: #1d5fa8; --self: #333; --path: #b25d00; --muted: #6b6b6b; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #111; background: #fff;
       margin: 24px auto; max-width: 1100px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ccc; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta { color: var(--muted); margin: 0 0 12px; }
.verdict { border: 2px solid #999; border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
.verdict.interference { border-color: var(--forged); background: #fdf0f0; }
.verdict.clean { border-color: #2a7a2a; background: #f0f8f0; }
.verdict .word { font-size: 20px; font-weight: 700; }
.verdict.interference .word { color: var(--forged); }
.verdict .facts { margin-left: 10px; color: #333; }
.explanation p { margin: 4px 0; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 12.5px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; vertical-align: top; }
th { background: #f1f1f1; text-align: left; } td.text { text-align: left; }
tr.forged td { background: #fbe3e3; } tr.forged td.origin { color: var(--forged); font-weight: 700; }
tr.found td { background: #fff1d6; font-weight: 700; }
td ul.evidence { margin: 0; padding-left: 16px; }
.ladder { display: block; max-width: 100%; height: auto; border: 1px solid #ddd; background: #fff; }
.ladder text { font: 11px system-ui, sans-serif; }
.ladder .lane-name { font-weight: 700; font-size: 12px; }
.ladder g.forged text, .ladder g.never-arrived text { font-weight: 700; }
.missing { color: var(--forged); }
.legend { color: var(--muted); font-size: 12px; }
@media print {
  body { margin: 0; max-width: none; font-size: 11pt; }
  h2 { break-after: avoid; } tr, .verdict, svg { break-inside: avoid; }
  .verdict.interference, tr.forged td, tr.found td { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: inherit; text-decoration: none; }
}
"""

FACT_SEPARATOR = "  \u00b7  "
INTERFERENCE = {"middlebox-reset", "middlebox-response"}


def render(document: dict) -> str:
    """The page for one JSON document (`check`, `trace`, or `analyze` of one or two captures)."""
    from probe import __version__

    command = document.get("command") or "check"
    if command == "analyze":
        title, sections = _analyze_sections(document)
    else:
        target = document.get("target") or {}
        title = f"probe {command} {target.get('url', '')}"
        sections = [_exchange_section(document, heading=None)]
    started = document.get("started_at")
    meta = f"probe {escape(document.get('version') or __version__)}" + (
        f" &middot; started {escape(started)}" if started else "")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n<h1>{escape(title)}</h1><p class=\"meta\">{meta}</p>\n"
            + "\n".join(sections) + "\n</body></html>\n")


def write(path: str, document: dict) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render(document))


def _analyze_sections(document: dict) -> tuple[str, list[str]]:
    files = document.get("files")
    if files:
        title = f"probe analyze {files['client']} {files['server']}"
    else:
        title = f"probe analyze {document.get('file', '')}"
    sections = []
    rows = document.get("flow_rows")
    if rows:
        sections.append("<h2>Flows</h2>" + _table(["client", "server", "packets", "verdict", "direction",
                                                   "captured at"], rows, text_columns={0, 1, 3, 4, 5}))
    for n, flow in enumerate(document.get("flows", [])[:MAX_FLOWS], 1):
        client, server = flow["client"], flow["server"]
        heading = f"Flow {n}: {_end(client)} \u2192 {_end(server)}"
        sections.append(_exchange_section(flow, heading, files))
    left = len(document.get("flows", [])) - MAX_FLOWS
    if left > 0:
        sections.append(f"<p class=\"legend\">{left} more flow(s) are in the JSON document, not drawn here.</p>")
    for trace in document.get("traces") or []:
        hop = trace.get("hop")
        head = f"Trace toward {_end(trace['server'])}" + (f": box at hop {hop}" if hop is not None else "")
        sections.append(f"<h2>{escape(head)}</h2>" + _hops_table(trace.get("hops") or [], hop)
                        + _sentences(trace.get("evidence") or (trace.get("trace") or {}).get("evidence") or []))
    return title, sections


def _end(end: dict) -> str:
    address = end.get("address") or "?"
    address = f"[{address}]" if ":" in address else address
    return f"{address}:{end['port']}" if end.get("port") is not None else address


def _exchange_section(flow: dict, heading: str | None, files: dict | None = None) -> str:
    """One exchange: the verdict, the ladder, the hop table, the packet table(s)."""
    parts = ["<section class=\"exchange\">"]
    if heading:
        parts.append(f"<h2>{escape(heading)}</h2>")
    parts.append(_verdict_box(flow))
    server_side = flow.get("server_side")
    parts.append("<h3>Ladder</h3>")
    if server_side is not None:
        parts.append(_two_ended_ladder(flow, server_side))
        parts.append(_missing_list(flow))
    else:
        parts.append(_ladder(flow))
    if flow.get("hops"):
        parts.append("<h3>Hops</h3>" + _hops_table(flow["hops"], flow.get("hop"), flow.get("bracket")))
        evidence = (flow.get("trace") or {}).get("evidence") or (flow.get("locate") or {}).get("evidence") or []
        parts.append(_sentences(evidence))
    if server_side is not None:
        client_file = (files or {}).get("client", "client capture")
        server_file = (files or {}).get("server", "server capture")
        parts.append(f"<h3>Packets at the client ({escape(client_file)})</h3>" + _packet_table(flow))
        parts.append(f"<h3>Packets at the server ({escape(server_file)})</h3>" + _packet_table(server_side))
    else:
        parts.append("<h3>Packets and evidence</h3>" + _packet_table(flow))
    parts.append("</section>")
    return "\n".join(parts)


def _verdict_box(flow: dict) -> str:
    verdict = flow.get("verdict") or "?"
    kind = "interference" if verdict in INTERFERENCE else "clean" if verdict == "clean" else "other"
    facts = []
    if flow.get("direction"):
        facts.append(f"direction: {flow['direction']}")
    if flow.get("hop") is not None:
        facts.append(f"hop: {flow['hop']}")
    if flow.get("rtt_ms") is not None:
        facts.append(f"rtt: {flow['rtt_ms']:.1f} ms")
    http = flow.get("http") or {}
    if http.get("status") is not None:
        facts.append(f"http: {http['status']} {http.get('reason') or ''}".rstrip())
    target = flow.get("target")
    where = ""
    if target:
        where = (f"<div class=\"meta\">{escape(target.get('url', ''))} at {escape(_end(target))}"
                 + (f" from {escape(_end(flow['client']))}" if flow.get("client") else "") + "</div>")
    elif flow.get("vantage"):
        where = (f"<div class=\"meta\">captured at the {escape(flow['vantage'])}"
                 + (f": {escape(flow['vantage_evidence'])}" if flow.get("vantage_evidence") else "") + "</div>")
    return (f"<div class=\"verdict {kind}\"><span class=\"word\" id=\"verdict\">{escape(verdict)}</span>"
            f"<span class=\"facts\">{escape(FACT_SEPARATOR.join(facts))}</span>{where}"
            f"<div class=\"explanation\">{_paragraphs(flow.get('explanation') or '')}</div>"
            + (f"<p class=\"next-step\"><strong>{escape(flow['next_step'])}</strong></p>" if flow.get("next_step") else "")
            + "</div>")


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{escape(line)}</p>" for line in text.splitlines() if line.strip())


def _sentences(sentences: list[str]) -> str:
    if not sentences:
        return ""
    return "<ul class=\"evidence\">" + "".join(f"<li>{escape(s)}</li>" for s in sentences) + "</ul>"


def _table(headers: list[str], rows: list[list], text_columns: set[int], row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f" class=\"{row_classes[i]}\"" if row_classes and row_classes[i] else ""
        cells = "".join(f"<td class=\"text\">{_cell(value)}</td>" if n in text_columns else f"<td>{_cell(value)}</td>"
                        for n, value in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(value) -> str:
    if isinstance(value, _Html):
        return value.html
    return "" if value is None else escape(str(value))


class _Html:
    """A cell that is already HTML."""

    def __init__(self, html: str):
        self.html = html


def _hops_table(hops: list[dict], hop: int | None, bracket: dict | None = None) -> str:
    rows, classes = [], []
    for item in hops:
        notes = [*item.get("details", {}).get("trigger", {}).get("rewritten", []),
                 *item.get("details", {}).get("control", {}).get("rewritten", [])]
        if item.get("confirmed"):
            notes.insert(0, "difference seen twice")
        if hop is not None and item["ttl"] == hop:
            notes.insert(0, "the box")
        rows.append([item["ttl"], item.get("address") or "*",
                     "" if item.get("rtt_ms") is None else f"{item['rtt_ms']:.2f}",
                     item.get("trigger"), item.get("control"), "; ".join(notes)])
        classes.append("found" if hop is not None and item["ttl"] == hop else "")
    table = _table(["ttl", "router", "ms", "trigger", "control", "notes"], rows, {1, 3, 4, 5}, classes)
    if bracket:
        table += (f"<p class=\"legend\">The request demonstrably passed hop {bracket.get('passed')} and did not "
                  f"reach hop {bracket.get('not_reached')}.</p>")
    return table


def _forged(packet: dict) -> bool:
    return packet.get("origin") == "middlebox"


def _relative_numbers(flow: dict) -> dict[int, tuple]:
    """n -> (seq, ack) relative to each end's initial sequence number, as the packet table shows them."""
    client = flow["client"]["address"]
    packets = flow.get("packets") or []
    isn = {}
    for packet in packets:
        if packet.get("proto") == "tcp" and "S" in packet["flags"]:
            isn.setdefault(packet["src"] == client, packet["seq"])
    numbers = {}
    for packet in packets:
        if packet.get("proto") != "tcp":
            continue
        mine = packet["src"] == client
        seq_base, ack_base = isn.get(mine), isn.get(not mine)
        seq = (packet["seq"] - seq_base) % (1 << 32) if seq_base is not None else packet["seq"]
        ack = "" if "A" not in packet["flags"] else (
            (packet["ack"] - ack_base) % (1 << 32) if ack_base is not None else packet["ack"])
        numbers[packet["n"]] = (seq, ack)
    return numbers


def _label(packet: dict, numbers: dict) -> str:
    if packet.get("proto") == "icmp":
        return f"ICMP {packet.get('icmp_type')}/{packet.get('icmp_code')} from {packet['src']}"
    seq, ack = numbers.get(packet["n"], ("", ""))
    text = f"{packet['flags']} seq={seq}" + (f" ack={ack}" if ack != "" else "")
    if packet.get("len"):
        text += f" len={packet['len']}"
    info = packet.get("info") or ""
    if info:
        text += f" \u00b7 {info[:40]}"
    return text


def _packet_table(flow: dict) -> str:
    from probe.render.report import scaled_window, window_scales

    numbers = _relative_numbers(flow)
    client = flow["client"]["address"]
    tcp_packets = [p for p in flow.get("packets") or [] if p.get("proto") == "tcp"]
    scales = window_scales((p["src"] == client, p["flags"], p.get("options") or []) for p in tcp_packets)
    rows, classes = [], []
    for packet in flow.get("packets") or []:
        seq, ack = numbers.get(packet["n"], ("", ""))
        tcp = packet.get("proto") == "tcp"
        origin = packet.get("origin") or ""
        if packet.get("confidence") not in (None, "high") and origin not in ("self", "server"):
            origin += f" ({packet['confidence']})"
        rows.append([packet["n"], f"{packet['t_ms']:.1f}", "\u2192" if packet.get("dir") == "sent" else "\u2190",
                     packet["src"], packet.get("ttl"), packet.get("ip_id"),
                     packet["flags"] if tcp else f"icmp {packet.get('icmp_type')}/{packet.get('icmp_code')}",
                     seq, ack, scaled_window(packet["win"], packet["flags"], packet["src"] == client, scales) if tcp
                     else "", packet.get("len", ""), _Html(f"<span>{escape(origin)}</span>"),
                     packet.get("info") or "", _Html(_sentences(packet.get("evidence") or []))])
        classes.append("forged" if _forged(packet) else "")
    table = _table(["#", "ms", "dir", "from", "ttl", "ip-id", "flags", "seq", "ack", "win", "len", "origin", "info",
                    "evidence"], rows, {2, 3, 6, 11, 12, 13}, classes)
    return table.replace("<td class=\"text\"><span>", "<td class=\"text origin\"><span>")


def _lanes(flow: dict, vantage: str | None = None) -> str:
    client, server = flow["client"], flow["server"] if "server" in flow else flow.get("target") or {}
    hop = flow.get("hop")
    middle = "in between" + (f" (hop {hop})" if hop is not None else "")
    parts = []
    for lane, name, address in (("client", "client", _end(client)), ("middle", middle, ""),
                                ("server", "server", _end(server))):
        x = LANE[lane]
        if vantage == lane:
            name += " \u2014 captured here"
        parts.append(f"<text class=\"lane-name\" x=\"{x}\" y=\"20\" text-anchor=\"middle\">{escape(name)}</text>")
        if address:
            parts.append(f"<text x=\"{x}\" y=\"36\" text-anchor=\"middle\">{escape(address)}</text>")
    return "".join(parts)


def _svg(height: int, body: list[str], label: str) -> str:
    styles = {"middle": 'stroke="#bbb" stroke-width="1" stroke-dasharray="4 4"'}
    end_style = 'stroke="#444" stroke-width="2"'
    lines = "".join(f"<line x1=\"{x}\" y1=\"{TOP - 16}\" x2=\"{x}\" y2=\"{height - 10}\" "
                    f"{styles.get(lane, end_style)}/>" for lane, x in LANE.items())
    marker = ("<defs>"
              + "".join(f"<marker id=\"arrow-{name}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"9\" "
                        f"markerHeight=\"9\" markerUnits=\"userSpaceOnUse\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{colour}\"/>"
                        f"</marker>" for name, colour in COLOURS.items())
              + "</defs>")
    return (f"<svg class=\"ladder\" role=\"img\" aria-label=\"{escape(label)}\" xmlns=\"http://www.w3.org/2000/svg\" "
            f"width=\"{LADDER_WIDTH}\" height=\"{height}\" viewBox=\"0 0 {LADDER_WIDTH} {height}\">{marker}{lines}"
            + "".join(body) + "</svg>"
            + "<p class=\"legend\">Time runs downward, one row per packet in the order captured (the spacing is "
              "not to scale; the times are on the left). Red: forged by a device in between. Orange: a router "
              "speaking in its own name.</p>")


COLOURS = {"self": "#333333", "server": "#1d5fa8", "middlebox": "#c0121b", "path": "#b25d00", "unknown": "#6b6b6b"}


def _arrow(x1: float, y1: float, x2: float, y2: float, kind: str, label: str, n: int, css: str = "",
           lost: bool = False) -> str:
    colour = COLOURS.get(kind, COLOURS["unknown"])
    width = 2.5 if kind == "middlebox" else 1.5
    dash = " stroke-dasharray=\"5 3\"" if kind == "unknown" or lost else ""
    end = "" if lost else f" marker-end=\"url(#arrow-{kind if kind in COLOURS else 'unknown'})\""
    anchor = "middle"  # over the middle of the arrow: clear of the arrowheads at the lanes
    label_x, label_y = (x1 + x2) / 2, (y1 + y2) / 2 - 5
    cls = f" class=\"packet{' ' + css if css else ''}\""
    parts = [f"<g{cls} data-n=\"{n}\"><line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" stroke=\"{colour}\" "
             f"stroke-width=\"{width}\"{dash}{end}/>"]
    if lost:  # a cross where it vanished
        parts.append(f"<path d=\"M{x2 - 6},{y2 - 6} L{x2 + 6},{y2 + 6} M{x2 - 6},{y2 + 6} L{x2 + 6},{y2 - 6}\" "
                     f"stroke=\"{COLOURS['middlebox']}\" stroke-width=\"2.5\"/>")
    parts.append(f"<text x=\"{label_x}\" y=\"{label_y}\" text-anchor=\"{anchor}\" fill=\"{colour}\">{escape(label)}</text></g>")
    return "".join(parts)


def _ends(packet: dict, client_address: str) -> tuple[str, str]:
    """(sender lane, receiver lane) of a captured packet, from who sent it (its origin) and its addresses."""
    toward = "client" if packet["dst"] == client_address else "server"
    origin = packet.get("origin")
    if origin in ("middlebox", "path"):
        return "middle", toward
    if packet.get("proto") == "icmp":
        return ("server" if toward == "client" else "client"), toward
    return ("client" if packet["src"] == client_address else "server"), toward


def _kind(packet: dict) -> str:
    origin = packet.get("origin") or "unknown"
    if origin == "self":  # a server-side capture's own packets are the server's
        return "server" if packet["src"] != packet.get("_client") else "self"
    return origin if origin in COLOURS else "unknown"


def _ladder(flow: dict) -> str:
    """One capture's ladder: each packet at the time it was captured, at the end that captured it."""
    client_address = flow["client"]["address"]
    vantage = flow.get("vantage") or "client"
    numbers = _relative_numbers(flow)
    body = [_lanes(flow, vantage)]
    y = TOP
    for packet in flow.get("packets") or []:
        y += ROW
        sender, receiver = _ends(packet, client_address)
        if vantage == "client" and receiver == "client" or vantage == "server" and receiver == "server":
            y1, y2 = y - SLANT, y  # arrived here: drawn from where it came
        else:
            y1, y2 = y, y + SLANT
        kind = _kind({**packet, "_client": client_address})
        css = "forged" if _forged(packet) else ""
        label = ("FORGED " if css else "") + f"#{packet['n']} " + _label(packet, numbers)
        body.append(_time(y, packet["t_ms"]))
        body.append(_arrow(LANE[sender], y1, LANE[receiver], y2, kind, label, packet["n"], css))
    return _svg(y + SLANT + 24, body, f"ladder diagram of {len(flow.get('packets') or [])} packets")


def _time(y: float, t_ms: float) -> str:
    return f"<text x=\"8\" y=\"{y + 4}\" fill=\"#6b6b6b\">{t_ms:.1f} ms</text>"


def _two_ended_ladder(flow: dict, server_side: dict) -> str:
    """Both captures on one ladder: a packet seen at both ends goes from its send time to its
    arrival time (the server's clock put on the client's by the estimated offset); one end's
    packet that the other never saw starts or ends in the middle."""
    client_address = flow["client"]["address"]
    offset = (flow.get("clock_offset_ms") or 0.0) / 1000
    start_client = flow.get("start") or 0.0
    start_server = server_side.get("start") or 0.0
    client_packets = {p["n"]: p for p in flow.get("packets") or []}
    server_packets = {p["n"]: p for p in server_side.get("packets") or []}
    numbers = _relative_numbers(flow)
    server_numbers = _relative_numbers(server_side)
    forged = {(m["captured_at"], m["n"]) for m in flow.get("forged") or []}
    lost = {(m["captured_at"], m["n"]) for m in flow.get("never_arrived") or []}

    def at_client(packet):  # seconds on the client's clock, from the client capture's start
        return packet["t_ms"] / 1000

    def at_server(packet):
        return start_server + packet["t_ms"] / 1000 - offset - start_client

    events = []  # (t of the first end, t of the second end or None, sender lane, receiver lane, packet, side)
    matched_client, matched_server = set(), set()
    for c, s in flow.get("matched") or []:
        packet = client_packets[c]
        matched_client.add(c)
        matched_server.add(s)
        if packet["src"] == client_address:
            events.append((at_client(packet), at_server(server_packets[s]), "client", "server", packet, "client"))
        else:
            events.append((at_server(server_packets[s]), at_client(packet), "server", "client", packet, "client"))
    for side, packets, place in (("client", client_packets, at_client), ("server", server_packets, at_server)):
        done = matched_client if side == "client" else matched_server
        for n, packet in packets.items():
            if n in done:
                continue
            sent_here = (packet["src"] == client_address) == (side == "client")
            if sent_here:
                events.append((place(packet), None, side, "middle", packet, side))
            else:
                events.append((None, place(packet), "middle", side, packet, side))
    times = sorted({t for first, second, *_ in events for t in (first, second) if t is not None})
    rank = {t: i for i, t in enumerate(times)}
    y_of = {t: TOP + ROW * (i + 1) for t, i in rank.items()}
    body = [_lanes(flow)]
    for t, y in y_of.items():
        body.append(_time(y, t * 1000))
    for first, second, sender, receiver, packet, side in sorted(events, key=lambda e: min(t for t in e[:2] if t is not None)):
        key = (side, packet["n"])
        y1 = y_of[first] if first is not None else y_of[second] - SLANT
        y2 = y_of[second] if second is not None else y_of[first] + SLANT
        side_numbers = numbers if side == "client" else server_numbers
        if key in forged:
            kind, css, label = "middlebox", "forged", f"FORGED: {side} got #{packet['n']} "
        elif key in lost:
            kind, css, label = ("self" if sender == "client" else "server"), "never-arrived", f"NEVER ARRIVED: #{packet['n']} "
        else:
            kind = "self" if sender == "client" or (sender == "middle" and packet["src"] == client_address) else "server"
            css, label = "", f"#{packet['n']} "
        label += _label(packet, side_numbers)
        body.append(_arrow(LANE[sender], y1, LANE[receiver], y2, kind, label, packet["n"], css,
                           lost=key in lost))
    height = TOP + ROW * (len(times) + 1) + 24
    return _svg(height, body, "ladder diagram of both captures")


def _missing_list(flow: dict) -> str:
    items = [f"<li class=\"missing forged\">FORGED: {escape(m['sentence'])}</li>" for m in flow.get("forged") or []]
    items += [f"<li class=\"missing never-arrived\">NEVER ARRIVED: {escape(m['sentence'])}</li>"
              for m in flow.get("never_arrived") or []]
    if not items:
        return "<p class=\"legend\">Every packet one end received, the other end sent.</p>"
    return "<ul class=\"differences\">" + "".join(items) + "</ul>"
