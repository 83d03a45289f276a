"""The box helpers speak both families (no root): which tool takes a rule, how ip6tables spells
REJECT's ICMP types, and the IPv6 segments a box reads and forges (issue 15)."""

from __future__ import annotations

import pytest
from scapy.layers.inet6 import IPv6

from netns.boxes import _common, _packets
from probe.protocol.craft import StructCrafter
from probe.protocol.tcp import Segment


@pytest.mark.parametrize("spec, tools", [
    (["-p", "tcp", "--dport", "80", "-j", "DROP"], ("iptables", "ip6tables")),
    (["-d", "203.0.113.100", "-j", "DNAT", "--to-destination", "203.0.113.80"], ("iptables",)),
    (["-d", "2001:db8:113::100", "-j", "DNAT", "--to-destination", "2001:db8:113::80"], ("ip6tables",)),
])
def test_a_rule_goes_to_the_family_of_the_addresses_it_names_else_to_both(spec, tools):
    assert _common._families(spec) == tools


def test_reject_s_icmp_words_have_their_icmpv6_counterparts():
    """RFC 4443 3.1: code 1 is administratively prohibited (ip6tables' icmp6-adm-prohibited)."""
    assert _common.IP6_WORDS["icmp-admin-prohibited"] == "icmp6-adm-prohibited"


def test_a_box_reads_an_ipv6_segment_and_forges_in_the_same_family():
    request = Segment("PA", 1000, 2000, 502, b"GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n")
    data = StructCrafter("2001:db8:2::10", 40000, "2001:db8:113::80", 80, 0, ttl=62, flow_label=0x12345).build(request)
    seg = _packets.parse(data)
    assert (seg.src, seg.dst, seg.ttl, seg.flow_label, seg.payload) == \
        ("2001:db8:2::10", "2001:db8:113::80", 62, 0x12345, request.payload)
    assert (seg.ip_id, seg.df) == (0, True)  # no IP-ID, no fragmentation by routers over IPv6
    [first, *rest] = _packets.burst_toward_client(seg)
    forged = IPv6(bytes(first))
    assert (forged.src, forged.dst, forged.hlim) == ("2001:db8:113::80", "2001:db8:2::10", _common.BOX_TTL)
    assert forged.fl != seg.flow_label and len(rest) == 3  # an injector rarely knows the server's label
    copy = IPv6(_packets.with_fresh_checksums(data, ttl_decrement=1))
    assert copy.hlim == 61
