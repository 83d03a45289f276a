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
