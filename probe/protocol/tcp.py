"""The probe's side of one TCP connection, as a state machine with no I/O.

Theory of operation. The probe cannot use the kernel's TCP: it must see every packet,
including the ones a kernel would drop as out of window (the forged ones). So this class
plays the client: it says what to send (`Segment`s), and it is told what arrived
(`PacketRecord`s) and when a timer ran out. The I/O loop in `probe.network.single` does the rest.

It behaves like a real client where that exposes middleboxes:
- SYN with Linux's options (MSS, SACK, timestamps, window scale);
- the request is retransmitted with exponential backoff while unacknowledged (the field
  report's box was only exposed because the retransmission reached a server that had
  been reset behind the client's back);
- in-order data is acknowledged at once and handed to the application riding on the
  connection (`probe.protocol.http`: plain HTTP, or HTTP inside TLS), which reads the response to its
  end and may answer with more bytes (a TLS client's second flight, its request, its
  close_notify); new data goes out in segments of the server's MSS, and only the oldest
  unacknowledged segment is retransmitted, as Linux does;
- the close is polite (FIN both ways) so no half-open connection stays on the server;
- an ICMP error ends the handshake where Linux's would end (`tcp_v4_err`): in SYN-SENT, a
  destination unreachable of any code but "fragmentation needed" (4), a time exceeded or a
  parameter problem quoting our SYN ends the attempt at once (over IPv6, `tcp_v6_err`: every
  ICMPv6 error but packet too big, whatever its code, administratively prohibited included), as connect() fails at once, with
  the error recorded; nothing is retransmitted into a dead host for seconds. Once established,
  every ICMP error is soft, as on Linux without IP_RECVERR (RFC 1122 4.2.3.9 would allow
  protocol and port unreachable to abort; Linux does not, and neither do we): the error stays in
  the record and the retransmissions go on, so a server that still answers shows the error was
  forged or passing. An error counts only if the sequence number it quotes is one we sent and
  have not seen acknowledged (RFC 5927 4.1, Linux's OUTOFWINDOWICMPS check). A SYN-ACK that
  arrives after the attempt ended this way is kept only so that the close resets the half-open
  connection the server then holds, as the kernel's reset to an unknown SYN-ACK would;
- an acceptable RST (sequence number inside the receive window) ends the exchange: no more
  retransmissions or FIN. Unlike a real stack, data that still arrives from the server after
  it is acknowledged: a server that sent the data is alive, and whether it accepts our ACK
  or answers it with a reset for an unknown connection tells if it too was reset by
  someone else (the "direction: both" case).

Times (`now`) are seconds on any clock the caller chooses, used only for timers; the
measured RTT of the report comes from kernel timestamps elsewhere.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from probe.record import PacketRecord, is_icmp_error, is_packet_too_big, is_time_exceeded, is_unreachable
from probe.seq import MOD32, seq_add, seq_diff  # noqa: F401 (MOD32 for this module's readers)

ICMP_PARAMETER_PROBLEM = 12
ICMP_UNREACHABLE_CODES = 16  # codes 0-15 (RFC 792, 1122, 1812); Linux ignores the others
RTO_MIN = 0.2
RTO_MAX = 60.0
RECEIVE_WINDOW = 64240
WINDOW_SCALE = 7



class State(enum.Enum):
    CLOSED = "closed"
    SYN_SENT = "syn-sent"
    ESTABLISHED = "established"
    FIN_WAIT = "fin-wait"  # we sent FIN first
    LAST_ACK = "last-ack"  # the server closed, we answered with our FIN
    RESET = "reset"  # a reset arrived: we send nothing of our own, but still acknowledge data
    DONE = "done"


@dataclass(frozen=True)
class Segment:
    """A TCP segment to send: the crafting layer turns it into bytes."""

    flags: str
    seq: int
    ack: int
    window: int
    payload: bytes = b""
    options: tuple = ()
    purpose: str = ""


@dataclass(frozen=True)
class Settings:
    syn_rto: float = 1.0
    syn_retries: int = 2
    data_retries: int = 3
    mss: int = 1460
    idle_timeout: float = 10.0  # no progress for this long ends the exchange


@dataclass
class Progress:
    """What happened, for the report: facts about the exchange, not judgements."""

    syn_sent: int = 0
    synack_at: float | None = None
    request_sent: int = 0  # transmissions of the request, first one included
    request_acked: bool = False
    response_status: int | None = None
    response_complete: bool = False
    response_malformed: str | None = None
    reset_at: float | None = None
    server_fin: bool = False
    closed_politely: bool = False
    gave_up: str | None = None  # "syn" or "request" or "idle"
    icmp_error: tuple[int, int] | None = None  # (type, code) of the ICMP error that ended the handshake
    icmp_at: float | None = None
    events: list = field(default_factory=list)


class ClientConnection:
    def __init__(self, client: str, client_port: int, server: str, server_port: int, app,
                 isn: int, settings: Settings = Settings(), ts_base: int = 0):
        """`app` is the application on the connection (`probe.protocol.http.HttpExchange` or
        `probe.protocol.tls.TlsExchange`); its first flight is "the request" of every report."""
        self.client, self.client_port = client, client_port
        self.server, self.server_port = server, server_port
        self.app = app
        self.request = app.first_flight()
        self._stream = bytearray(self.request)  # every byte the application gave us to send
        self._sent = 0  # how many of them went out
        self._mss = settings.mss
        self.isn = isn
        self.settings = settings
        self.state = State.CLOSED
        self.progress = Progress()
        self.snd_una = isn
        self.snd_nxt = isn
        self.irs: int | None = None
        self.rcv_nxt = 0
        self.rtt_estimate: float | None = None
        self.deadline: float | None = None
        self.last_progress = 0.0
        self._rto = settings.syn_rto
        self._retries_left = settings.syn_retries
        self._syn_sent_at = 0.0
        self._ts_base = ts_base
        self._ts_recent: int | None = None
        self._use_ts = False
        self._window_shift = 0
        self._fin_seq: int | None = None  # our FIN's sequence number once sent
        self._close_at: float | None = None  # when we close if the server has not (app.waits_for_peer_close)

    # -- what the loop calls ------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.state in (State.DONE, State.RESET)

    def start(self, now: float) -> list[Segment]:
        self.state = State.SYN_SENT
        self._syn_sent_at = now
        self.last_progress = now
        self.snd_nxt = seq_add(self.isn, 1)
        self.deadline = now + self._rto
        self.progress.syn_sent += 1
        return [self._syn(now)]

    def on_timer(self, now: float) -> list[Segment]:
        if self.deadline is None or now < self.deadline:
            return []
        if self._close_at is not None and now >= self._close_at:
            return self._close_first(now)
        outstanding = self.state is State.SYN_SENT or self.data_outstanding or (
            self._fin_seq is not None and not self._fin_acked)
        if not outstanding:  # waiting for the server with nothing unacknowledged
            if now - self.last_progress >= self.settings.idle_timeout:
                return self._give_up("idle")
            self.deadline = self.last_progress + self.settings.idle_timeout
            return []
        if self._retries_left <= 0:
            return self._give_up("syn" if self.state is State.SYN_SENT else "request")
        self._retries_left -= 1
        self._rto = min(self._rto * 2, RTO_MAX)
        self.deadline = now + self._rto
        if self.state is State.SYN_SENT:
            self.progress.syn_sent += 1
            return [self._syn(now)]
        return self._retransmit(now)

    def on_packet(self, packet: PacketRecord, now: float) -> list[Segment]:
        """Take one received packet of this flow (TCP from the server, or ICMP quoting us)."""
        if self.state is State.DONE and self.progress.icmp_error is not None:
            return self._after_icmp_error(packet)
        if self.state is State.DONE and self.progress.closed_politely and packet.proto == "tcp" \
                and "F" in packet.flags and "R" not in packet.flags \
                and seq_add(packet.seq, packet.length + 1) == self.rcv_nxt:
            return [self._ack(now, "ack-of-fin")]  # our last ACK was lost: say it again (TIME-WAIT)
        if self.state in (State.DONE, State.CLOSED):
            return []
        if self.state is State.RESET:
            return self._after_reset(packet, now)
        if packet.proto == "icmp":
            return self._on_icmp(packet, now)
        if packet.proto != "tcp":
            return []
        if "R" in packet.flags:
            return self._on_reset(packet, now)
        if self.state is State.SYN_SENT:
            return self._on_synack(packet, now)
        return self._on_established(packet, now)

    # -- internals ----------------------------------------------------------------------

    def _give_up(self, what: str) -> list[Segment]:
        self.progress.gave_up = what
        self.state = State.DONE
        self.deadline = None
        return []

    def _on_icmp(self, packet: PacketRecord, now: float) -> list[Segment]:
        """End the handshake on a hard error that quotes our SYN; anything else is only evidence."""
        if self.state is State.SYN_SENT and ends_handshake(packet) and self._quotes_unacknowledged(packet):
            self.progress.icmp_error = (packet.icmp_type, packet.icmp_code)
            self.progress.icmp_at = now
            self.state = State.DONE
            self.deadline = None
        return []

    def _quotes_unacknowledged(self, packet: PacketRecord) -> bool:
        """Whether an ICMP error quotes this connection at a sequence number in [snd_una, snd_nxt]."""
        quoted = packet.quoted
        if quoted is None or quoted.seq is None or quoted.proto != 6:
            return False
        if (quoted.src, quoted.sport, quoted.dst, quoted.dport) != (
                self.client, self.client_port, self.server, self.server_port):
            return False
        return 0 <= seq_diff(quoted.seq, self.snd_una) <= seq_diff(self.snd_nxt, self.snd_una)

    def _after_icmp_error(self, packet: PacketRecord) -> list[Segment]:
        """A SYN-ACK for the attempt an ICMP error ended: note it, so the close can reset it."""
        if (packet.proto == "tcp" and self.irs is None and packet.has("SA") and "R" not in packet.flags
                and packet.ack == self.snd_nxt):
            self.irs = packet.seq
            self.rcv_nxt = seq_add(packet.seq, 1)
            self.snd_una = packet.ack
        return []

    def _timestamp_option(self, now: float) -> tuple:
        if not self._use_ts:
            return ()
        tsval = (self._ts_base + int(now * 1000)) % MOD32
        return (("NOP", None), ("NOP", None), ("Timestamp", (tsval, self._ts_recent or 0)))

    def _syn(self, now: float) -> Segment:
        tsval = (self._ts_base + int(now * 1000)) % MOD32
        options = (("MSS", self.settings.mss), ("SAckOK", b""), ("Timestamp", (tsval, 0)),
                   ("NOP", None), ("WScale", WINDOW_SCALE))
        return Segment("S", self.isn, 0, RECEIVE_WINDOW, options=options, purpose="syn")

    def _window(self) -> int:
        return min(RECEIVE_WINDOW >> self._window_shift, 0xFFFF)

    def _ack(self, now: float, purpose: str = "ack") -> Segment:
        return Segment("A", self.snd_nxt, self.rcv_nxt, self._window(), options=self._timestamp_option(now),
                       purpose=purpose)

    def _on_synack(self, packet: PacketRecord, now: float) -> list[Segment]:
        if "A" in packet.flags and packet.ack != self.snd_nxt:
            # RFC 9293 3.10.7.3, SYN-SENT: an unacceptable ACK is answered <SEQ=SEG.ACK><CTL=RST>. It is
            # what a server that still holds an earlier connection on this four-tuple sends (a
            # challenge ACK, RFC 5961 4) when a trace reuses a source port whose closing resets were
            # all lost; the reset clears that connection and our SYN's retransmission then opens ours.
            return [Segment("R", packet.ack, 0, 0, purpose="reset-unacceptable-ack")]
        if packet.flags.replace("E", "").replace("C", "") != "SA":
            return []
        self.irs = packet.seq
        self.rcv_nxt = seq_add(packet.seq, 1)
        self.snd_una = packet.ack
        self.progress.synack_at = now
        self.rtt_estimate = max(now - self._syn_sent_at, 0.0)
        self._use_ts = packet.option("Timestamp") is not None
        if self._use_ts:
            self._ts_recent = packet.option("Timestamp")[0]
        self._window_shift = WINDOW_SCALE if packet.option("WScale") is not None else 0
        if packet.option("MSS"):
            self._mss = min(self.settings.mss, packet.option("MSS"))
        self.state = State.ESTABLISHED
        self.last_progress = now
        # Linux's RTO: srtt + 4 * rttvar with rttvar = srtt / 2 at the first sample, floored at 200 ms.
        self._rto = min(max(3 * self.rtt_estimate, RTO_MIN), RTO_MAX)
        self._retries_left = self.settings.data_retries
        self.deadline = now + self._rto
        self.progress.request_sent = 1
        return [self._ack(now, "handshake-ack"), *self._send_new(now)]

    def _send_new(self, now: float) -> list[Segment]:
        """What the application queued and was not sent yet, in segments of at most one MSS."""
        segments = []
        while self._sent < len(self._stream):
            first_flight = self._sent < len(self.request)
            end = min(self._sent + self._mss, len(self.request) if first_flight else len(self._stream))
            chunk = bytes(self._stream[self._sent:end])
            segments.append(Segment("PA", self.snd_nxt, self.rcv_nxt, self._window(), chunk,
                                    self._timestamp_option(now), purpose="request" if first_flight else "data"))
            self.snd_nxt = seq_add(self.snd_nxt, len(chunk))
            self._sent = end
        return segments

    def _stream_offset(self, seq: int) -> int:
        return max(seq_diff(seq, seq_add(self.isn, 1)), 0)

    def _retransmit(self, now: float) -> list[Segment]:
        if self.data_outstanding:
            acked = self._stream_offset(self.snd_una)
            if acked < len(self.request):
                self.progress.request_sent += 1
            chunk = bytes(self._stream[acked:min(acked + self._mss, self._sent)])
            return [Segment("PA", self.snd_una, self.rcv_nxt, self._window(), chunk,
                            self._timestamp_option(now), purpose="retransmission")]
        if self._fin_seq is not None and not self._fin_acked:
            return [Segment("FA", self._fin_seq, self.rcv_nxt, self._window(), options=self._timestamp_option(now),
                            purpose="fin-retransmission")]
        return []

    @property
    def request_outstanding(self) -> bool:
        """Part of the first flight (the request) is not acknowledged yet."""
        return self._stream_offset(self.snd_una) < len(self.request)

    @property
    def data_outstanding(self) -> bool:
        """Data we sent is not all acknowledged yet (the FIN aside)."""
        return self._stream_offset(self.snd_una) < self._sent

    def _on_reset(self, packet: PacketRecord, now: float) -> list[Segment]:
        if self.state is State.SYN_SENT:
            acceptable = "A" in packet.flags and packet.ack == self.snd_nxt
        else:
            acceptable = 0 <= seq_diff(packet.seq, self.rcv_nxt) < self._window() << self._window_shift
        if acceptable:
            self.progress.reset_at = now
            self.state = State.RESET if self.state is not State.SYN_SENT else State.DONE
            self.deadline = None
        return []

    def _after_reset(self, packet: PacketRecord, now: float) -> list[Segment]:
        """Acknowledge in-order data or FIN that the server sends after a reset; nothing else."""
        if packet.proto != "tcp" or "R" in packet.flags or "S" in packet.flags:
            return []
        if seq_diff(packet.seq, self.rcv_nxt) != 0 or not (packet.length or "F" in packet.flags):
            return []
        self.rcv_nxt = seq_add(self.rcv_nxt, packet.length + ("F" in packet.flags))
        return [self._ack(now, "ack-after-reset")]

    def _on_established(self, packet: PacketRecord, now: float) -> list[Segment]:
        flags = packet.flags
        if "S" in flags:  # a repeated SYN-ACK: our handshake ACK was lost
            return [self._ack(now, "handshake-ack")] if "A" in flags else []
        out: list[Segment] = []
        if "A" in flags and 0 < seq_diff(packet.ack, self.snd_una) <= seq_diff(self.snd_nxt, self.snd_una):
            self.snd_una = packet.ack
            self.last_progress = now
            self._retries_left = self.settings.data_retries  # progress: a fresh set of retransmissions
            if not self.request_outstanding and not self.progress.request_acked:
                self.progress.request_acked = True
            if seq_diff(self.snd_nxt, self.snd_una) == 0:
                self.deadline = now + self.settings.idle_timeout  # nothing outstanding: idle watchdog
        offset = seq_diff(packet.seq, self.rcv_nxt)
        data_len = packet.length
        timestamp = packet.option("Timestamp")
        if self._use_ts and timestamp is not None and offset <= 0:
            self._ts_recent = timestamp[0]  # RFC 7323: TS.Recent follows in-sequence segments
        if data_len and offset <= 0 < offset + data_len:
            fresh = packet.payload[-offset:] if offset else packet.payload
            self.rcv_nxt = seq_add(self.rcv_nxt, len(fresh))
            self._queue(self.app.receive(fresh))
            self.last_progress = now
            offset = 0
            out.append(self._ack(now))
        elif data_len:
            out.append(self._ack(now, "duplicate-ack"))  # out of order or old: say where we are
        if "F" in flags and seq_add(packet.seq, data_len) == self.rcv_nxt and not self.progress.server_fin:
            self.progress.server_fin = True
            self.rcv_nxt = seq_add(self.rcv_nxt, 1)
            self._queue(self.app.receive(b"", eof=True))
            self.last_progress = now
            out = [segment for segment in out if segment.purpose != "ack"]
            if self._fin_seq is None:
                self._close_at = None
                out.extend(self._send_new(now))
                out.append(self._send_fin(now))
                self.state = State.LAST_ACK
            else:
                out.append(self._ack(now, "ack-of-fin"))
        elif "F" in flags and self.progress.server_fin and seq_add(packet.seq, data_len + 1) == self.rcv_nxt:
            out.append(self._ack(now, "ack-of-fin"))  # the server repeats its FIN: our ACK was lost
        if self._fin_seq is not None and self._fin_acked and self.progress.server_fin:
            self.progress.closed_politely = True
            self.state = State.DONE
            self.deadline = None
            return out
        if self._fin_seq is None:
            was_outstanding = self.data_outstanding
            new = self._send_new(now)
            if new:  # the data carries the acknowledgement
                out = [segment for segment in out if segment.purpose != "ack"] + new
                if self.deadline is None or not was_outstanding:
                    self.deadline = now + self._rto
        if self.state is State.ESTABLISHED and self.app.finished and not self.request_outstanding \
                and self._fin_seq is None:
            if not self.app.waits_for_peer_close:
                out.append(self._send_fin(now))  # the server keeps the connection open: we close first
                self.state = State.FIN_WAIT
            elif self._close_at is None:  # let the server close first; ours would cross its close
                self._close_at = now + max(2 * (self.rtt_estimate or 0.0), RTO_MIN)
                self.deadline = self._close_at if self.deadline is None else min(self.deadline, self._close_at)
        return out

    def _close_first(self, now: float) -> list[Segment]:
        """The server did not close within the grace: the application's goodbye, then our FIN."""
        self._close_at = None
        if self.state is not State.ESTABLISHED or self._fin_seq is not None:
            return []
        self._queue(self.app.close())
        out = self._send_new(now)
        out.append(self._send_fin(now))
        self.state = State.FIN_WAIT
        return out

    def _queue(self, data: bytes) -> None:
        """Take what the application says next, and what it now knows."""
        self._stream += data
        status = self.app.status
        self.progress.response_status = status.status
        self.progress.response_complete = self.app.finished
        self.progress.response_malformed = status.malformed

    @property
    def _fin_acked(self) -> bool:
        return self._fin_seq is not None and seq_diff(self.snd_una, self._fin_seq) > 0

    def _send_fin(self, now: float) -> Segment:
        self._fin_seq = self.snd_nxt
        self.snd_nxt = seq_add(self.snd_nxt, 1)
        self._retries_left = self.settings.data_retries
        self.deadline = now + self._rto
        return Segment("FA", self._fin_seq, self.rcv_nxt, self._window(), options=self._timestamp_option(now),
                       purpose="fin")


def ends_handshake(packet: PacketRecord) -> bool:
    """Whether an ICMP error ends a connection attempt on Linux (tcp_v4_err in SYN-SENT): every
    destination unreachable but fragmentation needed, time exceeded, parameter problem. Source
    quench and redirect never do. Over IPv6 (tcp_v6_err, net/ipv6/tcp_ipv6.c): packet too big
    only updates the path MTU (RFC 8201) and a redirect is neighbour discovery, not an error;
    every other ICMPv6 error (RFC 4443: destination unreachable of any code, time exceeded,
    parameter problem) ends a connection in SYN-SENT."""
    if is_packet_too_big(packet):  # path MTU information (RFC 1191, RFC 8201), never an end
        return False
    if packet.version == 6:
        return is_icmp_error(packet)
    if is_unreachable(packet):
        return packet.icmp_code is not None and packet.icmp_code < ICMP_UNREACHABLE_CODES
    return is_time_exceeded(packet) or packet.icmp_type == ICMP_PARAMETER_PROBLEM
