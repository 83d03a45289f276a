"""The lab's ECMP stage and random loss (netns/lab.py): connections that differ only in the
source port really take both branches, one 5-tuple always takes the same branch (counted with
nftables counters on each branch router), and a router told to lose N% loses about that much.
The `root` tests build real namespaces; the rest run anywhere."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap

import pytest

from netns.lab import CLOSED_PORT, Lab

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
COUNTED = "plab_ecmp_count"


def test_an_ecmp_stage_needs_a_router_before_and_after_it():
    for bad in (1, 4):
        with pytest.raises(ValueError, match="ecmp_hop"):
            Lab(routers=4, ecmp_hop=bad)
    lab = Lab(routers=4, ecmp_hop=2)
    assert lab.namespaces[2:4] == [lab.router_ns(2), f"{lab.prefix}-r2b"]
    assert (lab.branch_ns("a"), lab.branch_ns("b")) == (lab.router_ns(2), lab.twin_ns)
    assert lab.twin_addr == "198.51.100.130" and lab.twin_addr6 == "2001:db8:200:1::2"
    with pytest.raises(ValueError):
        Lab(routers=4).twin_ns  # noqa: B018


CONNECT_FROM_PORTS = textwrap.dedent("""\
    import socket, sys
    server, port, family = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    client = sys.argv[4]
    for sport in map(int, sys.argv[5:]):
        s = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((client, sport))
        s.settimeout(3)
        try:
            s.connect((server, port))
        except ConnectionRefusedError:
            pass  # the closed port's RST: one SYN per connection, nothing retransmitted
        s.close()
""")


def count_syns(lab: Lab, family: int, sports: list[int]) -> tuple[int, int]:
    """SYNs to the closed port that crossed branch a and branch b while the client connected
    once from each source port in `sports` (in that order)."""
    for branch in ("a", "b"):
        lab.exec(lab.branch_ns(branch), ["nft", "-f", "-"], input=(
            f"add table inet {COUNTED}\ndelete table inet {COUNTED}\n"
            f"table inet {COUNTED} {{\n chain counted {{\n  type filter hook forward priority 0;\n"
            f"  tcp dport {CLOSED_PORT} tcp flags syn counter\n }}\n}}\n"))
    server, client = (lab.server_addr6, lab.client_addr6) if family == 6 else (lab.server_addr, lab.client_addr)
    lab.exec(lab.client_ns, [sys.executable, "-c", CONNECT_FROM_PORTS, server, str(CLOSED_PORT), str(family),
                             client, *map(str, sports)])
    counts = []
    for branch in ("a", "b"):
        ruleset = json.loads(lab.exec(lab.branch_ns(branch), ["nft", "-j", "list", "table", "inet", COUNTED]).stdout)
        rule = next(item["rule"] for item in ruleset["nftables"] if "rule" in item)
        counts.append(next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e))
        lab.exec(lab.branch_ns(branch), ["nft", "delete", "table", "inet", COUNTED])
    return counts[0], counts[1]


@pytest.fixture(scope="module")
def ecmp_lab():
    with Lab(routers=3, delay_ms=0, servers=False, ecmp_hop=2) as lab:
        yield lab


@pytest.mark.root
@needs_root
@pytest.mark.parametrize("family", [4, 6])
def test_source_ports_spread_over_both_branches_and_one_five_tuple_keeps_its_branch(ecmp_lab, family):
    ports = list(range(41000, 41064))
    a, b = count_syns(ecmp_lab, family, ports)
    assert a + b == len(ports)  # every SYN crossed exactly one branch
    # an L4 hash splits 64 flows roughly in half; both branches below 8 has odds ~1e-10
    assert a >= 8 and b >= 8, (a, b)
    for sport in (41000, 41001, 41002, 41003):
        a, b = count_syns(ecmp_lab, family, [sport] * 10)
        assert sorted((a, b)) == [0, 10], (sport, a, b)


EXPIRED_AT = textwrap.dedent("""\
    import sys
    from scapy.layers.inet import IP, TCP
    from scapy.sendrecv import sr1
    server, port, ttl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for sport in map(int, sys.argv[4:]):
        answer = sr1(IP(dst=server, ttl=ttl) / TCP(sport=sport, dport=port, flags="S"), timeout=2, verbose=0)
        print(answer.src if answer is not None else "-")
""")


@pytest.mark.root
@needs_root
def test_each_branch_answers_for_its_hop_in_its_own_name(ecmp_lab):
    """A TTL-2 SYN expires at r2 or at its twin, as its flow hashed, and always at the same one
    for the same source port. A TTL-3 SYN expires at r3, which answers from the interface it came
    in on: r3's `up` behind r2, its `up2` behind the twin (so a trace sees two addresses at TTL 3
    as well: the multipath false positive of probe.engine.multipath)."""
    def expired_at(ttl: int, sports: list[int]) -> list[str]:
        return ecmp_lab.exec(ecmp_lab.client_ns, [sys.executable, "-c", EXPIRED_AT, ecmp_lab.server_addr,
                                                  str(CLOSED_PORT), str(ttl), *map(str, sports)]).stdout.split()

    sports = list(range(42000, 42032))
    at_2 = expired_at(2, sports)
    assert set(at_2) == {ecmp_lab.router_addr(2), ecmp_lab.twin_addr}, at_2
    assert expired_at(2, sports[:4]) == at_2[:4]
    behind = {ecmp_lab.router_addr(2): ecmp_lab.router_addr(3), ecmp_lab.twin_addr: ecmp_lab.rejoin_addr}
    assert expired_at(3, sports[:8]) == [behind[router] for router in at_2[:8]]


@pytest.mark.root
@needs_root
def test_a_router_told_to_lose_n_percent_loses_about_that_much():
    with Lab(routers=2, delay_ms=0, servers=False) as lab:
        lab.add_loss(1, 30)
        out = lab.exec(lab.client_ns, ["ping", "-n", "-q", "-c", "300", "-i", "0.005", "-W", "1",
                                       lab.server_addr], check=False).stdout
        received = int(re.search(r"(\d+) received", out).group(1))
        # each echo crosses r1 twice: 0.7 * 0.7 = 49% come back; 5 sigma is +-14 points
        assert 0.35 * 300 <= received <= 0.63 * 300, out
        lab.add_loss(1, 30)  # replacing it leaves one table, not two
        tables = lab.exec(lab.router_ns(1), ["nft", "list", "tables"]).stdout
        assert tables.count("plab_loss") == 1
        lab.remove_loss(1)
        out = lab.exec(lab.client_ns, ["ping", "-n", "-q", "-c", "50", "-i", "0.005", "-W", "1",
                                       lab.server_addr], check=False).stdout
        assert " 50 received" in out, out
