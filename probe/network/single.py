"""`probe check`: one exchange through the one loop (`probe.network.loop`), and what every command
needs to build an exchange: the options a user gives, and what rides on the connection."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

from probe.engine.model import Flow
from probe.protocol.exchange import Exchange, Measurement, Plan
from probe.protocol.http import HttpExchange, Request
from probe.network.loop import Flows, Loop, Network
from probe.network.target import Target
from probe.protocol.tcp import ClientConnection, Settings
from probe.network.wire import initial_sequence, random_u32, timestamp_offset

__all__ = ["CheckOptions", "Measurement", "TlsOptions", "application_for", "new_exchange", "run_check"]


@dataclass(frozen=True)
class TlsOptions:
    """curl's TLS options: `sni` None sends the URL's host, "" sends no SNI at all; `cafile`
    None verifies against the system's trust store."""

    sni: str | None = None
    cafile: str | None = None


@dataclass(frozen=True)
class CheckOptions:
    request: Request = Request()  # curl's -X, -H, -A and --data
    linger: float | None = None  # seconds after the exchange; None: max(0.5 s, 3 round trips)
    max_time: float = 30.0
    settings: Settings = Settings()
    ttl: int = 64
    tls: TlsOptions = TlsOptions()


def application_for(target: Target, request: Request, host: str | None = None, tls: TlsOptions = TlsOptions()):
    """What rides on the connection to `target`: HTTP, or HTTP inside TLS for https://.
    `host` replaces the target's name in the request (and, over TLS, in the SNI)."""
    name = host or target.host
    if not target.tls:
        return HttpExchange.for_url(request, name, target.port, target.path)
    from probe.protocol.tls import TlsExchange

    server_name = name if tls.sni is None or host is not None else tls.sni
    return TlsExchange(HttpExchange.for_url(request, name, target.port, target.path, default_port=443),
                       server_name=server_name, verify_name=name, cafile=tls.cafile)


def new_exchange(target: Target, flow: Flow, options: CheckOptions, crafter_class, plan: Plan | None = None,
                 host: str | None = None, tag=None) -> Exchange:
    """A fresh exchange toward `flow` for `target`, as `options` asks (`plan` replaces the one
    they imply: a trace copy's); `host` replaces the target's name in the request and the SNI."""
    connection = ClientConnection(flow.client, flow.client_port, flow.server, flow.server_port,
                                  application_for(target, options.request, host, options.tls),
                                  isn=initial_sequence(flow.client, flow.client_port, flow.server, flow.server_port),
                                  settings=options.settings, ts_base=timestamp_offset(flow.client, flow.server))
    crafter = crafter_class(flow.client, flow.client_port, flow.server, flow.server_port, random_u32() & 0xFFFF,
                            ttl=options.ttl)
    plan = plan or Plan(max_time=options.max_time, linger=options.linger, ttl=options.ttl)
    return Exchange(flow, connection, crafter, plan, target=target, tag=tag)


def run_check(target: Target, options: CheckOptions = CheckOptions(), on_start=None,
              network: Network | None = None) -> Measurement:
    """Probe once: a loop of one exchange. `on_start(flow)` is called when everything is in
    place, just before the SYN, so that a progress line never precedes an error line."""
    network = network or Network.real()
    flow, reservation = Flows(network).open(target.address, target.port)
    try:
        with ExitStack() as stack:
            loop = Loop.opened(network, stack, [flow.server])
            exchange = new_exchange(target, flow, options, network.crafter)
            loop.drive(exchange, (lambda: on_start(flow)) if on_start is not None else None)
    finally:
        reservation.close()
    return exchange.measurement
