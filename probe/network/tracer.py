"""The I/O of `probe trace`: TTL-limited copies of the request, the trigger beside a control.

For each TTL, two fresh connections are opened at full TTL (state on a box, a blocked flow or a
burned port, never carries over from one copy to the next): the control names an innocuous
host, the trigger the host under test, and each sends its request once with the TTL under test.
Whatever comes back within the window is recorded (every copy runs through one loop,
`probe.network.loop`, whose finished exchanges still record their late packets). Each copy is an
exchange (`probe.protocol.exchange`) with its own plan: the request at the TTL under test, no
retransmission, a window after the request, then resets at the sequence numbers the server
may expect, so no half-open connection stays on the server. The reasoning is in
`probe.engine.trace`.

Polite by construction: at most four connections per TTL (a difference is confirmed once with a
fresh pair before it counts), a maximum TTL, and the trace stops as soon as the answer is known:
a confirmed difference, both copies reaching the server, three TTLs in a row where neither copy
drew anything (or could connect), or `max_time`.

When the server's handshake itself cannot be completed (a reset answering the SYN), the trace
falls back on TTL-limited SYNs beside ICMP echoes (`probe.network.sweeps`).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field, replace

from probe.engine.baseline import hop_distance
from probe.engine.multipath import Multipath, multipath_of, path_changed
from probe.engine.order import Copy, decide
from probe.engine.residual import ResidualFinding, ResidualWatch, try_outcome
from probe.engine.trace import (Fate, HopRow, SentRequest, TraceResult, differs, fate_of, locate_box, server_ttl_of)
from probe.protocol.exchange import Exchange, Plan
from probe.protocol.http import Request
from probe.network.single import CheckOptions, TlsOptions, new_exchange
from probe.network.loop import Flows, Loop, Network
from probe.network.target import Target
from probe.protocol.tcp import Settings
from probe.network.wire import Frame

CONTROL_HOST = "example.com"  # RFC 2606's own example: no filter anywhere is about it
ATTEMPT_SETTINGS = Settings(syn_retries=1, data_retries=0)
HANDSHAKE_BOUND = 3.5  # seconds: a SYN and its one retransmission (1 s, then 2 s)
SILENT_TTLS = 3


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


@dataclass
class TraceMeasurement:
    rows: list[HopRow] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    result: TraceResult | None = None
    multipath: Multipath | None = None
    stopped: str | None = None  # why the trace ended before an answer, if it did
    interrupt: BaseException | None = None  # Ctrl-C or SIGTERM: the caller reports what was found, then exits

    @property
    def frames(self) -> list[Frame]:
        return [frame for attempt in self.attempts if attempt.exchange is not None
                for frame in attempt.exchange.measurement.frames]


class _Tracer:
    """The copies of one trace, one at a time, through one loop. Every copy's port stays held
    until the trace ends, so no two copies of a trace share a four-tuple."""

    def __init__(self, target: Target, options: TraceOptions, rtt: float | None, server_distance: int | None,
                 loop: Loop, flows: Flows):
        self.target, self.options = target, options
        self.server_distance = server_distance
        self.window = options.window if options.window is not None else max(0.3, 3 * (rtt or 0.0))
        self.loop, self.flows = loop, flows
        self.check = CheckOptions(request=options.request, settings=ATTEMPT_SETTINGS, tls=options.tls)
        self.reservations = []

    def attempt(self, ttl: int, role: str) -> Attempt:
        flow, reservation = self.flows.open(self.target.address, self.target.port)
        self.reservations.append(reservation)
        host = None if role == "trigger" else self.options.control_host  # None: the target's own (and --sni)
        plan = Plan(max_time=HANDSHAKE_BOUND, linger=self.window, request_ttl=ttl, until="request",
                    linger_timers=True)
        exchange = new_exchange(self.target, flow, self.check, self.loop.network.crafter, plan=plan, host=host)
        self.loop.drive(exchange)  # a send refused (no route, a local rule) ends the trace: ProbeError
        attempt = Attempt(ttl, role, exchange)
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


def run_trace(target: Target, options: TraceOptions, rtt: float | None, server_ttl: int | None,
              on_progress=None, on_hop=None, network: Network | None = None) -> TraceMeasurement:
    """TTL-limited request copies, trigger beside control, up to the answer (see the module doc).
    Each hop goes to `on_hop(row)` as soon as it is learned (else a line to `on_progress`). Ctrl-C
    or SIGTERM stops it as traceroute and mtr stop: what was found so far is judged and returned,
    with the interrupt in `interrupt` for the caller to raise once it has reported."""
    measurement = TraceMeasurement()
    server_distance = hop_distance(server_ttl) if server_ttl is not None else None
    network = network or Network.real()
    with ExitStack() as stack:
        loop = Loop.opened(network, stack, [target.address], keep_late=True)
        tracer = _Tracer(target, options, rtt, server_distance, loop, Flows(network))
        try:
            silent = 0
            deadline = network.clock() + options.max_time
            for ttl in range(1, options.max_ttl + 1):
                if measurement.interrupt is not None:
                    break
                if network.clock() > deadline:
                    measurement.stopped = f"--max-time ({options.max_time:g} s) ran out before TTL {ttl}"
                    break
                try:
                    control, trigger = tracer.attempt(ttl, "control"), tracer.attempt(ttl, "trigger")
                except (KeyboardInterrupt, SystemExit) as stop:  # the TTL under way is left out
                    measurement.interrupt, measurement.stopped = stop, f"interrupted at TTL {ttl}"
                    break
                earlier = [(a.ttl, a.role, a.fate) for a in measurement.attempts]
                measurement.attempts += [control, trigger]
                confirmed = False
                if path_changed(earlier, ttl, control.fate) or path_changed(earlier, ttl, trigger.fate):
                    # another router than before at this TTL (multipath): one more pair, so that
                    # the hop is read from copies that took the same path at least twice
                    try:
                        measurement.attempts += [tracer.attempt(ttl, "control"), tracer.attempt(ttl, "trigger")]
                    except (KeyboardInterrupt, SystemExit) as stop:
                        measurement.interrupt, measurement.stopped = stop, f"interrupted at TTL {ttl}"
                        break
                if differs(trigger.fate, control.fate):
                    try:
                        again = tracer.attempt(ttl, "control"), tracer.attempt(ttl, "trigger")
                    except (KeyboardInterrupt, SystemExit) as stop:  # not confirmed: one pair was seen
                        measurement.interrupt, measurement.stopped = stop, f"interrupted at TTL {ttl}"
                    else:
                        measurement.attempts += list(again)
                        # the second pair must show interference too, though not necessarily the
                        # same word (a box's answer late under load reads as silence); a control
                        # that can no longer connect after the trigger is a box blocking the address
                        # pair for a while: that confirms rather than refutes
                        confirmed = differs(again[1].fate, again[0].fate) or (
                            again[1].fate.word == trigger.fate.word and again[0].fate.word == "no-handshake")
                        if not confirmed:  # a box blocking the address and port after the trigger:
                            # neither copy of the pair could connect (probe.engine.order, rule 3)
                            decision = decide([Copy(a.ttl, a.role, a.fate) for a in measurement.attempts])
                            confirmed = decision.ttl == ttl and decision.confirmed_by == "residual"
                address = control.fate.router if control.fate.expired else trigger.fate.router
                rtt_ms = control.fate.rtt_ms if control.fate.expired else trigger.fate.rtt_ms
                measurement.rows.append(HopRow(ttl, address, rtt_ms, trigger.fate, control.fate, confirmed))
                if on_hop is not None:
                    on_hop(measurement.rows[-1])
                elif on_progress is not None:
                    on_progress(f"  ttl {ttl:2d}  {address or '*':15s}  trigger: {trigger.fate.word:24s} "
                                f"control: {control.fate.word}{'  (confirmed)' if confirmed else ''}")
                if confirmed or (control.fate.word == "server" and trigger.fate.word == "server"):
                    break
                unusable = trigger.fate.word == control.fate.word and trigger.fate.word in ("silent", "no-handshake")
                silent = silent + 1 if unusable else 0
                if silent >= SILENT_TTLS:
                    break
        finally:
            tracer.finish()
    result = locate_box(measurement.rows)
    measurement.multipath = multipath_of((a.ttl, a.role, a.fate) for a in measurement.attempts)
    if measurement.stopped and not result.interference:
        result = replace(result, evidence=result.evidence + (f"the trace stopped early: {measurement.stopped}",))
    measurement.result = result
    return measurement


# What each copy of a trace keeps of the flow's identity (said in the JSON's trace section): the
# addresses, protocol and server port are those of the exchange; each copy opens a connection of
# its own with a fresh source port, so an ECMP router hashing the 5-tuple may send two copies down
# two paths (the `multipath` section says when that was seen).
FLOW_IDENTITY = "fresh source port per copy"
RESIDUAL_TRY_BOUND = 3.5  # seconds for one try: a SYN and its one retransmission (1 s, then 2 s)
RESIDUAL_SETTINGS = Settings(syn_retries=1, data_retries=1)


def watch_residual(target: Target, measurement, options: TraceOptions, say=None,
                   network: Network | None = None) -> tuple[ResidualFinding | None, list[Frame]]:
    """After interference: are fresh connections to the same address and port, carrying the
    control's innocuous request, blocked too, and until when? Tries on `ResidualWatch`'s schedule
    (counted from when the trigger left), one connection at a time, each closed with resets; the
    reasoning is in `probe.engine.residual`. None when the exchange sent no request."""
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
        loop = Loop.opened(network, stack, [target.address], keep_late=True)
        while (at := watch.next_try()) is not None:
            while (remaining := trigger_at + at - network.clock()) > 0:
                loop.take(remaining)  # late packets of earlier tries are still recorded meanwhile
            flow, reservation = flows.open(target.address, target.port)
            try:
                exchange = new_exchange(target, flow, check, network.crafter, host=options.control_host,
                                        plan=Plan(max_time=RESIDUAL_TRY_BOUND, linger=0.0))
                started = network.clock()
                loop.drive(exchange)
            finally:
                reservation.close()
            outcome = try_outcome(exchange.measurement.packets, flow)
            watch.record(round(started - trigger_at, 3), outcome)
            frames += exchange.measurement.frames
            if say is not None:
                say(f"  residual try at +{started - trigger_at:.1f} s: {outcome}")
        loop.finish()
    return watch.finding(), frames
