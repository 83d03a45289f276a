"""The I/O of `probe trace`: TTL-limited copies of the request, the trigger beside a control.

For each TTL a connection is opened at full TTL for the control (an innocuous host), then one
for the trigger (the host under test), and each sends its request once with the TTL under test.
A control that drew nothing (silence, or no handshake: loss, most often) is sent once more
before the trigger, as traceroute sends several queries per hop; so is a trigger that could not
connect while its control could (its request never left).
Whatever comes back within the window is recorded (every copy runs through one loop,
`probe.network.loop`, whose finished exchanges still record their late packets). Each copy is an
exchange (`probe.protocol.exchange`) with its own plan: the request at the TTL under test, no
retransmission, a window after the request, then resets at the sequence numbers the server
may expect, so no half-open connection stays on the server. The reasoning is in
`probe.engine.trace` and `probe.engine.order`.

The flow identity (Paris traceroute, Augustin et al., IMC 2006; CenTrace, IMC 2022, repeats
its traceroutes and waits between them for stateful blocking instead). An ECMP router hashes
the five-tuple, so copies on different source ports may take different paths.
Every copy reuses one source port, the control and the trigger of a TTL and TTL after TTL:
the previous connection on it was reset, so the server holds nothing for it, and our ISNs
only grow (RFC 6528, `probe.network.wire.initial_sequence`), so a server still holding it in TIME-WAIT
takes the new SYN, and a late packet of the previous connection acknowledges less than the new
SYN and is not taken for an answer (`probe.engine.trace.fate_of`). The copies go TTL ascending,
the control first (`probe.engine.order`); a copy whose request expires before the box never
reaches it, so the box holds no state for the four-tuple until the first trigger that reaches
it, and that copy already decides. A fresh port is taken only (1) after a trigger that may have
met a box (`order.keeps_identity`: anything but expiring at the control's router), (2) for the
pair that confirms a difference (the deciding four-tuple may be remembered by the box: the
lab's swallowing box lets a remembered flow pass), which must end where the deciding flow's
copies did at that TTL and below, or it took another branch and another fresh pair is tried
(CONFIRM_SAMPLES), and (3) when the trace's flow reached the server without a difference
though the exchange before it met a box: innocuous controls on the exchange's own four-tuple
find the TTL where its path leaves the trace's, and fresh ports are sampled there, one control
each (PATH_SAMPLES, Paris traceroute's multipath detection), until one follows the exchange's
path; the sweep resumes there. `trace.flow_identity` and `trace.source_ports` in the JSON say
which identity was kept.

Polite by construction: at most `connection_budget(max_ttl)` connections (four per TTL, 64 with
the default --max-ttl), each closed with resets, and the trace stops as soon as the answer is
known: a confirmed difference, both copies reaching the server, three TTLs in a row where
neither copy drew anything (or could connect), or `max_time`.

When the server's handshake itself cannot be completed (a reset answering the SYN), the trace
falls back on TTL-limited SYNs beside ICMP echoes (`probe.network.sweeps`).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field, replace

from probe.engine.baseline import hop_distance
from probe.engine.multipath import Multipath, multipath_of, path_changed
from probe.engine.order import Copy, decide, keeps_identity
from probe.engine.residual import OWN, ResidualFinding, ResidualWatch, try_outcome
from probe.engine.trace import (Fate, HopRow, SentRequest, TraceResult, differs, fate_of, locate_box, only_silence,
                                server_ttl_of)
from probe.protocol.exchange import Exchange, Plan
from probe.protocol.http import Request
from probe.network.single import CheckOptions, TlsOptions, new_exchange
from probe.network.loop import Flows, Loop, Network, hold_again
from probe.network.target import Target
from probe.protocol.tcp import Settings
from probe.network.wire import Frame

CONTROL_HOST = "example.com"  # RFC 2606's own example: no filter anywhere is about it
ATTEMPT_SETTINGS = Settings(syn_retries=1, data_retries=0)
HANDSHAKE_BOUND = 3.5  # seconds: a SYN and its one retransmission (1 s, then 2 s)
SILENT_TTLS = 3
REUSE_PAUSE_MIN, REUSE_PAUSE_MAX = 0.05, 1.0  # seconds between two copies on one four-tuple (`_Tracer.attempt`)
UNANSWERED = ("silent", "no-handshake")  # a control's fates that say nothing of the path (sent again once)
# Flow identities sampled, one control each, for one that follows the exchange's path where it
# leaves the trace's: Paris traceroute's multipath detection varies the flow identifier to reach
# a load balancer's other branches; PATH_SAMPLES identities miss one of two equal branches with
# probability 2^-16 (Augustin, Friedman, Teixeira, "Measuring load-balanced paths in the
# Internet", IMC 2007).
PATH_SAMPLES = 16
CONFIRM_SAMPLES = 16  # fresh identities tried for a confirming pair that took another path (within the budget)


@dataclass(frozen=True)
class TraceOptions:
    request: Request = Request()
    control_host: str = CONTROL_HOST
    max_ttl: int = 16
    window: float | None = None  # seconds to wait after each request; None: max(0.3 s, 3 round trips)
    max_time: float = 120.0  # the whole trace stops starting new TTLs after this long
    tls: TlsOptions = TlsOptions()  # for https://: the trigger's SNI and the trust store
    residual_time: float | None = None  # seconds the residual watch may run; None: max_time


@dataclass
class Attempt:
    ttl: int
    role: str  # "trigger" or "control"
    exchange: Exchange | None
    sent: SentRequest | None = None
    fate: Fate = Fate("silent")
    port: int | None = None  # its source port (the flow identity it kept)


@dataclass
class TraceMeasurement:
    rows: list[HopRow] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    result: TraceResult | None = None
    multipath: Multipath | None = None
    stopped: str | None = None  # why the trace ended before an answer, if it did
    interrupt: BaseException | None = None  # Ctrl-C or SIGTERM: the caller reports what was found, then exits
    ports: list[int] = field(default_factory=list)  # the source ports the copies used, in order

    @property
    def frames(self) -> list[Frame]:
        return [frame for attempt in self.attempts if attempt.exchange is not None
                for frame in attempt.exchange.measurement.frames]


class _Tracer:
    """The copies of one trace, one at a time, through one loop, on one flow identity at a time:
    every copy reuses the current source port (`flow`) until `fresh()` or a None `flow` asks for
    another. Every port stays held until the trace ends; the trace opens at most `budget`
    connections (`connection_budget`)."""

    def __init__(self, target: Target, options: TraceOptions, rtt: float | None, server_distance: int | None,
                 loop: Loop, flows: Flows):
        self.target, self.options = target, options
        self.server_distance = server_distance
        self.window = options.window if options.window is not None else max(0.3, 3 * (rtt or 0.0))
        self.loop, self.flows = loop, flows
        self.check = CheckOptions(request=options.request, settings=ATTEMPT_SETTINGS, tls=options.tls)
        self.reservations = []
        self.flow = None  # the four-tuple the next copy reuses; None: a fresh one
        # a four-tuple is opened again no sooner than this after its last copy ended (`attempt`)
        self.reuse_pause = min(max(rtt, REUSE_PAUSE_MIN), REUSE_PAUSE_MAX) if rtt else REUSE_PAUSE_MIN
        self.ended_at: float | None = None  # when the last copy on `flow` ended (its resets sent)
        self.ports: list[int] = []  # the source ports used, in order
        self.budget, self.opened = connection_budget(options.max_ttl), 0

    def fresh(self) -> None:
        """A new flow identity for the copies that follow: a source port never used toward this
        server in the last PORT_QUARANTINE seconds (probe.network.loop.Flows)."""
        flow, reservation = self.flows.open(self.target.address, self.target.port)
        self.reservations.append(reservation)
        self.flow, self.ended_at = flow, None
        self.ports.append(flow.client_port)

    def adopt(self, flow) -> bool:
        """Reuse `flow`, the exchange's own four-tuple, for the copies that follow (its port held
        again); False when something of this host took the port meanwhile."""
        reservation = hold_again(self.flows.network, flow.client, flow.client_port)
        if reservation is None:
            return False
        self.reservations.append(reservation)
        self.flow, self.ended_at = flow, None
        self.ports.append(flow.client_port)
        return True

    def attempt(self, ttl: int, role: str) -> Attempt:
        if self.opened >= self.budget:
            raise _OutOfBudget
        if self.flow is None:
            self.fresh()
        elif self.ended_at is not None:
            # The previous copy on this four-tuple was closed with resets, but a SYN close behind
            # them found nothing to answer it: measured on the lab's Linux server, a SYN sent 7 ms
            # after our resets drew no SYN-ACK (no counter moved, with or without conntrack) and
            # only its retransmission a second later connected, while one sent 20 ms or more after
            # them connected at once. Each reuse then cost a second, and one more loss its whole
            # handshake (the accuracy matrix's `no-handshake` copies under 3% loss). So the copy
            # waits one round trip (the resets have arrived by then), reading the capture meanwhile.
            resume = self.ended_at + self.reuse_pause
            while self.loop.clock() < resume:
                self.loop.step(wake_by=resume)
        self.opened += 1
        flow = self.flow
        # the previous copy on this four-tuple was closed with resets (the server holds nothing for
        # it); a new SYN with a later ISN opens a new connection there, as Linux's own reuse does
        host = None if role == "trigger" else self.options.control_host  # None: the target's own (and --sni)
        plan = Plan(max_time=HANDSHAKE_BOUND, linger=self.window, request_ttl=ttl, until="request",
                    linger_timers=True)
        exchange = new_exchange(self.target, flow, self.check, self.loop.network.crafter, plan=plan, host=host)
        self.ended_at = None
        self.loop.drive(exchange)  # a send refused (no route, a local rule) ends the trace: ProbeError
        self.ended_at = self.loop.clock()
        attempt = Attempt(ttl, role, exchange, port=flow.client_port)
        packets = exchange.measurement.packets
        request = next((p for p in packets if flow.sent_by_client(p) and p.length), None)
        if request is None and exchange.request_ip_id is not None:
            # the handshake was made but the host lost the copy before the wire (a full queue):
            # nothing was learned at this TTL, which is silence, not a failed handshake
            attempt.fate = Fate("silent")
            return attempt
        if request is not None and exchange.request_ip_id is not None:
            attempt.sent = SentRequest(ttl, request.seq, request.length, exchange.request_ip_id, request.tos,
                                       request.t)
        attempt.fate = fate_of(packets, flow, attempt.sent, self.server_distance)
        return attempt

    def finish(self) -> None:
        self.loop.finish()
        for reservation in self.reservations:
            reservation.close()


class _OutOfBudget(Exception):
    """The trace opened all the connections it may (`connection_budget`)."""


class _OutOfTime(Exception):
    """`--max-time` ran out before the next TTL."""


def connection_budget(max_ttl: int) -> int:
    """The most connections one trace opens: four per TTL (a pair, and a confirming or repeated
    pair, or a control sent again), whatever passes and path samples it makes. Each connection
    sends at most eight packets of ours (a SYN and its retransmission, the ACK, the request copy,
    an ACK of what the server sent, three closing resets), so a trace sends at most 32 x max_ttl
    packets (512 with the default --max-ttl 16), beside the check before it and the residual watch."""
    return 4 * max_ttl


def _same_place(seen: Fate, fate: Fate) -> bool:
    """Two copies of one TTL ended at the same place: the same router, or both at the server."""
    return (seen.expired and fate.expired and seen.router is not None and seen.router == fate.router) or (
        seen.word == fate.word == "server")


class _Run:
    """The passes of one trace (see `run_trace`)."""

    def __init__(self, tracer: _Tracer, measurement: TraceMeasurement, options: TraceOptions, deadline: float,
                 clock, on_progress, on_hop):
        self.tracer, self.measurement, self.options = tracer, measurement, options
        self.deadline, self.clock = deadline, clock
        self.on_progress, self.on_hop = on_progress, on_hop
        self.ttl = 0

    def say(self, line: str) -> None:
        if self.on_progress is not None:
            self.on_progress(line)

    def copy(self, ttl: int, role: str) -> Attempt:
        attempt = self.tracer.attempt(ttl, role)
        self.measurement.attempts.append(attempt)
        return attempt

    def passes(self, exchange_flow=None, samples: int = 0) -> None:
        """The sweep on one identity; when it reached the server without a difference, though the
        exchange before it (`exchange_flow`) met a box, their flows took different paths (ECMP) or
        the box answers only some flows. Controls on the exchange's own four-tuple (innocuous: a
        box only remembers flows whose trigger it acted on) find the TTL where its path leaves the
        sweep's (`walk`); then up to `samples` fresh identities, one control each at that TTL, until
        one ends where the exchange's did, and the sweep resumes there on that identity (the rows
        before it are the first sweep's: both paths share those routers)."""
        if self.sweep(1) != "server" or exchange_flow is None or samples < 1:
            return
        swept = list(self.measurement.rows)
        if not self.tracer.adopt(exchange_flow):
            return
        self.say(f"  both copies reached the server, though the exchange met a box: its own flow's path "
                 f"(source port {exchange_flow.client_port}, innocuous copies) ...")
        split = self.walk(swept)
        if split is None:
            self.say("  the exchange's own flow showed no router the trace's did not: no other path found")
            return
        ttl, exchange_fate = split
        for _ in range(samples):
            self.tracer.flow = None
            self._in_time(ttl)
            first = self.copy(ttl, "control")
            if _same_place(exchange_fate, first.fate):
                self.say(f"  source port {first.port} follows the exchange's path at TTL {ttl}: sweeping from there")
                self.measurement.rows = swept[:ttl - 1]
                self.sweep(ttl, first)
                return
        self.say(f"  no fresh source port followed the exchange's path at TTL {ttl}")

    def walk(self, swept: list[HopRow]):
        """Controls on the current identity, TTL ascending, while they end where the sweep's
        controls did; (the first TTL where they do not, that control's fate), or None."""
        for row in swept:
            self._in_time(row.ttl)
            control = self.copy(row.ttl, "control")
            if not _same_place(row.control, control.fate):
                return (row.ttl, control.fate) if control.fate.expired else None
        return None

    def _in_time(self, ttl: int) -> None:
        self.ttl = ttl
        if self.clock() > self.deadline:
            self.measurement.stopped = f"--max-time ({self.options.max_time:g} s) ran out before TTL {ttl}"
            raise _OutOfTime

    def sweep(self, start: int, first: Attempt | None = None) -> str:
        """TTL ascending from `start`, the control before the trigger (probe.engine.order), on one
        identity while the triggers leave no state on a box (`keeps_identity`); why it ended."""
        silent = 0
        for ttl in range(start, self.options.max_ttl + 1):
            self._in_time(ttl)
            # an interrupt here leaves the TTL under way out
            # the copies sent before this TTL's own (`first` is one of them, sent by the caller)
            begun = len(self.measurement.attempts) - (1 if first is not None and ttl == start else 0)
            control = first if first is not None and ttl == start else self.copy(ttl, "control")
            if control.fate.word in UNANSWERED:
                # traceroute sends several queries per hop: a control that drew nothing (its request,
                # its time-exceeded or its handshake lost) is sent once more, still before the trigger,
                # which against a residual blocker is the only copy that can differ
                control = self.copy(ttl, "control")
            trigger = self.copy(ttl, "trigger")
            if trigger.fate.word == "no-handshake" and control.fate.word != "no-handshake":
                # a trigger that could not connect never sent its request, so no box acted on what
                # it asks: a SYN or SYN-ACK lost twice, most often (a four-tuple reused at once costs
                # its first SYN where the server's side tracks connections: measured in the lab).
                # Sent once more, as the control is; when the control could not connect either,
                # that is the address blocked (probe.engine.order, rule 3) and no copy is spent
                trigger = self.copy(ttl, "trigger")
            confirmed = False
            earlier = [(a.ttl, a.role, a.fate) for a in self.measurement.attempts[:begun] if a.port == trigger.port]
            if path_changed(earlier, ttl, control.fate) or path_changed(earlier, ttl, trigger.fate):
                # one identity, another router than before at this TTL (a route changed, or a
                # balancer that does not hash the flow): one more pair, so that the hop is read
                # from copies that took the same path at least twice
                self.copy(ttl, "control")
                self.copy(ttl, "trigger")
            if not keeps_identity(trigger.fate, control.fate):
                self.tracer.flow = None  # the trigger may have met a box that remembers its four-tuple
            if differs(trigger.fate, control.fate):
                try:
                    confirmed, confirming = self.confirm(ttl, control, trigger)
                except (KeyboardInterrupt, SystemExit):  # not confirmed: one pair was seen
                    self.row(ttl, control, trigger, False)
                    raise
                if confirmed and confirming is not None and confirming[1].fate.expired \
                        and not trigger.fate.expired and confirming[1].fate.word != "time-exceeded":
                    # the repeat's trigger drew the router's time-exceeded beside the box's answer,
                    # the first one only the answer: a time-exceeded can be lost on the way, never
                    # made up, so the repeat's pair is the one that says where the box is
                    control, trigger = confirming
            self.row(ttl, control, trigger, confirmed)
            if confirmed:
                return "confirmed"
            if control.fate.word == "server" and trigger.fate.word == "server":
                # "server": this pass's flow met no box at all; an unconfirmed difference on the
                # way is kept as this pass's finding rather than sampled away
                unconfirmed = any(differs(row.trigger, row.control) for row in self.measurement.rows)
                return "unconfirmed" if unconfirmed else "server"
            unusable = trigger.fate.word == control.fate.word and trigger.fate.word in ("silent", "no-handshake")
            silent = silent + 1 if unusable else 0
            if silent >= SILENT_TTLS:
                return "silent"
        return "max-ttl"

    def row(self, ttl: int, control: Attempt, trigger: Attempt, confirmed: bool) -> None:
        address = control.fate.router if control.fate.expired else trigger.fate.router
        rtt_ms = control.fate.rtt_ms if control.fate.expired else trigger.fate.rtt_ms
        self.measurement.rows.append(HopRow(ttl, address, rtt_ms, trigger.fate, control.fate, confirmed))
        if self.on_hop is not None:
            self.on_hop(self.measurement.rows[-1])
        else:
            self.say(f"  ttl {ttl:2d}  {address or '*':15s}  trigger: {trigger.fate.word:24s} "
                     f"control: {control.fate.word}{'  (confirmed)' if confirmed else ''}")

    def confirm(self, ttl: int, control: Attempt, trigger: Attempt) -> tuple[bool, tuple[Attempt, Attempt] | None]:
        """A fresh pair at the same TTL must show interference too, though not necessarily the same
        word (a box's answer late under load reads as silence); a control that can no longer connect
        after the trigger is a box blocking the address pair for a while, which confirms rather than
        refutes. The pair goes on a fresh identity (the trigger's may hold state on the box); when
        it shows no difference, its control, and controls on it at the TTLs before, must end where
        the deciding identity's did, or it took another path and counts for nothing: another fresh
        pair (at most CONFIRM_SAMPLES). A difference that is only the trigger's silence, seen twice,
        takes a third pair (`only_silence`: loss makes it too), and a control that drew nothing is
        sent again, as in the first pass. With the last pair sent (control, trigger), if any."""
        again = None
        silences = only_silence(trigger.fate, control.fate)
        for _ in range(CONFIRM_SAMPLES):
            self.tracer.flow = None
            control_again = self.copy(ttl, "control")
            if control_again.fate.word == "silent":  # its request or time-exceeded lost: says nothing
                control_again = self.copy(ttl, "control")
            if control.fate.expired and control_again.fate.expired and not _same_place(control.fate, control_again.fate):
                # another router at this very TTL: another path; no trigger spent on it
                self.say(f"  the confirming control at TTL {ttl} took another path (multipath): another source port")
                continue
            again = control_again, self.copy(ttl, "trigger")
            if differs(again[1].fate, again[0].fate) and silences and only_silence(again[1].fate, again[0].fate):
                silences = False  # silence twice: two losses in a row would make it too
                self.say(f"  silence again at TTL {ttl}, as two lost packets would make it: one more pair")
                continue
            if differs(again[1].fate, again[0].fate) or (
                    again[1].fate.word == trigger.fate.word and again[0].fate.word == "no-handshake"):
                return True, again
            # a box blocking the address and port after the trigger: neither copy of the pair could
            # connect (probe.engine.order, rule 3)
            decision = decide([Copy(a.ttl, a.role, a.fate, a.port) for a in self.measurement.attempts])
            if decision.ttl == ttl and decision.confirmed_by == "residual":
                return True, again
            if "no-handshake" in (again[0].fate.word, again[1].fate.word):
                return False, again
            if not keeps_identity(again[1].fate, again[0].fate):
                self.tracer.flow = None
            if _same_place(control.fate, again[0].fate) and self.same_path(ttl, trigger.port):
                return False, again
            self.say(f"  the confirming pair at TTL {ttl} took another path than the difference (multipath): "
                     f"another source port")
        return False, again

    def same_path(self, ttl: int, port: int | None) -> bool:
        """Whether the current identity's controls end where the identity `port`'s did at every TTL
        below `ttl` where that one's ended at a known place."""
        reference = {a.ttl: a.fate for a in self.measurement.attempts
                     if a.port == port and a.role == "control" and a.ttl < ttl and a.fate.expired}
        for at in sorted(reference):
            control = self.copy(at, "control")
            if not _same_place(reference[at], control.fate):
                return False
        return True


def run_trace(target: Target, options: TraceOptions, rtt: float | None, server_ttl: int | None,
              on_progress=None, on_hop=None, network: Network | None = None,
              exchange_flow=None) -> TraceMeasurement:
    """TTL-limited request copies, trigger beside control, up to the answer (see the module doc),
    on one source port while the triggers leave no state on a box (Paris traceroute's fixed flow
    identity). `exchange_flow`: the four-tuple of the exchange before, which met a box; when the
    trace's flow reaches the server without a difference, the path of the exchange's flow is
    found again (`_Run.passes`).
    Each hop goes to `on_hop(row)` as soon as it is learned (else a line to `on_progress`). Ctrl-C
    or SIGTERM stops it as traceroute and mtr stop: what was found so far is judged and returned,
    with the interrupt in `interrupt` for the caller to raise once it has reported."""
    measurement = TraceMeasurement()
    server_distance = hop_distance(server_ttl) if server_ttl is not None else None
    network = network or Network.real()
    with ExitStack() as stack:
        loop = Loop.opened(network, stack, [target.address], keep_late=True)
        tracer = _Tracer(target, options, rtt, server_distance, loop, Flows(network))
        run = _Run(tracer, measurement, options, network.clock() + options.max_time, network.clock,
                   on_progress, on_hop)
        try:
            run.passes(exchange_flow, PATH_SAMPLES)
        except (KeyboardInterrupt, SystemExit) as stop:
            measurement.interrupt, measurement.stopped = stop, f"interrupted at TTL {run.ttl}"
        except _OutOfTime:
            pass
        except _OutOfBudget:
            measurement.stopped = f"the trace opened the {tracer.budget} connections it may (4 per TTL)"
        finally:
            tracer.finish()
            measurement.ports = list(tracer.ports)
    result = locate_box(measurement.rows)
    measurement.multipath = multipath_of((a.ttl, a.role, a.fate) for a in measurement.attempts)
    if measurement.stopped and not result.interference:
        result = replace(result, evidence=result.evidence + (f"the trace stopped early: {measurement.stopped}",))
    measurement.result = result
    return measurement


def flow_identity(ports: list[int]) -> str:
    """What the copies of a trace kept of the flow's identity (said in the JSON's trace section):
    the addresses, protocol and server port are always the exchange's; the source port is one
    for the whole trace, or changed only where `keeps_identity` (a trigger that may have met the
    box), a confirming pair or a path sample asked for a fresh one (`trace.source_ports`)."""
    if len(ports) <= 1:
        return "one source port per trace"
    return (f"one source port at a time ({len(ports)} in all): a fresh one after a trigger that may have met "
            f"the box, for a confirming pair, or to sample another path")


RESIDUAL_TRY_BOUND = 3.5  # seconds for one try: a SYN and its one retransmission (1 s, then 2 s)
RESIDUAL_SETTINGS = Settings(syn_retries=1, data_retries=1)


def watch_residual(target: Target, measurement, options: TraceOptions, say=None,
                   network: Network | None = None) -> tuple[ResidualFinding | None, list[Frame]]:
    """After interference: are new connections to the same address and port, carrying the
    control's innocuous request, blocked too, and until when? Tries on `ResidualWatch`'s schedule
    (counted from when the trigger left), one connection at a time, each closed with resets, on
    the exchange's own four-tuple (its port held again: the tries cross the routers the trigger
    did, whatever ECMP does) and, while that is blocked, a few from fresh ports; the reasoning is
    in `probe.engine.residual`. None when the exchange sent no request."""
    flow = measurement.flow
    request = next((p for p in measurement.packets if flow.sent_by_client(p) and p.length), None)
    if request is None:
        return None, []
    bound = options.residual_time if options.residual_time is not None else options.max_time
    accepted = server_ttl_of(measurement.packets, measurement.flow) is not None  # the server took the handshake
    watch = ResidualWatch(open_before=accepted, max_time_s=bound)
    if watch.next_try() is None:
        return watch.finding(), []
    network = network or Network.real()
    trigger_at = network.clock() - (network.wall() - request.t)  # the request's kernel time on our clock
    check = CheckOptions(request=options.request, settings=RESIDUAL_SETTINGS, tls=options.tls)
    frames: list[Frame] = []
    flows = Flows(network)
    with ExitStack() as stack:
        own = hold_again(network, flow.client, flow.client_port)
        if own is not None:
            stack.callback(own.close)
            watch.own_flow = True
        loop = Loop.opened(network, stack, [target.address], keep_late=True)
        while (at := watch.next_try()) is not None:
            while (remaining := trigger_at + at - network.clock()) > 0:
                loop.take(remaining)  # late packets of earlier tries are still recorded meanwhile
            kind = watch.next_flow()
            # on the exchange's own four-tuple, every earlier connection was closed with resets; a
            # SYN with a later ISN opens a new one, as the trace's copies do
            tried, reservation = (flow, None) if kind == OWN else flows.open(target.address, target.port)
            try:
                exchange = new_exchange(target, tried, check, network.crafter, host=options.control_host,
                                        plan=Plan(max_time=RESIDUAL_TRY_BOUND, linger=0.0))
                started = network.clock()
                loop.drive(exchange)
            finally:
                if reservation is not None:
                    reservation.close()
            outcome = try_outcome(exchange.measurement.packets, tried)
            watch.record(round(started - trigger_at, 3), outcome, kind)
            frames += exchange.measurement.frames
            if say is not None:
                where = "its own flow" if kind == OWN else f"fresh port {tried.client_port}"
                say(f"  residual try at +{started - trigger_at:.1f} s ({where}): {outcome}")
        loop.finish()
    return watch.finding(), frames
