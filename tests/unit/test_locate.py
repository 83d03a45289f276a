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
