"""Residual blocking from the fates of fresh innocuous connections after a trigger
(probe.engine.residual): the interval it finds, the schedule that finds it, and the two false
positives that must not fire (a port that refuses everything, a lossy path)."""

from __future__ import annotations

import pytest

from probe.engine.residual import (COARSE_STEP_S, FINE_STEP_S, FRESH, MIN_BLOCKED, OWN, PASSED, RESET,
                                   SCOPE_SAMPLES, SILENT, ResidualWatch, Try, judge, residual_json, schedule,
                                   sentence)


def watch_against(block_s: float | None, outcome: str = RESET, open_before: bool = True, max_time_s: float = 120.0,
                  lost: set[int] = frozenset()) -> ResidualWatch:
    """Drive a watch against a simulated path: tries before `block_s` meet `outcome`, later ones
    pass (None: nothing is ever blocked); the tries numbered in `lost` are lost (silent)."""
    watch = ResidualWatch(open_before=open_before, max_time_s=max_time_s)
    while (at := watch.next_try()) is not None:
        n = len(watch.tries)
        if n in lost:
            watch.record(at, SILENT)
        else:
            watch.record(at, outcome if block_s is not None and at < block_s else PASSED)
        assert len(watch.tries) <= len(schedule(max_time_s))
    return watch


def test_the_schedule_is_bounded_fine_first_then_coarse():
    times = schedule(120.0)
    assert times[0] == 0.5 and times == sorted(times) and times[-1] <= 120.0
    steps = [b - a for a, b in zip(times, times[1:])]
    assert max(steps) == COARSE_STEP_S and steps[0] == FINE_STEP_S
    assert len(times) <= 30 / FINE_STEP_S + 90 / COARSE_STEP_S  # 75: at most one SYN (and its retry) a second
    assert schedule(0.2) == []


@pytest.mark.parametrize("block_s, outcome", [(20.0, RESET), (20.0, SILENT), (90.0, RESET), (7.3, SILENT)])
def test_a_block_of_known_length_is_found_within_the_schedules_step(block_s, outcome):
    finding = watch_against(block_s, outcome).finding()
    assert finding.seen and finding.began_after_trigger
    assert finding.last_blocked_s < block_s <= finding.first_passed_s
    assert finding.first_passed_s - block_s <= 2.0
    assert finding.blocked_by == {RESET: "reset", SILENT: "silence"}[outcome]
    assert finding.still_blocked_at_s is None


def test_the_watch_stops_at_the_first_pass_after_the_block():
    watch = watch_against(5.0)
    assert watch.tries[-1].outcome == PASSED
    assert [t.outcome for t in watch.tries].count(PASSED) == 1


def test_a_block_longer_than_max_time_is_still_blocked_at_the_last_try():
    finding = watch_against(500.0, max_time_s=40.0).finding()
    assert finding.seen and finding.first_passed_s is None
    assert finding.still_blocked_at_s == schedule(40.0)[-1]
    assert "still at +" in sentence(finding, "203.0.113.80", 80)


def test_a_port_that_refuses_everything_from_the_start_is_not_residual_blocking():
    """A closed port: nothing was accepted before the trigger; every try is refused."""
    assert ResidualWatch(open_before=False).next_try() is None  # nothing to watch
    refused = [Try(t, RESET) for t in schedule(10.0)]
    finding = judge(refused, open_before=False)
    assert not finding.seen and finding.began_after_trigger is False
    assert "before the trigger as well" in finding.evidence[0]
    assert sentence(finding, "203.0.113.80", 81) is None


@pytest.mark.parametrize("lost", [{0}, {1}, {3}, {0, 2}])
def test_random_loss_that_drops_a_try_is_not_residual_blocking(lost):
    watch = watch_against(None, lost=lost)
    finding = watch.finding()
    assert not finding.seen, finding
    assert len(watch.tries) <= max(lost) + 3  # it stops once two tries passed


def test_one_failed_try_is_not_enough_but_min_blocked_in_a_row_is():
    assert MIN_BLOCKED == 2
    assert not judge([Try(0.5, SILENT), Try(1.5, PASSED), Try(2.5, PASSED)], True).seen
    seen = judge([Try(0.5, SILENT), Try(1.5, RESET), Try(2.5, PASSED)], True)
    assert seen.seen and seen.blocked_by == "reset and silence"
    assert (seen.last_blocked_s, seen.first_passed_s) == (1.5, 2.5)


def test_a_block_that_starts_later_is_not_one_the_trigger_set_off():
    assert not judge([Try(0.5, PASSED), Try(1.5, RESET), Try(2.5, RESET), Try(3.5, RESET)], True).seen


def test_loss_after_the_block_ended_is_noted_not_counted():
    finding = judge([Try(0.5, RESET), Try(1.5, RESET), Try(2.5, PASSED), Try(3.5, SILENT)], True)
    assert finding.seen and finding.first_passed_s == 2.5 and "(loss)" in finding.evidence[-1]


def test_tries_are_read_in_time_order():
    assert judge([Try(2.5, PASSED), Try(1.5, RESET), Try(0.5, RESET)], True).first_passed_s == 2.5


def test_the_sentence_and_the_json_carry_the_numbers():
    finding = watch_against(20.0).finding()
    text = sentence(finding, "203.0.113.80", 80)
    assert f"+{finding.last_blocked_s:g} s" in text and f"+{finding.first_passed_s:g} s" in text
    assert "203.0.113.80 port 80" in text and "reset" in text
    keys = {"seen", "began_after_trigger", "blocked_by", "last_blocked_s", "first_passed_s", "still_blocked_at_s",
            "scope", "tries", "evidence"}
    assert set(residual_json(finding)) == keys
    assert set(residual_json(judge([Try(0.5, PASSED)], True))) == keys  # every key, also when not seen
    assert residual_json(None) is None


def test_an_unknown_outcome_is_refused():
    with pytest.raises(ValueError):
        Try(1.0, "blocked")


def test_the_section_validates_against_the_schema_and_a_broken_one_does_not():
    import json

    from jsonschema import Draft202012Validator

    from probe.engine.multipath import multipath_json, multipath_of
    from probe.engine.trace import Fate
    from probe.schema import schema_path

    schema = json.loads(schema_path().read_text())
    residual = Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/residual_blocking"})
    for finding in (watch_against(20.0).finding(), watch_against(None).finding(),
                    judge([Try(0.5, RESET)], open_before=False),
                    watch_on_own_flow(10.0, fresh_blocked=lambda n: False).finding(),  # scope "flow"
                    watch_on_own_flow(10.0, fresh_blocked=lambda n: True).finding()):
        residual.validate(residual_json(finding))
    residual.validate(None)
    broken = residual_json(watch_against(20.0).finding())
    del broken["first_passed_s"]
    assert not residual.is_valid(broken)
    multipath = Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/multipath"})
    multipath.validate(multipath_json(multipath_of([(2, "control", Fate("time-exceeded", "a")),
                                                    (2, "trigger", Fate("time-exceeded", "b"))])))
    assert not multipath.is_valid({"seen": True})


def watch_on_own_flow(block_s: float, fresh_blocked) -> ResidualWatch:
    """A watch that may reuse the exchange's four-tuple, against a path where that flow is blocked
    until `block_s` and a fresh port's try is blocked when `fresh_blocked(n)` (n: the sample's
    number) says so, while the block lasts."""
    watch = ResidualWatch(open_before=True, max_time_s=60.0, own_flow=True)
    samples = 0
    while (at := watch.next_try()) is not None:
        flow = watch.next_flow()
        if flow == OWN:
            watch.record(at, RESET if at < block_s else PASSED, OWN)
        else:
            watch.record(at, RESET if at < block_s and fresh_blocked(samples) else PASSED, FRESH)
            samples += 1
    return watch


def test_on_the_exchanges_own_flow_the_interval_is_read_from_that_flow_alone():
    """ECMP: fresh ports land on either branch, so a fresh port's pass says nothing about the
    block's end; the exchange's own flow crosses the box's branch every time."""
    watch = watch_on_own_flow(20.0, fresh_blocked=lambda n: n % 2 == 1)  # clean branch, then the box's
    finding = watch.finding()
    assert finding.seen and finding.last_blocked_s < 20.0 <= finding.first_passed_s <= 21.0
    assert finding.scope == "address and port"
    own = [t for t in finding.tries if t.flow == OWN]
    assert [t.after_s for t in own] == schedule(60.0)[:len(own)]  # the samples take no slot of the schedule
    assert [t.outcome for t in finding.tries if t.flow == FRESH] == [PASSED, RESET]  # stops at the first blocked
    assert {t["flow"] for t in residual_json(finding)["tries"]} == {OWN, FRESH}


def test_a_box_that_remembers_only_the_offending_flow_is_not_called_a_block_of_the_address_and_port():
    """The known false positive of reusing the four-tuple: a flow table's drop entry blocks that
    four-tuple alone. Every fresh port passes, so the scope says so and the sentence does not
    claim the address and port."""
    finding = watch_on_own_flow(10.0, fresh_blocked=lambda n: False).finding()
    assert finding.seen and finding.scope == "flow"
    samples = [t for t in finding.tries if t.flow == FRESH]
    assert len(samples) == SCOPE_SAMPLES and all(not t.blocked for t in samples)
    text = sentence(finding, "203.0.113.80", 80)
    assert "own source port" in text and "fresh source ports passed" in text
    assert "residual blocking of the address and port" not in text


def test_without_the_own_flow_every_try_is_fresh_and_the_scope_is_the_address_and_port():
    watch = watch_against(12.0)
    assert {t.flow for t in watch.tries} == {FRESH}
    assert watch.finding().scope == "address and port"
    assert watch_against(None).finding().scope is None


def test_a_try_on_an_unknown_flow_is_refused():
    with pytest.raises(ValueError):
        Try(1.0, PASSED, "other")
