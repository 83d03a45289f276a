"""What `check`, `trace` and `batch` make of an exchange that points at a box: the locating step
the engine chose (`probe.engine.trace.locating_step`), run on the network (the TTL sweeps, or the
residual watch and the trace), and its result: the analysis judged again with the hop, and the
JSON sections the report adds. The I/O is `probe.network.tracer` and `probe.network.sweeps`;
the judgement is the engine's; the sections are `probe.render.report`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from probe.engine.multipath import multipath_json
from probe.engine.residual import ResidualFinding, residual_json, sentence
from probe.engine.trace import locating_step, needs_trace, server_ttl_of, sweep_wait
from probe.network.loop import Network
from probe.network.target import Target
from probe.network.tracer import TraceMeasurement, TraceOptions, flow_identity, run_trace, watch_residual
from probe.network.wire import Frame


@dataclass
class Localization:
    """What `check` and `trace` learned beyond the exchange: the revised analysis, the JSON
    sections to add, and the extra packets for the pcap."""

    analysis: object
    extra: dict = field(default_factory=dict)
    frames: list[Frame] = field(default_factory=list)
    interrupt: BaseException | None = None  # raise it once the partial result is reported


def by_sweeps(measurement, sweeps, location) -> Localization:
    """The exchange judged again with the sweeps' location, and their JSON sections."""
    from probe.engine import analyze_flow
    from probe.engine.trace import result_from_location, rows_from_sweeps
    from probe.render.report import locate_json, trace_json

    rows = rows_from_sweeps(sweeps.tcp, sweeps.echo)
    extra = {"locate": locate_json(location, sweeps.tcp, sweeps.echo)}
    extra["locate"]["source_port"] = sweeps.source_port
    extra["locate"]["flow_identity"] = ("the exchange's source port" if sweeps.source_port == measurement.flow.client_port
                                        else "a fresh source port (this host had taken the exchange's)")
    extra.update(trace_json(rows, result_from_location(location, rows), trigger="TTL-limited SYN",
                            control="TTL-limited ICMP echo"))
    return Localization(analyze_flow(measurement.packets, measurement.flow, location), extra, sweeps.frames)


def trigger_words(target: Target, options: TraceOptions) -> tuple[str, str]:
    """How the report names the trigger and the control: what each one carries."""
    if target.tls:
        sni = target.host if options.tls.sni is None else options.tls.sni
        return (f"ClientHello with SNI {sni}" if sni else "ClientHello without SNI",
                f"ClientHello with SNI {options.control_host}")
    return f"request for {target.host}", f"request for {options.control_host}"


def by_trace(analysis, traced: TraceMeasurement, words: tuple[str, str]) -> Localization:
    """The exchange's analysis with the trace's hop, and the trace's JSON sections."""
    from probe.engine.trace import apply_trace
    from probe.render.report import trace_json

    extra = trace_json(traced.rows, traced.result, trigger=words[0], control=words[1])
    extra["trace"]["flow_identity"] = flow_identity(traced.ports)
    extra["trace"]["source_ports"] = list(traced.ports)
    if traced.stopped:
        extra["trace"]["stopped"] = traced.stopped
    extra["multipath"] = multipath_json(traced.multipath)
    return Localization(apply_trace(analysis, traced.result), extra, traced.frames, traced.interrupt)


def localize(target: Target, measurement, analysis, options: TraceOptions, always: bool = False,
             on_progress=None, on_hop=None, network: Network | None = None) -> Localization | None:
    """Run whichever TTL sweep can place the box this exchange points at (`locating_step`);
    None when there is no reason to. `on_hop` gets each hop of a request trace as it is learned."""
    say = on_progress or (lambda line: None)
    step = locating_step(analysis, always)
    if step == "sweeps":
        from probe.engine.locate import locate
        from probe.network.sweeps import run_sweeps

        say("sweeping TTL-limited SYNs and ICMP echoes to find where the TCP answer comes from ...")
        wait = options.window if options.window is not None else sweep_wait(analysis)
        sweeps = run_sweeps(measurement.flow.client, target.address, target.port, max_ttl=options.max_ttl,
                            wait=wait, on_progress=say, network=network, source_port=measurement.flow.client_port)
        return by_sweeps(measurement, sweeps, locate(sweeps.tcp, sweeps.echo, target.address))
    if step == "trace":
        residual, frames = None, []
        interfered = needs_trace(analysis)  # interference, or a reset nobody vouches for (the residual watch
        # only adds a sentence to the explanation, so the answer holds for the trace below too)
        if interfered:
            say(f"trying new connections to {target.address} port {target.port} with an innocuous request "
                f"(residual blocking?) ...")
            residual, frames = watch_residual(target, measurement, options, say, network)
            analysis = with_residual(analysis, residual, target)
            if residual is not None and residual.seen and residual.first_passed_s is None:
                # every copy would meet the block, not the box: nothing to trace
                return Localization(analysis, {"residual_blocking": residual_json(residual)}, frames)
        say(f"sending TTL-limited copies of the request (control host {options.control_host}) to find the box ...")
        traced = run_trace(target, options, analysis.rtt_ms / 1000, server_ttl_of(measurement.packets, measurement.flow),
                           on_progress=say, on_hop=on_hop, network=network,
                           exchange_flow=measurement.flow if interfered else None)
        found = by_trace(analysis, traced, trigger_words(target, options))
        found.extra["residual_blocking"] = residual_json(residual)
        found.frames[:0] = frames
        return found
    return None


def with_residual(analysis, residual: ResidualFinding | None, target: Target):
    """The analysis with residual blocking's sentence added to its explanation, when it was seen."""
    said = sentence(residual, target.address, target.port) if residual is not None else None
    return replace(analysis, explanation=f"{analysis.explanation} {said}") if said else analysis
