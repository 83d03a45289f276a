"""The copies of a trace in sending order (probe.engine.order): the first trigger that reaches
the box decides, and a box that blocks everything after it (residual blocking) still gets its
hop. Synthetic copies: routers r1.. answer at their TTL, the server is hop 5."""

from __future__ import annotations

from probe.engine.order import Copy, decide, keeps_identity, locate_in_order, rows_in_order, sending_order
from probe.engine.trace import Fate, HopRow, locate_box

BLOCKED = Fate("no-handshake")
SERVER = Fate("server", "203.0.113.80")


def te(ttl: int) -> Fate:
    return Fate("time-exceeded", f"r{ttl}")


def clean_pairs(up_to: int) -> list[Copy]:
    return [Copy(ttl, role, te(ttl)) for ttl in range(1, up_to + 1) for role in ("control", "trigger")]


def blocked(*ttl_roles) -> list[Copy]:
    return [Copy(ttl, role, BLOCKED) for ttl, role in ttl_roles]


def test_the_order_is_ttl_ascending_control_first():
    assert sending_order(2) == [(1, "control"), (1, "trigger"), (2, "control"), (2, "trigger")]


def residual_in_path_at_hop_2() -> list[Copy]:
    """A residual blocker in hop 2's forwarding path: the trigger with TTL 3 is the first to reach
    it and is reset; every connection after it cannot even be opened."""
    return (clean_pairs(2) + [Copy(3, "control", te(3)), Copy(3, "trigger", Fate("reset", reply_ttl=63))]
            + blocked((3, "control"), (3, "trigger"), (4, "control"), (4, "trigger")))


def test_a_residual_blocker_is_named_though_everything_after_the_first_trigger_is_blocked():
    copies = residual_in_path_at_hop_2()
    decision = decide(copies)
    assert (decision.index, decision.ttl, decision.confirmed_by, decision.blocked_after) == (5, 3, "residual", 4)
    result = locate_in_order(copies)
    assert (result.interference, result.hop, result.bracket, result.kind) == (True, 2, (2, 3), "in-path")
    assert "residual blocking" in result.evidence[-1]


def test_without_the_rule_the_same_trace_names_nothing():
    """What the rows of one pair per TTL say when the repeat could not connect: nothing confirmed,
    nothing found. The residual rule is what names the hop."""
    rows = [HopRow(1, "r1", None, te(1), te(1)), HopRow(2, "r2", None, te(2), te(2)),
            HopRow(3, "r3", None, Fate("reset", reply_ttl=63), te(3), confirmed=False),
            HopRow(4, None, None, BLOCKED, BLOCKED)]
    assert not locate_box(rows).interference


def test_a_residual_tap_is_named_at_its_own_hop():
    copies = (clean_pairs(1) + [Copy(2, "control", te(2)), Copy(2, "trigger", Fate("time-exceeded+reset", "r2", reply_ttl=63))]
              + blocked((2, "control"), (2, "trigger")))
    result = locate_in_order(copies)
    assert (result.hop, result.kind, result.bracket) == (2, "on-path", (1, 3))


def test_a_control_sent_after_the_trigger_hides_the_difference():
    """Rule 2: at the deciding TTL the control went second and was blocked by the trigger's block:
    nothing differs, so nothing decides. This is why the control goes first."""
    copies = clean_pairs(2) + [Copy(3, "trigger", Fate("reset", reply_ttl=63)), Copy(3, "control", BLOCKED)] + \
        blocked((4, "control"), (4, "trigger"))
    assert decide(copies).index is None
    assert not locate_in_order(copies).interference


def test_one_blocked_copy_after_the_trigger_is_not_a_residual_block():
    copies = clean_pairs(2) + [Copy(3, "control", te(3)), Copy(3, "trigger", Fate("silent"))] + blocked((3, "control"))
    assert decide(copies).confirmed_by is None
    assert not locate_in_order(copies).interference


def test_later_copies_that_connect_refute_the_residual_reading():
    copies = clean_pairs(2) + [Copy(3, "control", te(3)), Copy(3, "trigger", Fate("silent")),
                               Copy(3, "control", BLOCKED), Copy(3, "trigger", BLOCKED), Copy(4, "control", te(4))]
    assert decide(copies).confirmed_by is None


def test_blocked_triggers_alone_do_not_confirm():
    """A trigger that cannot connect says nothing new about the block: a control must be among them."""
    copies = clean_pairs(2) + [Copy(3, "control", te(3)), Copy(3, "trigger", Fate("silent"))] + \
        blocked((3, "trigger"), (4, "trigger"))
    assert decide(copies).confirmed_by is None


def test_a_repeat_confirms_as_before():
    reset = Fate("reset", reply_ttl=63)
    copies = clean_pairs(2) + [Copy(3, "control", te(3)), Copy(3, "trigger", reset),
                               Copy(3, "control", te(3)), Copy(3, "trigger", reset)]
    assert decide(copies).confirmed_by == "repeat"
    assert locate_in_order(copies).hop == 2


def silent_pair(ttl: int) -> list[Copy]:
    return [Copy(ttl, "control", te(ttl)), Copy(ttl, "trigger", Fate("silent"))]


def test_silence_alone_takes_two_repeats_for_loss_makes_it_too():
    """Under 3% loss each way, about 6% of copies read as silence; a silent trigger and one
    silent repeat at a TTL before the box (two losses in a row) named the hop too near."""
    once = clean_pairs(1) + silent_pair(2) + silent_pair(2) + [Copy(2, "control", te(2)), Copy(2, "trigger", te(2))]
    twice = clean_pairs(1) + silent_pair(2) + silent_pair(2) + silent_pair(2)
    assert decide(once).confirmed_by is None
    assert decide(twice).confirmed_by == "repeat" and locate_in_order(twice).hop == 1
    # the box further on is then the first confirmed difference
    later = once + silent_pair(3) + silent_pair(3) + silent_pair(3)
    assert decide(later).ttl == 3 and locate_in_order(later).hop == 2


def test_a_silence_repeated_as_an_answer_needs_no_third_pair():
    """The false positive the rule must not have: a box's answer (a reset) repeating a silence is
    not what loss makes, and confirms at once, as any other difference's one repeat does."""
    copies = clean_pairs(2) + silent_pair(3) + [Copy(3, "control", te(3)), Copy(3, "trigger", Fate("reset", reply_ttl=63))]
    assert decide(copies).confirmed_by == "repeat" and locate_in_order(copies).hop == 2


def test_a_trace_blocked_from_its_first_copy_says_why_it_cannot_place_the_box():
    copies = blocked((1, "control"), (1, "trigger"), (2, "control"), (2, "trigger"))
    result = locate_in_order(copies)
    assert not result.interference and "began while the address and port were blocked" in result.evidence[-1]


def test_rows_hold_the_decider_and_the_control_sent_before_it():
    rows = rows_in_order(residual_in_path_at_hop_2())
    assert [row.ttl for row in rows] == [1, 2, 3, 4]
    assert rows[2].trigger.word == "reset" and rows[2].control == te(3) and rows[2].confirmed
    assert rows[2].address == "r3" and not rows[3].confirmed


def test_a_trigger_that_expired_like_its_control_keeps_the_four_tuple():
    """Only a trigger that may have met a box burns its four-tuple (Paris traceroute's fixed flow
    identity, kept while it is safe)."""
    router = "198.51.100.2"
    assert keeps_identity(Fate("time-exceeded", router), Fate("time-exceeded", router))
    # a forged answer beside the expiry, silence, a failed connection, another router: a fresh one
    assert not keeps_identity(Fate("time-exceeded+reset", router), Fate("time-exceeded", router))
    assert not keeps_identity(Fate("silent"), Fate("time-exceeded", router))
    assert not keeps_identity(Fate("silent"), Fate("silent"))  # a lost answer or a box: cannot tell
    assert not keeps_identity(Fate("no-handshake"), Fate("time-exceeded", router))
    assert not keeps_identity(Fate("time-exceeded", "198.51.100.130"), Fate("time-exceeded", router))
    assert not keeps_identity(Fate("reset"), Fate("time-exceeded", router))


def test_a_lost_copy_before_the_box_does_not_take_the_residual_blockers_place():
    """3% loss (the accuracy matrix, residual blocker at hop 4): the trigger with TTL 4 read as
    silence (its time-exceeded was lost) and its repeat took another path, so nothing confirmed
    it; the trigger with TTL 5 reached the box and everything after it was blocked. The first
    *confirmed* difference decides; the lost copy is left as an unconfirmed row."""
    copies = (clean_pairs(3) + [Copy(4, "control", te(4)), Copy(4, "trigger", Fate("silent")),
                                Copy(5, "control", SERVER), Copy(5, "trigger", Fate("reset", reply_ttl=61))]
              + blocked((5, "control"), (5, "trigger"), (6, "control"), (6, "trigger")))
    decision = decide(copies)
    assert (decision.ttl, decision.confirmed_by) == (5, "residual")
    result = locate_in_order(copies)
    assert (result.interference, result.hop, result.bracket) == (True, 4, (3, 5))


def test_a_lone_unconfirmed_difference_still_decides_unconfirmed():
    """The known case the change must keep: with no confirmed difference anywhere, the first
    difference is still the one reported (unconfirmed), not dropped."""
    copies = clean_pairs(2) + [Copy(3, "control", te(3)), Copy(3, "trigger", Fate("silent")),
                               Copy(4, "control", te(4)), Copy(4, "trigger", Fate("silent"))]
    decision = decide(copies)
    assert (decision.ttl, decision.confirmed_by) == (3, None)


def ecmp_residual_at_hop_3(sample_ports: list[tuple[int, str]]) -> list[Copy]:
    """A residual blocker on branch b of an ECMP pair at hop 3 (routers r3 and r3b): port 1's
    trigger with TTL 3 is the first to reach it; then confirming controls on fresh ports, each
    ending at branch `r3` (the clean branch: it connects) or blocked, as `sample_ports` says."""
    path = [Copy(ttl, role, te(ttl), port=1) for ttl in (1, 2) for role in ("control", "trigger")]
    path += [Copy(3, "control", Fate("time-exceeded", "r3b"), port=1),
             Copy(3, "trigger", Fate("time-exceeded+reset", "r3b", reply_ttl=62), port=1)]
    for port, end in sample_ports:
        if end == "clean":  # another router at this TTL: no trigger is spent on it
            path.append(Copy(3, "control", te(3), port=port))
        else:
            path += [Copy(3, "control", BLOCKED, port=port), Copy(3, "trigger", BLOCKED, port=port)]
    return path


def test_ecmp_copies_that_took_the_other_branch_neither_confirm_nor_refute_a_residual_block():
    """Rule 3 under ECMP: fresh controls that expired at the other router of the pair (r3, the
    decider's flow expired at r3b) never crossed the box; the pair that did could not connect,
    which confirms the block. Before, the clean branch's controls refuted it."""
    copies = ecmp_residual_at_hop_3([(2, "clean"), (3, "clean"), (4, "blocked")])
    decision = decide(copies)
    assert (decision.ttl, decision.confirmed_by, decision.blocked_after) == (3, "residual", 2)
    assert locate_in_order(copies).hop == 3


def test_a_flow_that_showed_another_router_once_is_left_out_at_every_ttl():
    """The other branch rejoins at hop 4: a sample port's copy there expired where the decider's
    flow would, but its TTL-3 control showed the other branch, so the port is left out whole."""
    copies = ecmp_residual_at_hop_3([(2, "clean")]) + [Copy(4, "control", te(4), port=2),
                                                        Copy(4, "trigger", te(4), port=2)]
    copies += [Copy(4, "control", BLOCKED, port=3), Copy(4, "trigger", BLOCKED, port=3)]
    assert decide(copies).confirmed_by == "residual"


def test_copies_on_the_deciders_own_path_that_connect_still_refute_the_block():
    """The known false positive of leaving copies out (loss read as a block): a later flow that
    expired at the decider's routers, or of unknown path, and connected, is evidence against a
    block; only a different router at a shared TTL moves a copy out."""
    same_path = ecmp_residual_at_hop_3([(2, "blocked")]) + [Copy(3, "control", Fate("time-exceeded", "r3b"), port=5)]
    assert decide(same_path).confirmed_by is None
    unknown = ecmp_residual_at_hop_3([(2, "blocked")]) + [Copy(5, "control", SERVER, port=6)]
    assert decide(unknown).confirmed_by is None
    no_ports = [Copy(c.ttl, c.role, c.fate) for c in ecmp_residual_at_hop_3([(2, "blocked")])] + \
        [Copy(4, "control", te(4))]
    assert decide(no_ports).confirmed_by is None
