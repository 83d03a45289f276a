"""The state machine over IPv6: ICMPv6 errors end or do not end the handshake as Linux's
tcp_v6_err (net/ipv6/tcp_ipv6.c) does, on records parsed from real bytes (our SYN crafted by
the struct crafter, the router's error built by scapy, RFC 4443's layouts)."""

from __future__ import annotations

import pytest
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6ParamProblem, ICMPv6TimeExceeded, IPv6

from probe.protocol.craft import StructCrafter
from probe.protocol.http import HttpExchange
from probe.record import parse_ip
from probe.protocol.tcp import ClientConnection, Segment, ends_handshake

CLIENT, SERVER, ROUTER = "2001:db8::10", "2001:db8:2::80", "2001:db8::1"
ERRORS = {"unreachable": ICMPv6DestUnreach, "too-big": ICMPv6PacketTooBig, "time-exceeded": ICMPv6TimeExceeded,
          "parameter-problem": ICMPv6ParamProblem}


def _connection() -> tuple[ClientConnection, Segment]:
    app = HttpExchange.for_url("HEAD", SERVER, 80, "/")
    connection = ClientConnection(CLIENT, 40000, SERVER, 80, app, isn=1000, ts_base=0)
    [syn] = connection.start(0.0)
    return connection, syn


def _error(kind: str, code: int, quoting: Segment):
    syn_bytes = StructCrafter(CLIENT, 40000, SERVER, 80, 0).build(quoting)
    layer = ERRORS[kind](code=code) if kind != "too-big" else ICMPv6PacketTooBig(mtu=1280)
    return parse_ip(bytes(IPv6(src=ROUTER, dst=CLIENT, hlim=64) / layer / syn_bytes), 0.01)


@pytest.mark.parametrize("kind, code", [
    ("unreachable", 0),  # no route
    ("unreachable", 1),  # administratively prohibited
    ("unreachable", 3),  # address unreachable (a host that is down)
    ("unreachable", 4),  # port unreachable
    ("unreachable", 5), ("unreachable", 6),  # source policy, reject route
    ("unreachable", 200),  # an unknown code ends it too (icmpv6_err_convert: EPROTO, and SYN-SENT ends)
    ("time-exceeded", 0), ("time-exceeded", 1), ("parameter-problem", 0),
])
def test_an_icmpv6_error_to_the_syn_ends_the_attempt(kind, code):
    connection, syn = _connection()
    error = _error(kind, code, syn)
    assert error.version == 6 and error.quoted.seq == syn.seq and ends_handshake(error)
    assert connection.on_packet(error, 0.01) == []
    assert connection.done and connection.progress.icmp_error == (error.icmp_type, code)


def test_packet_too_big_only_tells_the_path_mtu():
    """RFC 8201: a packet too big is path MTU information, never the end of a connection."""
    connection, syn = _connection()
    error = _error("too-big", 0, syn)
    assert not ends_handshake(error)
    assert connection.on_packet(error, 0.01) == [] and not connection.done
    assert connection.on_timer(1.5)[0].flags == "S"


def test_an_icmpv6_error_quoting_a_sequence_number_we_did_not_send_is_ignored():
    connection, syn = _connection()
    other = Segment("S", syn.seq + 5000, 0, syn.window, options=syn.options)
    assert connection.on_packet(_error("unreachable", 1, other), 0.01) == [] and not connection.done


def test_the_json_of_an_ipv6_packet_carries_its_flow_label():
    from probe.engine.model import Attribution, Flow
    from probe.render.report import packet_json

    _, syn = _connection()
    error = _error("unreachable", 1, syn)
    flow = Flow(CLIENT, 40000, SERVER, 80)
    item = packet_json(1, error, 0.0, flow, Attribution("path"))
    assert (item["version"], item["icmp_type"], item["icmp_code"]) == (6, 1, 1)
    assert 0 < item["quoted"]["flow_label"] <= 0xFFFFF  # our SYN's random label, as the router quoted it


@pytest.mark.parametrize("text, endpoint", [
    ("203.0.113.80", ("203.0.113.80", None)), ("203.0.113.80:80", ("203.0.113.80", 80)),
    ("2001:DB8:0::80", ("2001:db8::80", None)), ("[2001:db8::80]", ("2001:db8::80", None)),
    ("[2001:db8::80]:8080", ("2001:db8::80", 8080)),
])
def test_analyze_takes_ipv6_ends_as_records_spell_them(text, endpoint):
    from probe.commands.analyze import parse_endpoint, parse_flow

    assert parse_endpoint(text) == endpoint
    assert parse_flow(f"{text}-[2001:db8::10]:40000") == (endpoint, ("2001:db8::10", 40000))
