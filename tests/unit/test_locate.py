"""The pure localisation logic: TCP sweep against echo sweep."""

from probe.engine.locate import HopReply, locate

SERVER = "203.0.113.80"


def routers(*ttls):
    return [HopReply(t, "time-exceeded", f"198.51.100.{t}", 65 - t) for t in ttls]


def test_a_forwarding_path_firewall_is_placed_at_its_own_hop():
    tcp = routers(1, 2) + [HopReply(3, "tcp", SERVER, 63, "RA")]
    echo = routers(1, 2, 3, 4) + [HopReply(5, "echo-reply", SERVER, 60)]
    where = locate(tcp, echo, SERVER)
    assert (where.in_front, where.tcp_answer_at, where.address_at, where.hop) == (True, 3, 5, 2)


def test_a_proxy_that_answers_at_its_hop_keeps_that_hop():
    tcp = routers(1) + [HopReply(2, "tcp", SERVER, 63, "SA")]
    echo = routers(1, 2, 3, 4) + [HopReply(5, "echo-reply", SERVER, 60)]
    assert locate(tcp, echo, SERVER).hop == 2


def test_the_server_itself_is_not_in_front_of_itself():
    tcp = routers(1, 2, 3, 4) + [HopReply(5, "tcp", SERVER, 60, "RA")]
    echo = routers(1, 2, 3, 4) + [HopReply(5, "echo-reply", SERVER, 60)]
    where = locate(tcp, echo, SERVER)
    assert not where.in_front and where.hop is None


def test_no_echo_reply_means_no_claim():
    tcp = routers(1) + [HopReply(2, "tcp", SERVER, 63, "RA")]
    echo = routers(1, 2, 3) + [HopReply(4, "none"), HopReply(5, "none"), HopReply(6, "none")]
    where = locate(tcp, echo, SERVER)
    assert not where.in_front and where.hop is None
    assert any("did not answer ICMP echo" in sentence for sentence in where.evidence)


def test_an_echo_reply_from_another_address_is_not_the_server():
    tcp = routers(1) + [HopReply(2, "tcp", SERVER, 63, "RA")]
    echo = routers(1) + [HopReply(2, "echo-reply", "198.51.100.99", 63)]
    assert not locate(tcp, echo, SERVER).in_front


def test_a_reset_from_the_last_router_is_in_front_of_the_server_at_the_same_ttl():
    """A firewall in the last router's forwarding path answers at the server's own TTL; only the
    TTL its reset arrives with (61: hop 4) against the echo reply's (60: hop 5) tells them apart.
    A SYN-ACK from there is left alone: that is how a SYN-proxying load balancer looks."""
    echo = [HopReply(ttl, "time-exceeded", f"198.51.100.{ttl}") for ttl in range(1, 5)]
    echo.append(HopReply(5, "echo-reply", SERVER, 60))
    tcp = [HopReply(ttl, "time-exceeded", f"198.51.100.{ttl}") for ttl in range(1, 5)]
    reset = locate(tcp + [HopReply(5, "tcp", SERVER, 61, "RA")], echo, SERVER)
    assert (reset.in_front, reset.hop) == (True, 4)
    synproxy = locate(tcp + [HopReply(5, "tcp", SERVER, 61, "SA")], echo, SERVER)
    assert (synproxy.in_front, synproxy.hop) == (False, None)
    genuine = locate(tcp + [HopReply(5, "tcp", SERVER, 60, "RA")], echo, SERVER)
    assert not genuine.in_front


def test_a_reset_from_the_last_router_is_placed_when_the_probes_at_the_servers_ttl_were_lost():
    """Under loss both SYNs with the server's own TTL (5) may draw nothing, and the firewall's reset
    first shows at TTL 6. Its arrival TTL (61: hop 4) against the echo reply's (60: hop 5) still
    tells it apart: before, the answer past the echo's TTL read as the server's own (one wrong
    blame in 80 SYN-firewall runs under 3% loss, issue 16's matrix). The false positives: a router
    that answered at TTL 5 (a time-exceeded: a hop is there, so no claim), and a reset arriving
    with the server's own TTL."""
    echo = routers(1, 2, 3, 4) + [HopReply(5, "echo-reply", SERVER, 60)]
    lost = routers(1, 2, 3, 4) + [HopReply(5, "none")]
    reset = locate(lost + [HopReply(6, "tcp", SERVER, 61, "RA")], echo, SERVER)
    assert (reset.in_front, reset.tcp_answer_at, reset.hop) == (True, 6, 4)
    assert any("drew nothing" in sentence for sentence in reset.evidence)
    expired = locate(routers(1, 2, 3, 4, 5) + [HopReply(6, "tcp", SERVER, 61, "RA")], echo, SERVER)
    assert (expired.in_front, expired.hop) == (False, None)
    genuine = locate(lost + [HopReply(6, "tcp", SERVER, 60, "RA")], echo, SERVER)
    assert (genuine.in_front, genuine.hop) == (False, None)
    far = locate(lost + [HopReply(6, "none"), HopReply(7, "tcp", SERVER, 61, "RA")], echo, SERVER)
    assert (far.in_front, far.hop) == (True, 4)


# --- a reset to the SYN, against the server's own SYN-ACK drawn by the sweep ----------------------

from probe.engine import analyze_flow  # noqa: E402

from .conftest import FLOW, from_client, from_server  # noqa: E402

ISN = 2466954207


def reset_to_syn(reset_ttl: int):
    """Our SYN answered at once by a RST/ACK in the server's name arriving with `reset_ttl`."""
    return [from_client(0.0, "S", ISN, 0, ip_id=100),
            from_server(0.01, "RA", 0, ISN + 1, ttl=reset_ttl, ip_id=0)]


def sweep_reaching_the_server(flags: str, reply_ttl: int):
    """Both sweeps reach the server at TTL 5: the TCP answer is the address's own hop."""
    tcp = routers(1, 2, 3, 4) + [HopReply(5, "tcp", FLOW.server, reply_ttl, flags)]
    echo = routers(1, 2, 3, 4) + [HopReply(5, "echo-reply", FLOW.server, 60)]
    return locate(tcp, echo, FLOW.server)


def test_a_reset_from_nearer_than_the_servers_own_synack_is_not_the_servers():
    """The sweep's SYN took the clean branch of an ECMP pair (or met a box that blocks once): the
    server's SYN-ACK arrives with TTL 60 (hop 5), the exchange's reset with 62 (hop 3)."""
    where = sweep_reaching_the_server("SA", 60)
    assert not where.in_front
    analysis = analyze_flow(reset_to_syn(62), FLOW, where)
    assert (analysis.verdict, analysis.direction, analysis.hop) == ("middlebox-reset", "to-client", None)
    assert analysis.attributions[1].origin == "middlebox"
    assert "TTL 60" in analysis.explanation and "TTL 62" in analysis.explanation


def test_a_one_hop_difference_or_a_closed_port_stays_the_servers():
    """The known false positives: one hop of difference is what a path change or an uneven ECMP
    pair makes; a sweep whose SYN drew a reset from the server's hop is a closed port, and
    without the sweep nothing is claimed."""
    one_hop = analyze_flow(reset_to_syn(61), FLOW, sweep_reaching_the_server("SA", 60))
    closed = analyze_flow(reset_to_syn(62), FLOW, sweep_reaching_the_server("RA", 60))
    alone = analyze_flow(reset_to_syn(62), FLOW)
    assert [a.verdict for a in (one_hop, closed, alone)] == ["server-reset"] * 3
