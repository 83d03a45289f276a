"""The ISN and timestamp clock of our connections go forward per four-tuple and address pair,
as Linux's do (RFC 6528, RFC 7323 7.1), so a server still holding a reused four-tuple in
TIME-WAIT takes our SYN as a new connection (tests/e2e/test_ipv6_e2e.py reuses one port)."""

from probe.protocol.tcp import seq_diff
from probe.network.wire import initial_sequence, timestamp_offset


def test_successive_isns_of_one_four_tuple_only_go_forward():
    isns = [initial_sequence("2001:db8:2::10", 40000, "2001:db8:113::80", 80) for _ in range(200)]
    assert all(seq_diff(later, earlier) > 0 for earlier, later in zip(isns, isns[1:]))


def test_isns_of_other_four_tuples_are_not_related():
    first = initial_sequence("192.0.2.10", 40000, "203.0.113.80", 80)
    others = {initial_sequence("192.0.2.10", port, "203.0.113.80", 80) - first for port in range(40001, 40033)}
    assert len(others) == 32  # a keyed hash per four-tuple, not one clock for all


def test_the_timestamp_offset_is_one_per_address_pair():
    pair = timestamp_offset("2001:db8:2::10", "2001:db8:113::80")
    assert all(timestamp_offset("2001:db8:2::10", "2001:db8:113::80") == pair for _ in range(10))
    assert len({timestamp_offset("192.0.2.10", f"203.0.113.{n}") for n in range(1, 33)}) == 32
