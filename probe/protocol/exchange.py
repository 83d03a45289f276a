"""One crafted exchange from its SYN to its last closing reset, with no I/O.

Theory of operation. `probe.protocol.tcp.ClientConnection` plays the client's TCP; this class owns
what lies around it, which used to be written once per command: the hard bound on the
exchange (`max_time`), the linger that follows it, the resets that leave nothing half-open on
the server, the wait until those resets are recorded too, and the TTL each segment leaves
with. The I/O loop (`probe.network.loop`) asks it what to send (`Outgoing` packets, crafted here) and
when to wake (`wake_at`), and hands it what happened as values: a frame of its flow
(`on_packet`), a timer that ran out (`on_timer`), a packet the host lost or refused
(`on_send_failed`). It never reads a clock or a socket, so the fake network of the unit
tests drives it exactly as the wire does.

Its life is four phases; what each event does in each phase is the table below (`on_timer`
and `_settle` follow it, in that order):

    phase     a frame of the flow                a timer                        ends when
    RUNNING   recorded; the connection answers   the connection's own timers    the connection is done, or
                                                                                `max_time` passed (gave up),
                                                                                or the request is out (`until="request"`)
    LINGER    recorded; the connection answers   none (`linger_timers`: its     `linger` seconds passed
              (a late answer is still acked)     own, as a trace copy needs)
    CLOSING   recorded; DONE once our resets     DONE after `close_wait`        every reset sent is recorded
              are all in the record
    DONE      recorded if the loop keeps it      none                           -

In CLOSING and DONE, once resets went, the connection is CLOSED to us, and a segment the
server still sends (without RST, with ACK) is answered as RFC 9293 3.10.7.1 says a closed
port does, <SEQ=SEG.ACK><CTL=RST> (`_answer_closed`): it means a reset of ours did not close
the server's side. Mostly a challenge ACK (RFC 5961 3.2) to one at an in-window but inexact
sequence number, the exact one lost on the way; left unanswered, the server kept the
connection, and a trace's next copy on that four-tuple met it with a challenge ACK.

The closing resets go at every sequence number the server may expect (`closing_resets`), and
only when the connection did not close politely (FINs both ways). A send that fails hard (no
route, a local firewall rule) ends the exchange with `error` set, except a closing reset's,
which is best effort: the others still go, and only those that left are waited for. Every
packet that left is recorded, because the capture records it.

A trace copy is an exchange with other parameters (`Plan`): its request leaves with a chosen
TTL, its retransmissions do not leave at all, and it ends a window after the request is out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from probe.engine.model import Flow
from probe.protocol.tcp import ClientConnection, Progress, Segment, seq_add

CLOSE_WAIT = 0.5  # seconds to wait for our closing resets to show in the capture
CLOSED_ANSWERS = 2  # resets at most in answer to the server's segments after ours (`_answer_closed`)


def default_linger(rtt: float | None) -> float:
    """How long to keep listening after an exchange: 0.5 s, or three round trips if longer."""
    return max(0.5, 3 * (rtt or 0.0))


class Phase(enum.Enum):
    RUNNING = "running"
    LINGER = "linger"
    CLOSING = "closing"
    DONE = "done"


@dataclass(frozen=True)
class Plan:
    """How one exchange is driven.

    `until`: "done" runs the connection to its end (check, batch); "request" ends the running
    phase once the request is out, and lingers `linger` seconds for what it draws (a trace copy;
    with no request out by `max_time`, it closes at once). `request_ttl`: the TTL of the request
    segment (the others leave at `ttl`); its retransmissions are then not sent at all.
    `linger` None: `default_linger` of the measured round trip."""

    max_time: float = 30.0
    linger: float | None = None
    close_wait: float = CLOSE_WAIT
    ttl: int = 64
    request_ttl: int | None = None
    until: str = "done"
    linger_timers: bool = False


@dataclass
class Measurement:
    """Everything recorded about one exchange: what the engine and the writers need."""

    target: object
    flow: Flow
    packets: list = field(default_factory=list)
    frames: list = field(default_factory=list)
    progress: Progress | None = None
    application: object = None  # what rode on the connection (probe.protocol.http / probe.protocol.tls), for its report


@dataclass(frozen=True)
class Outgoing:
    """A crafted packet for the loop to send, and the segment it carries."""

    packet: bytes
    destination: str
    segment: Segment | None  # None: not a TCP segment of an exchange (a sweep's ICMP echo)


def closing_resets(connection: ClientConnection) -> list[Segment]:
    """Resets at every sequence number the server may expect: what it last acknowledged, all we
    sent, or nothing of the request at all when the request never arrived. A reset at the wrong
    one of these draws at most a challenge ACK (RFC 5961). None when nothing is left open: no
    SYN-ACK was ever seen, or the connection closed with FINs both ways."""
    if connection.irs is None or connection.progress.closed_politely:
        return []
    seqs: list[int] = []
    for seq in (connection.snd_una, connection.snd_nxt, seq_add(connection.isn, 1)):
        if seq not in seqs:
            seqs.append(seq)
    return [Segment("R", seq, 0, 0, purpose="close") for seq in seqs]


class Exchange:
    """One exchange's whole life (see the module doc). `tag` and `target` are the caller's."""

    def __init__(self, flow: Flow, connection: ClientConnection, crafter, plan: Plan = Plan(),
                 target=None, tag=None):
        self.flow, self.connection, self.crafter, self.plan = flow, connection, crafter, plan
        self.tag, self.target = tag, target
        self.measurement = Measurement(target, flow)
        self.phase = Phase.RUNNING
        self.hard_deadline = 0.0
        self.linger_until = 0.0
        self.closing_until = 0.0
        self.closing_expected = 0  # packets recorded once every closing reset that left is in
        self.reset_sent = False  # closing resets went: the connection is CLOSED to us
        self.closed_answers = 0  # resets sent since, answering the server (`_answer_closed`)
        self.error: str | None = None
        self.request_ip_id: int | None = None  # the first request copy's IP-ID, when `request_ttl` is set
        self.reservation = None  # what holds its port: the caller's, closed by the caller

    @property
    def key(self) -> tuple:
        flow = self.flow
        return (flow.client, flow.client_port, flow.server, flow.server_port)

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    # -- events ----------------------------------------------------------------------------------

    def start(self, now: float) -> list[Outgoing]:
        self.hard_deadline = now + self.plan.max_time
        return self._craft(self.connection.start(now), now)

    def on_packet(self, frame, record, now: float) -> list[Outgoing]:
        """A frame of this flow (either way, or an ICMP error quoting it): recorded, and a
        received one handed to the connection unless the exchange is closing or done."""
        self.measurement.frames.append(frame)
        self.measurement.packets.append(record)
        if self.phase in (Phase.CLOSING, Phase.DONE):
            out = self._answer_closed(frame, record, now)
            if self.phase is Phase.CLOSING and len(self.measurement.packets) >= self.closing_expected:
                self._finish()
            return out
        if frame.outgoing or self.flow.sent_by_client(record):
            return []
        out = self._craft(self.connection.on_packet(record, now), now)
        return out + self._settle(now)

    def on_timer(self, now: float) -> list[Outgoing]:
        """Whatever is due at `now` (a call before anything is due does nothing)."""
        if self.phase is Phase.RUNNING:
            return self._craft(self.connection.on_timer(now), now) + self._settle(now)
        if self.phase is Phase.LINGER:
            out = self._craft(self.connection.on_timer(now), now) if self.plan.linger_timers else []
            if now >= self.linger_until:
                out += self._close(now)
            return out
        if self.phase is Phase.CLOSING and now >= self.closing_until:
            self._finish()
        return []

    def on_send_failed(self, outgoing: Outgoing, error: str | None) -> None:
        """The host did not send `outgoing`: lost to a full queue (`error` None: the state
        machine retransmits what matters, as after a loss on the wire) or refused (no route, a
        local rule: the exchange ends with that error, unless it was a closing reset)."""
        if outgoing.segment is not None and outgoing.segment.purpose == "close":
            self.closing_expected -= 1
            if self.phase is Phase.CLOSING and len(self.measurement.packets) >= self.closing_expected:
                self._finish()
        elif error is not None and self.phase is not Phase.DONE:
            self.error = error
            self._finish()

    def wake_at(self) -> float | None:
        """When this exchange next needs `on_timer` (None: never again)."""
        if self.phase is Phase.RUNNING:
            deadline = self.connection.deadline
            return min(deadline, self.hard_deadline) if deadline is not None else self.hard_deadline
        if self.phase is Phase.LINGER:
            deadline = self.connection.deadline if self.plan.linger_timers else None
            return min(deadline, self.linger_until) if deadline is not None else self.linger_until
        if self.phase is Phase.CLOSING:
            return self.closing_until
        return None

    # -- transitions -----------------------------------------------------------------------------

    def _settle(self, now: float) -> list[Outgoing]:
        """RUNNING ends when the plan says (see the table in the module doc)."""
        if self.phase is not Phase.RUNNING:
            return []
        connection, plan = self.connection, self.plan
        if plan.until == "request" and self.request_ip_id is not None:
            return self._linger(now, plan.linger if plan.linger is not None else default_linger(connection.rtt_estimate))
        if connection.done or now >= self.hard_deadline:
            if not connection.done:
                connection.progress.gave_up = "max-time"
            if plan.until == "request":  # no request went out: nothing to wait for
                return self._close(now)
            linger = plan.linger if plan.linger is not None else default_linger(connection.rtt_estimate)
            return self._linger(now, linger)
        return []

    def _linger(self, now: float, seconds: float) -> list[Outgoing]:
        self.phase = Phase.LINGER
        self.linger_until = now + seconds
        return self._close(now) if seconds <= 0 else []

    def _close(self, now: float) -> list[Outgoing]:
        resets = self._craft(closing_resets(self.connection), now)
        if not resets:
            self._finish()
            return []
        self.phase = Phase.CLOSING
        self.reset_sent = True
        self.closing_expected = len(self.measurement.packets) + len(resets)
        self.closing_until = now + self.plan.close_wait
        return resets

    def _answer_closed(self, frame, record, now: float) -> list[Outgoing]:
        """After our resets, a TCP segment from the server without RST and with ACK is answered
        <SEQ=SEG.ACK><CTL=RST> (see the module doc), at most CLOSED_ANSWERS times; its ACK number
        is the one sequence number the server takes a reset at (RFC 5961 3.2)."""
        if (not self.reset_sent or frame.outgoing or record.proto != "tcp" or self.flow.sent_by_client(record)
                or "R" in record.flags or "A" not in record.flags or self.closed_answers >= CLOSED_ANSWERS):
            return []
        self.closed_answers += 1
        out = self._craft([Segment("R", record.ack, 0, 0, purpose="close")], now)
        if self.phase is Phase.CLOSING:
            self.closing_expected += len(out)
        return out

    def _finish(self) -> None:
        self.phase = Phase.DONE
        self.measurement.progress = self.connection.progress
        self.measurement.application = self.connection.app

    # -- crafting --------------------------------------------------------------------------------

    def _craft(self, segments, now: float) -> list[Outgoing]:
        """The packets of `segments`, each with its TTL (see `Plan.request_ttl`)."""
        out = []
        for segment in segments:
            ttl = None
            if self.plan.request_ttl is not None:
                if segment.purpose == "retransmission":
                    continue
                if segment.purpose == "request":
                    ttl = self.plan.request_ttl
                    if self.request_ip_id is None:
                        self.request_ip_id = self.crafter.next_ip_id
            out.append(Outgoing(self.crafter.build(segment, ttl=ttl), self.flow.server, segment))
        return out
