"""Where along the path the trigger's fate parts from the control's: pure reasoning over a trace.

Theory of operation (CenTrace, Sundara Raman et al., CoNEXT 2022; tracebox, Detal et al.,
IMC 2013). For TTL 1, 2, ... a fresh connection is opened at full TTL and its request is sent
with that TTL: once naming the host under test (the trigger), once naming an innocuous host
(the control). Each request's fate is one word (`fate_of`):

- `time-exceeded`: a router at that hop answered in its own name; nothing else happened;
- `server`: the server itself answered (the request got through);
- `reset` / `response`: something answered the request in the server's name without the
  request having reached the server (at a TTL short of the server, any answer is forged;
  at or beyond it, an answer that does not arrive like the server's SYN-ACK is);
- `time-exceeded+reset` / `time-exceeded+response`: both at once: the expired copy still drew
  time-exceeded from the router, so whatever forged the answer saw it *before* that router's TTL
  check: an on-path tap;
- `unreachable`: an ICMP destination-unreachable quoting the request;
- `silent`: nothing came back; `no-handshake`: the connection itself could not be opened.

The box sits where the trigger's fate first differs from the control's (`locate_box`):
- a forged answer *with* time-exceeded at TTL k: a tap at hop k (it sees packets before the
  router's TTL check);
- a forged answer, silence or an ICMP error *without* time-exceeded at TTL k, while the control
  still drew time-exceeded or the server: the trigger was consumed between hop k-1's TTL check
  and hop k's: a box in the forwarding path of hop k-1 (it sees only packets that survived that
  router). The TTL its own packets arrive with (distance = initial TTL - TTL + 1) can move it to
  k when it says so; an injector that copies our packet's TTL into its answer (the answer
  arrives with a TTL below k, which no ordinary sender could manage) is placed by arithmetic:
  it answers with our TTL on arrival, k - (h - 1), which loses h - 1 more on the way back.

`bracket` is what the trace proves without any of that reasoning: `passed` is the farthest hop
the trigger reached without drawing interference, `not_reached` the first hop the interfering
copy did not reach. The box lies after `passed`'s TTL check and before `not_reached`.

Known limits: routers that never send time-exceeded widen the bracket (the hop then rests on the
box's TTL alone, and says so); a box that blocks a whole address pair after one trigger makes
every later control fail too (the first difference is still the right hop); load-balanced paths
can put different routers at one TTL.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from probe.engine.baseline import hop_distance
from probe.engine.model import Analysis, Flow
from probe.record import PacketRecord, is_time_exceeded
from probe.seq import seq_diff

INTERFERING = ("reset", "response", "silent", "unreachable", "no-handshake")
REACHED = ("time-exceeded", "server")


@dataclass(frozen=True)
class SentRequest:
    """What was sent for one TTL-limited request, to recognise the replies and quotes of it."""

    ttl: int
    seq: int
    length: int
    ip_id: int
    tos: int = 0
    t: float = 0.0


@dataclass(frozen=True)
class Fate:
    """What one TTL-limited request drew."""

    word: str
    router: str | None = None  # the source of the time-exceeded or unreachable
    rtt_ms: float | None = None  # from the request to the router's answer
    reply_src: str | None = None
    reply_ttl: int | None = None  # the TTL the forged (or server's) answer arrived with
    rewritten: tuple[str, ...] = ()  # what the quoted header says changed on the way

    @property
    def expired(self) -> bool:
        return self.word.startswith("time-exceeded")


@dataclass(frozen=True)
class HopRow:
    ttl: int
    address: str | None
    rtt_ms: float | None
    trigger: Fate
    control: Fate
    confirmed: bool = False  # the difference was seen twice


@dataclass(frozen=True)
class TraceResult:
    interference: bool
    hop: int | None
    bracket: tuple[int, int] | None  # (passed, not_reached)
    kind: str | None  # "on-path" (tap) or "in-path" (consumes the trigger)
    reached_server_at: int | None
    evidence: tuple[str, ...]


def _rewrites(quoted, sent: SentRequest, flow: Flow) -> tuple[str, ...]:
    """Differences between the header a router quotes and the one we sent (tracebox)."""
    changes = []
    if quoted.dst != flow.server or quoted.dport != flow.server_port:
        changes.append(f"destination rewritten to {quoted.dst}:{quoted.dport}")
    if quoted.src != flow.client or quoted.sport != flow.client_port:
        changes.append(f"source rewritten to {quoted.src}:{quoted.sport} (NAT)")
    if quoted.seq is not None and quoted.seq != sent.seq:
        changes.append(f"sequence number shifted by {(quoted.seq - sent.seq) % 2**32}")
    if quoted.tos != sent.tos:
        changes.append(f"TOS/DSCP changed from {sent.tos:#04x} to {quoted.tos:#04x}")
    headers = 60 if quoted.version == 6 else 40  # IPv6's fixed header is 40 bytes (RFC 8200 3), IPv4's 20
    if quoted.ip_len and sent.length and quoted.ip_len not in (headers + sent.length, headers + 12 + sent.length):
        changes.append(f"IP length {quoted.ip_len} (payload changed on the way)")
    return tuple(changes)


def _quotes(packet: PacketRecord, sent: SentRequest, flow: Flow) -> bool:
    quoted = packet.quoted
    if packet.proto != "icmp" or quoted is None or quoted.proto != 6:
        return False
    if quoted.ip_id == sent.ip_id and quoted.sport == flow.client_port:
        return True
    return flow.quotes_flow(packet) and quoted.seq == sent.seq


def fate_of(packets: list[PacketRecord], flow: Flow, sent: SentRequest | None,
            server_distance: int | None) -> Fate:
    """The one-word fate of a TTL-limited request, from the packets of its connection."""
    synack = next((p for p in packets if flow.toward_client(p) and "S" in p.flags and "A" in p.flags), None)
    if sent is None:
        return Fate("no-handshake")
    if synack is None:
        return _fate_without_handshake(packets, flow, sent)
    expired = unreachable = None
    forged = genuine = None
    horizon = _answer_horizon(packets, flow, sent)
    for packet in packets:
        if packet.t < sent.t:
            continue
        if _quotes(packet, sent, flow):
            if is_time_exceeded(packet):
                expired = expired or packet
            else:
                unreachable = unreachable or packet
            continue
        if not flow.toward_client(packet) or "S" in packet.flags or packet.t > horizon:
            continue
        if "A" in packet.flags and seq_diff(packet.ack, synack.ack) < 0:
            # it acknowledges less than this connection's SYN: a late packet of an earlier connection
            # on the same four-tuple (a trace reuses one source port; our ISNs only grow, RFC 6528)
            continue
        # an ACK counts only if it acknowledges the whole request: a backward (challenge) ACK does not,
        # nor an ACK of a FIN we sent later at the request's sequence number (a request sent from a
        # raw socket leaves the kernel's FIN there: CenTrace's captures)
        answers = "R" in packet.flags or packet.length or seq_diff(packet.ack, sent.seq + sent.length) >= 0
        if not answers:
            continue
        short_of_server = server_distance is not None and sent.ttl < server_distance
        if short_of_server or packet.ttl != synack.ttl:
            forged = forged or packet
        else:
            genuine = genuine or packet
    rtt = None
    if forged is not None:
        word = "reset" if "R" in forged.flags else "response"
        if expired is not None:
            word = "time-exceeded+" + word
        router = expired.src if expired is not None else None
        if expired is not None:
            rtt = round((expired.t - sent.t) * 1000, 3)
        return Fate(word, router, rtt, forged.src, forged.ttl,
                    _rewrites(expired.quoted, sent, flow) if expired is not None else ())
    for word, packet in (("time-exceeded", expired), ("unreachable", unreachable)):
        if packet is not None:
            return Fate(word, packet.src, round((packet.t - sent.t) * 1000, 3), rewritten=_rewrites(
                packet.quoted, sent, flow))
    if genuine is not None:
        return Fate("server", genuine.src, round((genuine.t - sent.t) * 1000, 3), genuine.src, genuine.ttl)
    return Fate("silent")


def _answer_horizon(packets: list[PacketRecord], flow: Flow, sent: SentRequest) -> float:
    """Until when a packet can answer the request: what arrives before we sent anything else (a
    capture's connection goes on to a FIN, which the server may answer with a reset of its own)."""
    return next((p.t for p in packets if flow.sent_by_client(p) and p.t > sent.t
                 and (p.seq != sent.seq or p.length != sent.length)), float("inf"))


def _fate_without_handshake(packets: list[PacketRecord], flow: Flow, sent: SentRequest) -> Fate:
    """A capture's request sent although no SYN-ACK came (CenTrace sends it anyway): where it expired
    still names a router, and what answered it in the server's name still counts (there is no
    handshake to compare with: any answer to it is taken as met)."""
    horizon = _answer_horizon(packets, flow, sent)
    expired = next((p for p in packets if p.t >= sent.t and _quotes(p, sent, flow) and is_time_exceeded(p)), None)
    answer = next((p for p in packets if flow.toward_client(p) and sent.t <= p.t <= horizon
                   and ("R" in p.flags or p.length)), None)
    if answer is None and expired is None:
        return Fate("no-handshake")
    rtt = round((expired.t - sent.t) * 1000, 3) if expired is not None else None
    rewritten = _rewrites(expired.quoted, sent, flow) if expired is not None else ()
    if answer is None:
        return Fate("time-exceeded", expired.src, rtt, rewritten=rewritten)
    word = "reset" if "R" in answer.flags else "response"
    return Fate(("time-exceeded+" if expired is not None else "") + word, expired.src if expired else None, rtt,
                answer.src, answer.ttl, rewritten)


def differs(trigger: Fate, control: Fate) -> bool:
    """Whether the trigger met something the control did not."""
    return trigger.word != control.word and (trigger.word in INTERFERING or "+" in trigger.word) \
        and control.word not in INTERFERING


def only_silence(trigger: Fate, control: Fate) -> bool:
    """A difference that is the trigger's silence alone, beside a control that drew an answer.
    A lost request or a lost time-exceeded makes it too (under 3% loss each way, about 6% of
    copies), so one repeat of it is two losses in a row about 1 time in 300 at each TTL before
    the box: the accuracy matrix's hops named too near under loss. It takes two repeats
    (`probe.engine.order`, rule 3); any other difference, one."""
    return trigger.word == "silent" and control.word not in ("silent", "no-handshake")


def locate_box(rows: list[HopRow]) -> TraceResult:
    """The first hop at which the trigger's fate parts from the control's, and what that means."""
    reached = next((row.ttl for row in rows if row.control.word == "server"), None)
    first = next((row for row in rows if differs(row.trigger, row.control) and row.confirmed), None)
    if first is None:
        if reached is not None:
            return TraceResult(False, None, None, None, reached, (
                f"the trigger and the control met the same fate at every TTL up to the server (TTL {reached})",))
        last = rows[-1].ttl if rows else 0
        return TraceResult(False, None, None, None, None, (
            f"no difference between the trigger and the control up to TTL {last}, and neither reached the "
            f"server: inconclusive",))
    k, trigger = first.ttl, first.trigger
    clean = [row.ttl for row in rows if row.ttl < k and row.trigger.expired and not differs(row.trigger, row.control)]
    passed = clean[-1] if clean else 0
    evidence = [f"up to TTL {k - 1} the trigger met the same fate as the control"] if k > 1 else []
    if trigger.expired:
        hop, kind = k, "on-path"
        evidence.append(f"at TTL {k} the trigger still expired at router {trigger.router}, and something "
                        f"answered it in the server's name ({trigger.word.split('+')[1]} arriving with TTL "
                        f"{trigger.reply_ttl}): a box that sees packets before hop {k}'s TTL check")
        not_reached = k + 1
    else:
        hop, kind, not_reached = k - 1, "in-path", k
        what = {"silent": "vanished", "reset": "drew a reset in the server's name",
                "response": "drew an answer in the server's name", "no-handshake": "could not even connect",
                "unreachable": f"drew ICMP unreachable from {trigger.router}"}[trigger.word]
        control = first.control
        if control.word == UNOBSERVED.word:
            evidence.append(f"at TTL {k} the trigger {what}, while at TTL {k - 1} it still expired at a router (no "
                            f"control capture to compare with): it was consumed after hop {k - 1}'s TTL check")
        else:
            while_control = ("expired at router " + str(control.router) if control.expired else "reached the server")
            evidence.append(f"at TTL {k} the trigger {what} while the control {while_control}: "
                            f"it was consumed after hop {k - 1}'s TTL check")
        if trigger.word == "unreachable":
            at = next((row.ttl for row in rows if row.control.router == trigger.router and row.control.expired), None)
            if at is not None:
                hop = at
                evidence.append(f"router {trigger.router} is hop {at} (the control expired there)")
    if trigger.reply_ttl is not None and trigger.word != "unreachable":
        if trigger.reply_ttl < k:
            copied = k - trigger.reply_ttl
            if copied % 2 == 0:
                hop = copied // 2 + 1
                evidence.append(f"its answer arrived with TTL {trigger.reply_ttl}, below the {k} we sent: it "
                                f"copies our packet's TTL on arrival, which puts it at hop {hop}")
        else:
            # the bracket is what the copies proved; the box's own TTL may choose within it (an
            # earlier TTL whose difference was not confirmed, e.g. its answer came late, leaves
            # the bracket wider than one hop)
            distance = hop_distance(trigger.reply_ttl)
            if max(passed, 1) <= distance <= k and distance != hop:
                evidence.append(f"its answer arrived with TTL {trigger.reply_ttl}, from hop {distance}")
                hop = distance
            elif distance == hop:
                evidence.append(f"its answer arrived with TTL {trigger.reply_ttl}: sent from hop {distance}")
    if hop < 1:
        hop = 1
        evidence.append("the box sits before the first router (on this host's own link)")
    passed = min(passed, hop - 1 if kind == "on-path" else hop)
    not_reached = max(not_reached, hop + 1)
    return TraceResult(True, hop, (passed, not_reached), kind, reached, tuple(evidence))


def rows_from_sweeps(tcp_sweep, echo_sweep) -> list[HopRow]:
    """The SYN-level trace (no handshake to build on) as hop rows: the TTL-limited SYN is the
    trigger, the TTL-limited ICMP echo toward the same address the control."""
    words = {"time-exceeded": "time-exceeded", "echo-reply": "server", "unreachable": "unreachable",
             "none": "silent"}

    def fate(reply) -> Fate:
        if reply is None:
            return Fate("silent")
        if reply.kind == "tcp":
            word = "reset" if "R" in reply.flags else "server"
            return Fate(word, None, reply.rtt_ms, reply.source, reply.reply_ttl)
        return Fate(words[reply.kind], reply.source, reply.rtt_ms)

    echo = {reply.ttl: reply for reply in echo_sweep}
    rows = []
    for reply in tcp_sweep:
        trigger, control = fate(reply), fate(echo.get(reply.ttl))
        address = control.router if control.expired else trigger.router
        rows.append(HopRow(reply.ttl, address, control.rtt_ms if control.expired else trigger.rtt_ms,
                           trigger, control))
    return rows


def result_from_location(location, rows: list[HopRow]) -> TraceResult:
    """The SYN-level trace's conclusion (`probe.engine.locate`) in the request trace's terms."""
    if not location.in_front or location.hop is None:
        return TraceResult(False, None, None, None, location.address_at, tuple(location.evidence))
    answered = location.tcp_answer_at
    passed = max((row.ttl for row in rows if row.trigger.expired and row.ttl < answered), default=0)
    not_reached = answered if location.hop < answered else answered + 1
    return TraceResult(True, location.hop, (min(passed, location.hop), not_reached), "in-path",
                       location.address_at, tuple(location.evidence))


def apply_trace(analysis: Analysis, result: TraceResult) -> Analysis:
    """Give a verdict of interference the hop the trace found (the verdict itself stands: the
    trace says where, the exchange says what)."""
    if not result.interference or analysis.verdict not in ("middlebox-reset", "middlebox-response", "dropped",
                                                           "unreachable"):
        return analysis
    if result.bracket is None:
        sentence = f"The forged packets' own TTL puts the box at about hop {result.hop}."
    else:
        sentence = (f"TTL-limited copies of the request place the box at hop {result.hop} "
                    f"(after hop {result.bracket[0]}, before hop {result.bracket[1]}).")
    return replace(analysis, hop=result.hop, hop_basis="trace", explanation=f"{analysis.explanation} {sentence}")


# --- traces found in capture files (CenTrace, tracevis, `probe trace --pcap`) --------------------------

UNOBSERVED = Fate("unobserved")  # no control copy at this TTL: only a trigger that met something differs
NOT_PROBED = Fate("not-probed")  # the capture holds no request with this TTL


def limited_request(packets: list[PacketRecord], flow: Flow) -> SentRequest | None:
    """Our first data segment, if it was sent with a TTL below our SYN's: a TTL-limited request, as
    traceroute-style tools send one per connection."""
    syn = next((p for p in packets if flow.sent_by_client(p) and "S" in p.flags and "A" not in p.flags), None)
    request = next((p for p in packets if flow.sent_by_client(p) and p.length), None)
    if syn is None or request is None or request.ttl >= syn.ttl:
        return None
    return SentRequest(request.ttl, request.seq, request.length, request.ip_id, request.tos, request.t)


def fates_by_ttl(fates: list[tuple[int, Fate]]) -> dict[int, Fate]:
    """One fate per TTL when a capture holds several connections at a TTL (repetitions): the first
    that met interference, else the first."""
    result: dict[int, Fate] = {}
    for ttl, fate in fates:
        if ttl not in result or (_met_something(fate) and not _met_something(result[ttl])):
            result[ttl] = fate
    return result


def _met_something(fate: Fate) -> bool:
    return fate.word in ("reset", "response") or "+" in fate.word


def expired_floor(*fate_maps: dict[int, Fate]) -> tuple[int, str] | None:
    """The largest TTL at which a request demonstrably expired at a router (time exceeded and nothing
    else), with that router: requests sent with that TTL or less never reach the server."""
    expired = [(ttl, fate.router) for fates in fate_maps for ttl, fate in fates.items() if fate.word == "time-exceeded"]
    return max(expired) if expired else None


def capture_rows(trigger: dict[int, Fate], control: dict[int, Fate] | None) -> list[HopRow]:
    """Hop rows from the TTL-limited requests of a capture (`trigger`) and, if there is one, of a
    control capture (`control`, CenTrace's run with an innocuous domain). Every row counts as
    confirmed: a capture cannot be asked again. Without a control, a TTL is compared with nothing
    (`UNOBSERVED`), so only a trigger that met a reset or an answer differs; silence does not (a
    router that sends no time exceeded is silent too), and with a control, silence differs only
    when no later copy of the trigger got through (a box that drops the trigger silences every
    TTL after it). The router of a row is the trigger's own
    where its copy expired (the path its connections took), else the control's."""
    rows = []
    passed_later = [ttl for ttl, fate in trigger.items() if fate.word in REACHED]
    for ttl in sorted(set(trigger) | set(control or {})):
        fate = trigger.get(ttl, NOT_PROBED)
        other = (control or {}).get(ttl) if control is not None else (UNOBSERVED if _met_something(fate) else fate)
        other = other or Fate("silent")
        if fate.word == "silent" and any(later > ttl for later in passed_later) or fate.word == "no-handshake":
            other = fate  # a copy that vanished while later ones got through (a router's silence, not a box),
            # or a connection that never had a handshake: its request's fate says nothing about the TTL
        address = fate.router if fate.expired else other.router if other.expired else None
        rtt = fate.rtt_ms if fate.expired else other.rtt_ms if other.expired else None
        rows.append(HopRow(ttl, address, rtt, fate, other, confirmed=True))
    return rows


def address_at(rows: list[HopRow], hop: int | None) -> str | None:
    """The router the rows saw at TTL `hop`."""
    return next((row.address for row in rows if row.ttl == hop), None)


# --- when to locate, and how: the policy check, trace and batch share ----------------------------


def needs_trace(analysis) -> bool:
    """Interference, or a reset nobody can vouch for: worth finding where it comes from."""
    ambiguous_reset = any(a.origin == "unknown" for a in analysis.attributions) and analysis.verdict != "clean"
    return analysis.verdict in ("middlebox-reset", "middlebox-response", "dropped") or ambiguous_reset


def locating_step(analysis, always: bool = False) -> str | None:
    """Which TTL sweep can place the box this exchange points at: "sweeps" (TTL-limited SYNs
    beside ICMP echoes: no handshake to build on, or one answered from suspiciously near, a
    transparent proxy), "trace" (TTL-limited copies of the request beside a control: interference
    after the handshake), or None. `always`: `probe trace`, which locates whatever happened."""
    from probe.engine.verdict import wants_location  # verdict imports this module

    if wants_location(analysis) or (always and analysis.rtt_ms is None):
        return "sweeps"
    if (always or needs_trace(analysis)) and analysis.rtt_ms is not None:
        return "trace"
    return None


def sweep_wait(analysis) -> float:
    """How long each TTL-limited SYN or echo is waited for: 0.5 s, or 3 round trips if longer."""
    return max(0.5, 3 * (analysis.rtt_ms or 0) / 1000)


def server_ttl_of(packets: list[PacketRecord], flow: Flow) -> int | None:
    """The TTL the handshake's SYN-ACK arrived with (the trace's yardstick for the server)."""
    return next((p.ttl for p in packets if flow.toward_client(p) and "S" in p.flags and "A" in p.flags), None)
