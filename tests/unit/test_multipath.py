"""Multipath evidence in a trace (probe.engine.multipath), and locate_box naming the right hop
when the copies of one TTL came back from two routers (a box on one branch of an ECMP pair)."""

from __future__ import annotations

from probe.engine.multipath import NOT_SEEN, multipath_from_rows, multipath_json, multipath_of, path_changed
from probe.engine.trace import Fate, HopRow, locate_box


def te(router: str) -> Fate:
    return Fate("time-exceeded", router)


def test_one_router_per_ttl_is_no_multipath():
    copies = [(1, "control", te("r1")), (1, "trigger", te("r1")), (2, "control", te("r2")),
              (2, "trigger", Fate("silent")), (3, "trigger", Fate("unreachable", "r9"))]
    assert multipath_of(copies) == NOT_SEEN
    assert multipath_json(NOT_SEEN) == {"seen": False, "hops": []}
    assert multipath_json(None) is None


def test_another_router_at_the_same_ttl_is_multipath_and_names_the_hop():
    copies = [(1, "control", te("r1")), (1, "trigger", te("r1")),
              (2, "control", te("r2a")), (2, "trigger", te("r2b")), (2, "control", te("r2a")),
              (3, "control", te("r3")), (3, "trigger", Fate("time-exceeded+reset", "r3"))]
    found = multipath_of(copies)
    assert found.seen and found.varied_ttls == (2,)
    assert found.hops[0].routers == ("r2a", "r2b") and found.hops[0].between == "trigger and control"
    assert "r2a and r2b" in found.evidence[0]


def test_copies_of_one_role_that_took_two_paths():
    copies = [(2, "control", te("r2a")), (2, "trigger", te("r2a")), (2, "control", te("r2b")), (2, "trigger", te("r2a"))]
    hop = multipath_of(copies).hops[0]
    assert hop.between == "trigger and control, copies of the control"
    copies = [(2, "control", te("r2a")), (2, "control", te("r2b"))]
    assert multipath_of(copies).hops[0].between == "copies of the control"


def test_an_on_path_tap_behind_the_branch_router_still_counts():
    """A tap's expired copy carries the router too (time-exceeded+reset)."""
    copies = [(2, "control", te("r2a")), (2, "trigger", Fate("time-exceeded+reset", "r2b", reply_ttl=64))]
    assert multipath_of(copies).varied_ttls == (2,)


def rows_with_branches(trigger_at_2: Fate, trigger_at_3: Fate, confirmed_at: int) -> list[HopRow]:
    """Control through branch a (r2a), trigger through branch b (r2b), which holds the box."""
    return [HopRow(1, "r1", None, te("r1"), te("r1")),
            HopRow(2, "r2a", None, trigger_at_2, te("r2a"), confirmed_at == 2),
            HopRow(3, "r3", None, trigger_at_3, te("r3"), confirmed_at == 3)]


def test_locate_box_names_the_branch_hop_when_the_copies_of_one_ttl_came_from_two_routers():
    tap = rows_with_branches(Fate("time-exceeded+reset", "r2b", reply_ttl=63), te("r3"), 2)
    assert (locate_box(tap).hop, locate_box(tap).bracket) == (2, (1, 3))
    swallowed = rows_with_branches(te("r2b"), Fate("silent"), 3)
    assert (locate_box(swallowed).hop, locate_box(swallowed).bracket) == (2, (2, 3))
    rejected = rows_with_branches(te("r2b"), Fate("unreachable", "r2b"), 3)
    assert locate_box(rejected).hop == 2
    for rows in (tap, swallowed, rejected):
        assert multipath_from_rows(rows).varied_ttls == (2,)


def test_a_copy_that_expired_elsewhere_than_an_earlier_one_of_its_ttl_is_a_cue_to_repeat():
    earlier = [(1, "control", te("r1")), (2, "control", te("r2a")), (2, "trigger", Fate("silent"))]
    assert path_changed(earlier, 2, te("r2b"))
    assert not path_changed(earlier, 2, te("r2a"))
    assert not path_changed(earlier, 3, te("r3"))  # nothing seen at TTL 3 before
    assert not path_changed(earlier, 2, Fate("silent"))  # a vanished copy names no router
