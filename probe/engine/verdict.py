"""From recorded packets to origins, a verdict, a direction and an explanation.

Theory of operation. `build_baseline` learns what the server looks like (TTL, IP-ID habit,
round trip) from the packets that are almost certainly its own. `attribute` then weighs, for
every other packet that claims to come from the server, the signals in `heuristics`: a
packet is blamed on a middlebox only when the signals add up to 3 or more and at least one
strong signal (weight 2 or more) is among them; when they conflict it is `unknown`; else it
is the server's. Wrong blame is worse than `unknown`, so every threshold leans that way.

The verdict comes last, from the attributions and a few facts about the exchange:
forged resets or answers toward the client; the field report's signature (the server resets
a connection it had accepted, as if we had reset it: something did, in our name); ICMP
errors; and otherwise what the server itself did.
"""

from __future__ import annotations

from dataclasses import replace

from probe.engine import heuristics as h
from probe.engine.baseline import (Baseline, FlowTables, build_baseline, first_request, hop_distance, initial_ttl,
                                   request_acknowledged, seq_end)
from probe.engine.locate import Location
from probe.engine.model import Analysis, Attribution, Flow
from probe.record import PacketRecord, is_prohibited, is_time_exceeded, is_unreachable
from probe.seq import seq_diff

ICMP_UNREACHABLE_CODES = {
    0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable", 3: "port unreachable",
    4: "fragmentation needed", 6: "destination network unknown", 7: "destination host unknown",
    9: "network administratively prohibited", 10: "host administratively prohibited",
    13: "communication administratively prohibited",
}
ICMP6_UNREACHABLE_CODES = {
    0: "no route to destination", 1: "communication administratively prohibited", 2: "beyond scope of source address",
    3: "address unreachable", 4: "port unreachable", 5: "source address failed ingress/egress policy",
    6: "reject route to destination",
}
# How a host that is down or a missing route looks (no ARP/ND answer: host unreachable; no route:
# network unreachable), by family; what filters is `record.is_prohibited`.
DOWN_OR_UNROUTED_CODES = {4: frozenset({0, 1, 6, 7}), 6: frozenset({0, 3})}


def describe_icmp(packet: PacketRecord) -> str:
    v6 = packet.version == 6
    if is_unreachable(packet):
        names = ICMP6_UNREACHABLE_CODES if v6 else ICMP_UNREACHABLE_CODES
        return f"destination unreachable ({names.get(packet.icmp_code, f'code {packet.icmp_code}')})"
    if is_time_exceeded(packet):
        return "time exceeded"
    if v6 and packet.icmp_type == 2:
        return "packet too big"
    return f"ICMP{'v6' if v6 else ''} type {packet.icmp_type} code {packet.icmp_code}"


def judge_unreachable(packet: PacketRecord, flow: Flow, baseline: Baseline) -> tuple[int | None, str]:
    """Whether an ICMP destination unreachable about our flow is interference, and where.

    Only what filters is interference: "administratively prohibited" from a router, or an error
    that stands where the server's own path would not send it: a router saying the host is down or
    unrouted after the server itself answered our SYN (it was up and routed a moment ago), or a
    router answering with port or protocol unreachable, which only the destination sends (RFC 1122
    3.2.2.1). A router's host or network unreachable before any answer is how a host that is down
    or a missing route looks (the router's ARP or neighbour discovery got no answer, or it has no
    route): not interference, and no hop is claimed. Errors from the server's own address are the
    server's (its firewall, its closed port). Returns (the hop it is located at or None, a sentence)."""
    code, family = packet.icmp_code, packet.version
    hop = hop_distance(packet.ttl)
    if packet.src == flow.server:
        return None, f"the server {packet.src} answered with ICMP {describe_icmp(packet)}."
    where = f"router {packet.src} at about hop {hop}"
    if is_prohibited(packet):
        return hop, f"{where} answered with ICMP {describe_icmp(packet)}: a filter refused the connection."
    if code in DOWN_OR_UNROUTED_CODES[family]:
        if baseline.synack is not None:
            return hop, (f"{where} answered with ICMP {describe_icmp(packet)} after the server itself had answered "
                         f"our SYN: the host was up and routed, so something in between refused the connection.")
        return None, (f"{where} answered with ICMP {describe_icmp(packet)}: the host is down or no route leads to it "
                      f"(that is how a dead host or a missing route looks; nothing suggests a filter).")
    if code in ({2, 3} if family == 4 else {4}):
        return hop, (f"{where} answered with ICMP {describe_icmp(packet)}, which only the destination sends: "
                     f"something in between answered in its place.")
    return None, f"{where} answered with ICMP {describe_icmp(packet)}."


def _attribute_icmp(packet: PacketRecord, flow: Flow) -> Attribution:
    origin = "server" if packet.src == flow.server else "path"
    evidence = [f"ICMP {describe_icmp(packet)} from {packet.src}, quoting our packet to "
                f"{packet.quoted.dst}:{packet.quoted.dport}",
                f"TTL {packet.ttl}: sent from about hop {hop_distance(packet.ttl)}"]
    return Attribution(origin, "high", tuple(evidence))


def synack_evidence(ttl: int, rtt: float | None) -> tuple[str, ...]:
    """The evidence of the SYN-ACK that answers our SYN (the baseline's first member): its TTL and
    the round trip (also worded here for `probe analyze --json`'s ordinary flows, `_flowjson`)."""
    evidence = [f"SYN-ACK acknowledging our SYN, TTL {ttl} (about hop {hop_distance(ttl)})"]
    if rtt is not None:
        evidence.append(f"round trip {rtt * 1000:.1f} ms")
    return tuple(evidence)


def _attribute_tcp(packets: list[PacketRecord], index: int, flow: Flow, baseline: Baseline) -> Attribution:
    packet = packets[index]
    if baseline.synack is not None and packet is baseline.synack:
        return Attribution("server", "high", synack_evidence(packet.ttl, baseline.rtt))
    tables = h.tables_of(packets, flow, baseline)
    if baseline.synack is None:
        return _attribute_without_baseline(packets, index, flow, tables)
    signals = (h.ttl_distance(packet, baseline) + h.initial_ttl_class(packet, baseline) + h.df_bit(packet, baseline)
               + h.flow_label(packets, index, flow, baseline) + h.traffic_class(packets, index, flow, baseline)
               + h.too_early(packets, index, flow, baseline)
               + h.ip_id_habit(packet, baseline) + h.ip_id_copied(packets, index, flow, baseline)
               + h.same_ip_id_burst(packets, index, flow, baseline)
               + h.reset_shape(packets, index, flow, baseline)
               + h.reset_burst(packets, index, flow, baseline.rtt, tables)
               + h.followed_by_server_data(packets, index, flow, baseline)
               + h.acknowledges_unsent(packets, index, flow, baseline)
               + h.answers_expired_request(packets, index, flow, baseline)
               + h.overlapping_payload(packets, index, flow, baseline)
               + h.ack_short_of_request(packets, index, flow, baseline)
               + h.acknowledgement_taken_back(packets, index, flow, baseline)
               + h.published_fingerprint(packets, index, flow, baseline)
               + h.reset_of_a_fresh_connection(packets, index, flow, baseline))
    return weigh(signals)


def weigh(signals: list[h.Signal]) -> Attribution:
    """Signals to an origin. A decisive signal (the server could not have sent it) blames on its
    own, whatever else is said; otherwise blame needs a score of 3 with a strong signal among
    them, and signals against the server that add up to 2 without that make it `unknown`."""
    if all(s.weight <= 0 for s in signals):  # the common case: nothing against the server
        return Attribution("server", "high", tuple(s.sentence for s in signals if s.weight < 0))
    against = [s.sentence for s in sorted(signals, key=lambda s: (not s.decisive, -s.weight)) if s.weight > 0]
    for_server = [s.sentence for s in signals if s.weight < 0]
    if any(s.decisive for s in signals):
        return Attribution("middlebox", "high", tuple(against + for_server))
    score = sum(signal.weight for signal in signals)
    strong = any(signal.weight >= 2 for signal in signals)
    if score >= 3 and strong:
        return Attribution("middlebox", "high" if score >= 5 else "medium", tuple(against))
    if sum(s.weight for s in signals if s.weight > 0) >= 2:
        return Attribution("unknown", "low", tuple(against + for_server))
    return Attribution("server", "high" if not against else "medium", tuple(for_server + against))


def _attribute_without_baseline(packets: list[PacketRecord], index: int, flow: Flow, tables: FlowTables) -> Attribution:
    """No SYN-ACK to compare with (a reset answered the SYN): say what the packet itself tells, and
    compare it with the other packets in the server's name (`two_senders`)."""
    packet = packets[index]
    evidence = [f"no SYN-ACK to compare with; TTL {packet.ttl} puts the sender at about hop "
                f"{hop_distance(packet.ttl)}"]
    round_trip = tables.memo("round trip to first answer", lambda: _round_trip_to_first_answer(packets, flow))
    burst = h.reset_burst(packets, index, flow, round_trip, tables)
    if burst and burst[0].weight >= 2:
        return Attribution("middlebox", "medium", tuple(evidence + [burst[0].sentence]))
    nearer = two_senders(packets, index, flow, tables)
    if nearer:
        return Attribution("middlebox", "medium", tuple(evidence + nearer))
    if "R" in packet.flags and "A" in packet.flags:
        evidence.append("RST/ACK to our SYN, as a closed port answers (RFC 9293)")
    return Attribution("server", "low", tuple(evidence))


def two_senders(packets: list[PacketRecord], index: int, flow: Flow, tables: FlowTables) -> list[str]:
    """Two stacks answering in the server's name: the nearer one is not the server.

    What: packets in the server's name whose TTLs start from different initial values (32, 64,
    128, 255), so two different stacks sent them, at different distances counted from each one's
    own initial value. Why: one host has one stack; a forger sits between us and the server, so of
    two senders in the server's name the nearer is never the server (CenTrace's binance.com capture:
    resets starting from 255 at hop 17, beside the SYN's reset starting from 64 at hop 18).
    Known false positives: a load balancer answering in front of the server is nearer too, and
    is a box in between; two senders at one distance are left alone (no verdict on who is who).
    Returns the evidence, empty when packet `index` is not the nearer of two such senders."""
    senders = tables.memo("senders in the server's name", lambda: {
        (initial_ttl(p.ttl), hop_distance(p.ttl)) for p in packets if flow.toward_client(p)})
    packet = packets[index]
    own_class, own_hop = initial_ttl(packet.ttl), hop_distance(packet.ttl)
    farther = [(start, hop) for start, hop in senders if start != own_class and hop > own_hop]
    if not farther:
        return []
    start, hop = max(farther, key=lambda sender: sender[1])
    return [f"TTL {packet.ttl} started from {own_class} (hop {own_hop}), while other packets in the server's name "
            f"started from {start} (hop {hop}): two stacks answer, and this one is nearer than the other"]


def _round_trip_to_first_answer(packets: list[PacketRecord], flow: Flow) -> float | None:
    """Without a SYN-ACK: from our last SYN before it to the first packet in the server's name."""
    first = next((p for p in packets if flow.toward_client(p)), None)
    if first is None:
        return None
    syns = [p for p in packets if flow.sent_by_client(p) and p.flags == "S" and p.t <= first.t]
    return first.t - syns[-1].t if syns else None


def attribute(packets: list[PacketRecord], flow: Flow, baseline: Baseline) -> list[Attribution]:
    result = []
    for index, packet in enumerate(packets):
        if flow.sent_by_client(packet):
            result.append(Attribution("self"))
        elif flow.quotes_flow(packet):
            result.append(_attribute_icmp(packet, flow))
        elif flow.toward_client(packet):
            result.append(_attribute_tcp(packets, index, flow, baseline))
        else:
            result.append(Attribution("unknown", "low", ("not part of this flow",)))
    return result


def reset_in_our_name(packets: list[PacketRecord], flow: Flow, attributions: list[Attribution],
                      baseline: Baseline) -> list[str]:
    """The field report's signature: the server resets, as unknown, a connection it had accepted.

    What it detects: a bare RST (no ACK flag) whose seq is the ACK of one of our segments, with
    the server's fingerprint, on a connection the server had answered with a SYN-ACK and had
    neither reset nor closed before, drawn by a retransmission of a request whose first copy got
    no answer at all and which was never acknowledged. RFC 9293 makes a stack answer that way only for a
    connection it does not have; we never sent a RST, so someone else did, in our name.
    Not counted: a reset of our acknowledgement of bytes the server never sent (we acknowledged
    forged data, and the server rightly refused that ACK).
    Known false positives: the server really lost its state (reboot, a state-table timeout on a
    load balancer in front of it, an accept-queue overflow with tcp_abort_on_overflow).
    Returns the evidence sentences, empty when the signature is absent."""
    request = first_request(packets, flow)
    if baseline.synack is None or request is None:
        return []
    copies = [i for i, p in enumerate(packets) if flow.sent_by_client(p) and p.length and p.seq == request.seq]
    answering_first = None  # the first packet in the server's name between the request and its retransmission
    if len(copies) >= 2:
        first_copy, second_copy = packets[copies[0]].t, packets[copies[1]].t
        answering_first = next((i for i, p in enumerate(packets) if flow.toward_client(p)
                                and first_copy < p.t < second_copy), None)
    # what the packets before the one at hand showed (one pass: each is added after it is judged)
    server_closed = we_reset = acked = False
    our_acks: set[int] = set()
    server_end = server_end_ahead = None  # the furthest end of the server's own, and how far past its SYN-ACK
    copies_before = 0
    request_end = seq_end(request)
    for index, packet in enumerate(packets):
        if (flow.toward_client(packet) and "R" in packet.flags and "A" not in packet.flags
                and attributions[index].origin == "server"
                and not server_closed  # the server had closed: a late segment of ours may draw this reset honestly
                and not we_reset and packet.seq in our_acks
                # else we had acknowledged bytes the server never sent (forged data): that explains it
                and seq_diff(packet.seq, seq_end(baseline.synack) if server_end is None else server_end) <= 0
                # else not the signature: a bare reset answering a retransmission of an unanswered request
                and copies_before >= 2 and not acked
                and (answering_first is None or answering_first > index)):
            evidence = [f"the server answered our segment with a bare RST (seq "
                        f"{seq_diff(packet.seq, baseline.synack.seq)} = our ACK, no ACK flag, window {packet.win}): "
                        f"it no longer had the connection it had accepted, and we never sent a reset"]
            gap = (packets[copies[1]].t - packets[copies[0]].t) * 1000
            evidence.append(f"the request went unacknowledged; its retransmission {gap:.0f} ms later drew the reset")
            return evidence
        if flow.toward_client(packet):
            server_closed = server_closed or ("F" in packet.flags and index in baseline.members)
            acked = acked or ("A" in packet.flags and seq_diff(packet.ack, request_end) >= 0)
        if index in baseline.members:
            ahead = seq_diff(seq_end(packet), baseline.synack.seq)
            if server_end is None or ahead > server_end_ahead:
                server_end, server_end_ahead = seq_end(packet), ahead
        if flow.sent_by_client(packet):
            we_reset = we_reset or "R" in packet.flags
            if "A" in packet.flags:
                our_acks.add(packet.ack)
            copies_before += bool(packet.length and packet.seq == request.seq)
    return []


def decide(packets: list[PacketRecord], flow: Flow, attributions: list[Attribution], baseline: Baseline):
    """Return (verdict, direction, hop, hop_basis, sentences)."""
    received = [i for i, p in enumerate(packets) if flow.toward_client(p)]
    forged = [i for i in received if attributions[i].origin == "middlebox"]
    forged_resets = [i for i in forged if "R" in packets[i].flags]
    forged_data = [i for i in forged if packets[i].length and "R" not in packets[i].flags]  # a RST's data is a
    # diagnostic, not an answer (RFC 9293 3.5.3; the Henan firewall's resets carry ten bytes)
    toward_server = reset_in_our_name(packets, flow, attributions, baseline)
    icmp_errors = [i for i, p in enumerate(packets) if flow.quotes_flow(p) and is_unreachable(p)
                   and p.icmp_code != (4 if p.version == 4 else -1)]  # fragmentation needed: path MTU, not an error
    genuine_resets = [i for i in received if "R" in packets[i].flags and attributions[i].origin != "middlebox"]
    # A reset after the server answered and sent its own FIN came once the exchange was over: a
    # segment of ours (a TLS close_notify, a late ACK) reached a socket the server had closed
    # (RFC 9293 3.10.7.1). It ends nothing; the exchange is judged as if it had not come. (A
    # server that never answered and resets after its FIN is still a server reset.)
    server_fin = next((i for i in received if "F" in packets[i].flags and "R" not in packets[i].flags
                       and i in baseline.members), None)
    answered = server_fin is not None and any(packets[i].length and i in baseline.members
                                              for i in received if i <= server_fin)
    after_close = [i for i in genuine_resets if answered and i > server_fin]
    genuine_resets = [i for i in genuine_resets if i not in after_close]
    if forged_resets or forged_data:
        backward = next((signal.sentence for i in received
                         for signal in h.acknowledges_backwards(packets, i, flow, baseline)), None)
        toward_server = toward_server or ([backward] if backward is not None else [])

    if forged_data:
        first = packets[forged_data[0]]
        line = first.payload.split(b"\r\n", 1)[0].split(b"\n", 1)[0][:80].decode("latin-1")
        return ("middlebox-response", "both" if toward_server else "to-client", None, None,
                [f"A device in between answered in the server's place: {len(forged_data)} packet(s) of data in "
                 f"the server's name are not the server's.",
                 _sentence(f"the first one: {attributions[forged_data[0]].evidence[0]}")]
                + ([f"It begins \"{line}\"."] if line.isprintable() and line.strip() else []))
    if forged_resets or toward_server:
        direction = "both" if forged_resets and toward_server else "to-client" if forged_resets else "to-server"
        sentences = []
        if forged_resets:
            sentences.append(f"A device in between forged {len(forged_resets)} reset(s) toward us.")
            sentences.append(_sentence(f"the first one: {attributions[forged_resets[0]].evidence[0]}"))
            if not toward_server:
                sentences.append("No sign was seen of resets toward the server in our name (its challenge ACK, "
                                 "RFC 5961, or a reset for a connection it lost); a device may still have sent "
                                 "some: servers rate-limit challenge ACKs.")
        if toward_server:
            sentences.append("A device in between reset the connection toward the server, in our name.")
            sentences.extend(_sentence(evidence) for evidence in toward_server)
        # no hop: a forger's TTL is no location (it may copy a TTL): locating is `probe trace`'s job
        return "middlebox-reset", direction, None, None, sentences
    if icmp_errors:
        hop, sentence = judge_unreachable(packets[icmp_errors[0]], flow, baseline)
        return "unreachable", None, hop, "icmp" if hop else None, [sentence]
    if baseline.synack is None:
        if genuine_resets:
            packet = packets[genuine_resets[0]]
            return ("server-reset", None, None, None,
                    [f"The SYN was answered with a reset (TTL {packet.ttl}, about hop {hop_distance(packet.ttl)}); "
                     f"nothing suggests it was not the server's own (closed port)."])
        syns = sum(1 for p in packets if flow.sent_by_client(p) and p.flags == "S")
        return "no-answer", None, None, None, [f"No answer to {syns} SYN(s)."]
    if genuine_resets:
        packet = packets[genuine_resets[0]]
        attribution = attributions[genuine_resets[0]]
        if attribution.origin == "unknown":
            return ("ambiguous-reset", None, None, None,
                    [f"The connection was reset ({packet.flags}, TTL {packet.ttl}), but the evidence does not say "
                     f"whether the server sent it: {attribution.evidence[0]}.",
                     "`probe trace` can tell whether it comes from a hop before the server."])
        return ("server-reset", None, None, None,
                [f"The server reset the connection ({packet.flags}, TTL {packet.ttl} as its SYN-ACK"
                 f"{'' if packet.ttl == baseline.server_ttl else ' had ' + str(baseline.server_ttl)})."])
    responses = [i for i in received if packets[i].length and i in baseline.members]
    if responses:
        sentences = ["The server answered the request; nothing in between interfered."]
        if after_close:
            sentences.append(f"The reset after its FIN ({packets[after_close[0]].flags}, TTL "
                             f"{packets[after_close[0]].ttl}) answers a segment of ours that reached the "
                             f"connection once the server had closed it.")
        return "clean", None, None, None, sentences
    request = first_request(packets, flow)
    if request is not None:
        copies = sum(1 for p in packets if flow.sent_by_client(p) and p.length and p.seq == request.seq)
        expired = h.tables_of(packets, flow, baseline).memo("expired copies", lambda: h.expired_copies(packets, flow))
        data = [i for i, p in enumerate(packets) if flow.sent_by_client(p) and p.length]
        if data and all(i in expired for i in data):
            return ("expired", None, None, None,
                    [f"Our request was sent with TTL {request.ttl} and expired at router {expired[data[0]]} "
                     f"(ICMP time exceeded), as a traceroute-style probe's does: it never reached the server, and "
                     f"nothing answered it in the server's name."])
        short = baseline.expires_within
        if data and short is not None and all(packets[i].ttl <= short[0] for i in data) \
                and not request_acknowledged(packets, flow, request):
            return ("expired", None, None, None,
                    [f"Our request was sent with TTL {request.ttl}, short of the server: in this capture requests "
                     f"with TTL {short[0]} expire at router {short[1]}. No router answered this copy (many send no "
                     f"time exceeded), and nothing answered it in the server's name."])
        if request_acknowledged(packets, flow, request):
            return ("dropped", None, None, None,
                    ["The server acknowledged the request but never answered it."])
        return ("dropped", None, None, None,
                [f"The handshake completed, but nothing answered the request or its {copies - 1} "
                 f"retransmission(s)."])
    return "dropped", None, None, None, ["The handshake completed but the request was never sent."]


def _sentence(text: str) -> str:
    """Evidence (lower case, no full stop) as a sentence of an explanation."""
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def slow_answer_after_fast_handshake(packets: list[PacketRecord], flow: Flow, baseline: Baseline) -> str | None:
    """The answer took far longer than the handshake: something close may have shaken hands.

    A transparent proxy answers the SYN itself and fetches from the server, so its handshake RTT
    is short and the answer comes one proxy-to-server round trip later. A slow application looks
    the same, so this is a note that points at `probe trace`, never a verdict."""
    if baseline.synack is None or baseline.rtt is None:
        return None
    request = first_request(packets, flow)
    answer = next((i for i in sorted(baseline.members) if packets[i].length), None)
    if request is None or answer is None:
        return None
    latency = packets[answer].t - request.t
    handshake = baseline.synack.t - next(p.t for p in packets if flow.sent_by_client(p))
    if latency > 10 * max(handshake, 0.0005) and latency - handshake > 0.020:
        return (f"Note: the answer took {latency * 1000:.1f} ms but the handshake only "
                f"{handshake * 1000:.1f} ms; a transparent proxy near you may have answered the handshake "
                f"(or the application is slow). `probe trace` can tell.")
    return None


def apply_location(packets: list[PacketRecord], flow: Flow, attributions: list[Attribution], baseline: Baseline,
                   decision: tuple, location: Location | None) -> tuple[tuple, list[Attribution]]:
    """Revise a verdict with the TTL sweeps: a TCP answer from in front of the server's address
    was not the server's. Only two verdicts can hide such a box from the exchange alone: a reset
    answering the SYN (no SYN-ACK to compare with) and a clean exchange whose handshake was
    answered from nearby (a transparent proxy). Returns the decision and the attributions,
    revised or as they were; the ones given are never changed."""
    verdict, direction, hop, hop_basis, sentences = decision
    if location is not None and not location.in_front and verdict == "server-reset" and baseline.synack is None:
        return _reset_against_sweep(packets, flow, attributions, decision, location)
    if location is None or not location.in_front:
        return decision, attributions
    attributions = list(attributions)
    where = (f"the TCP answer comes from hop {location.hop}, while {flow.server} itself is at hop "
             f"{location.address_at} (" + "; ".join(location.evidence) + ")")
    received = [i for i, p in enumerate(packets) if flow.toward_client(p)]
    if verdict == "server-reset" and baseline.synack is None:
        for i in received:
            if "R" in packets[i].flags:
                attributions[i] = Attribution("middlebox", "high", (where,) + attributions[i].evidence)
        return ("middlebox-reset", "to-client", location.hop, "ttl-sweep",
                [f"A device at hop {location.hop} answered our SYN with a reset in the server's name: {where}."]), \
            attributions
    if verdict == "clean":
        for i in received:
            attributions[i] = Attribution("middlebox", "medium", (where,) + attributions[i].evidence)
        return ("middlebox-response", "to-client", location.hop, "ttl-sweep",
                [f"A device at hop {location.hop} answered in the server's place (a transparent proxy): {where}."]), \
            attributions
    return decision, attributions


def _reset_against_sweep(packets: list[PacketRecord], flow: Flow, attributions: list[Attribution],
                        decision: tuple, location: Location) -> tuple[tuple, list[Attribution]]:
    """A reset to our SYN, when the sweep's SYN drew the server's own SYN-ACK from its address's hop.

    Why: the SYN-ACK gives what the exchange lacked, the TTL the server's packets arrive with.
    A reset from a sender nearer than the server by two hops or more (or nearer and from another
    initial TTL) is not the server's: the rule of `heuristics.ttl_distance` and
    `heuristics.initial_ttl_class`, with the sweep's SYN-ACK as the baseline. This is what a
    box on one branch of an ECMP pair shows when the sweep's SYN took the other branch, or a box
    that blocks a four-tuple once. False positive: a difference of one hop, which a path change
    or an uneven ECMP pair also makes; it is left as it was."""
    answer = location.answer
    if answer is None or answer.reply_ttl is None or "S" not in answer.flags or "A" not in answer.flags:
        return decision, attributions
    resets = [i for i, p in enumerate(packets) if flow.toward_client(p) and "R" in p.flags]
    if not resets:
        return decision, attributions
    first = packets[resets[0]]
    sender, server = hop_distance(first.ttl), hop_distance(answer.reply_ttl)
    other_stack = initial_ttl(first.ttl) != initial_ttl(answer.reply_ttl)
    if not (server - sender >= 2 or (other_stack and sender < server)):
        return decision, attributions
    why = (f"the server's own SYN-ACK, drawn by the sweep's SYN with TTL {answer.ttl}, arrives with TTL "
           f"{answer.reply_ttl} (about hop {server}); this reset arrived with TTL {first.ttl} (about hop {sender})"
           + (", from another initial TTL" if other_stack else ""))
    attributions = list(attributions)
    for i in resets:
        attributions[i] = Attribution("middlebox", "high", (why,) + attributions[i].evidence)
    # no hop: a forger's TTL is no location (it may copy a TTL), and the sweep did not meet it
    return ("middlebox-reset", "to-client", None, None,
            [f"A device in between answered our SYN with a reset in the server's name: {why}.",
             "The server accepts connections on this port, and the sweep's SYNs did not meet the device "
             "(another path, or a device that blocks a connection only once), so its hop is not known."]), \
        attributions


def wants_location(analysis: Analysis) -> bool:
    """Whether the exchange alone left a box possibly hidden (see `apply_location`)."""
    return (analysis.verdict == "server-reset" and analysis.rtt_ms is None) or bool(analysis.notes)


def analyze_flow(packets: list[PacketRecord], flow: Flow, location: Location | None = None,
                 expires_within: tuple[int, str] | None = None) -> Analysis:
    """The engine's one entry point: the packets of one flow in capture order, and who is who;
    `location`, when the TTL sweeps were run, can revise the verdict (`apply_location`);
    `expires_within`, (TTL, router), when other connections of the same capture proved that our
    packets sent with that TTL or less expire before the server (`Baseline.expires_within`)."""
    baseline = build_baseline(packets, flow)
    if expires_within is not None:
        baseline = replace(baseline, expires_within=expires_within)
    attributions = attribute(packets, flow, baseline)
    decision = decide(packets, flow, attributions, baseline)
    decision, attributions = apply_location(packets, flow, attributions, baseline, decision, location)
    verdict, direction, hop, hop_basis, sentences = decision
    handshake_rtt = None
    if baseline.synack is not None:
        syns = [p for p in packets if flow.sent_by_client(p) and p.flags == "S"]
        before = [p for p in syns if p.t <= baseline.synack.t] or syns
        handshake_rtt = round(max(baseline.synack.t - before[-1].t, 0.0) * 1000, 3)
    notes = ()
    if verdict == "clean" and location is None:
        note = slow_answer_after_fast_handshake(packets, flow, baseline)
        notes = (note,) if note else ()
    return Analysis(verdict, direction, hop, handshake_rtt, tuple(attributions), " ".join(sentences + list(notes)),
                    hop_basis, notes)
