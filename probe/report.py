"""Presentation only: JSON documents, packet tables and pcap files from finished results."""

from __future__ import annotations

import json

from probe.engine.model import Analysis, Flow
from probe.record import PacketRecord
from probe.tls import describe

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
    document = {"schema": SCHEMA, "command": command, "target": target_json, "started_at": started_at(packets),
                "verdict": analysis.verdict, "direction": analysis.direction, "hop": analysis.hop,
                "rtt_ms": analysis.rtt_ms,
                "client": {"address": flow.client, "port": flow.client_port},
                "packets": packets_json(packets, flow, analysis), "explanation": analysis.explanation}
    if analysis.hop_basis:
        document["hop_basis"] = analysis.hop_basis
    document.update(extra or {})
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


def packet_table(packets: list[PacketRecord], flow: Flow, analysis: Analysis, width: int = 70) -> str:
    """A Wireshark-like table: relative sequence numbers, one evidence sentence per line."""
    from probe.layout import simple_table  # tabulate's layout, fast enough for a flow of thousands of packets

    our_isn = next((p.seq for p in packets if flow.sent_by_client(p) and "S" in p.flags), None)
    their_isn = next((p.seq for p in packets if flow.toward_client(p) and "S" in p.flags), None)
    t0 = packets[0].t if packets else 0.0
    rows = []
    for n, (packet, attribution) in enumerate(zip(packets, analysis.attributions), 1):
        mine = flow.sent_by_client(packet)
        arrow = "->" if mine else "<-"
        if packet.proto == "tcp":
            seq_base, ack_base = (our_isn, their_isn) if mine else (their_isn, our_isn)
            seq = _relative(packet.seq, seq_base)
            ack = _relative(packet.ack, ack_base) if "A" in packet.flags else ""
            flags, win, length = packet.flags, packet.win, packet.length
        else:
            seq = ack = win = ""
            flags, length = f"icmp {packet.icmp_type}/{packet.icmp_code}", packet.ip_len
        evidence = "\n".join(_wrap(sentence, width) for sentence in attribution.evidence)
        origin = attribution.origin if attribution.origin in ("self", "server") or attribution.confidence == "high" \
            else f"{attribution.origin} ({attribution.confidence})"
        info = describe(packet.payload) if packet.proto == "tcp" and packet.length else ""
        rows.append([n, f"{(packet.t - t0) * 1000:.2f}", arrow, packet.src if not mine else "", packet.ttl,
                     packet.ip_id, flags, seq, ack, win, length, _wrap(info, 24), origin, evidence])
    headers = ["#", "ms", "dir", "from", "ttl", "ip-id", "flags", "seq", "ack", "win", "len", "info", "origin",
               "evidence"]
    return simple_table(rows, headers)


def _wrap(text: str, width: int) -> str:
    if len(text) <= width and text.isprintable() and text == text.strip():
        return text  # what textwrap makes of it (most evidence sentences), without its regular expressions
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def summary_lines(document: dict) -> str:
    hop = document.get("hop")
    parts = [f"verdict: {document['verdict']}"]
    if document.get("direction"):
        parts.append(f"direction: {document['direction']}")
    if hop is not None:
        parts.append(f"hop: {hop}")
    if document.get("rtt_ms") is not None:
        parts.append(f"rtt: {document['rtt_ms']:.1f} ms")
    if (document.get("http") or {}).get("status") is not None:  # what curl -I shows first
        parts.append(f"http: {document['http']['status']} {document['http']['reason'] or ''}".rstrip())
    lines = ["  ".join(parts), document["explanation"]]
    if document.get("tls"):
        lines.append(tls_sentence(document["tls"]))
    return "\n".join(lines)


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


def trace_json(rows, result, trigger: str, control: str) -> dict:
    """The `hops` and `bracket` sections (contract), with each hop's details under `trace`."""
    hops = [{"ttl": row.ttl, "address": row.address, "rtt_ms": row.rtt_ms, "trigger": row.trigger.word,
             "control": row.control.word, "confirmed": row.confirmed,
             "details": {"trigger": _fate_json(row.trigger), "control": _fate_json(row.control)}} for row in rows]
    bracket = {"passed": result.bracket[0], "not_reached": result.bracket[1]} if result.bracket else None
    return {"hops": hops, "bracket": bracket,
            "trace": {"trigger": trigger, "control": control, "interference": result.interference,
                      "hop": result.hop, "kind": result.kind, "reached_server_at": result.reached_server_at,
                      "evidence": list(result.evidence)}}


def hops_table(hops: list[dict]) -> str:
    """The hop table of a trace, for people."""
    from tabulate import tabulate

    rows = []
    for hop in hops:
        notes = [*hop["details"]["trigger"].get("rewritten", []), *hop["details"]["control"].get("rewritten", [])]
        if hop.get("confirmed"):
            notes.insert(0, "difference seen twice")
        rows.append([hop["ttl"], hop["address"] or "*", "" if hop["rtt_ms"] is None else f"{hop['rtt_ms']:.2f}",
                     hop["trigger"], hop["control"], "; ".join(notes)])
    return tabulate(rows, headers=["ttl", "router", "ms", "trigger", "control", "notes"], tablefmt="plain")

