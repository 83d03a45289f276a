"""Property 7, and properties 2 and 3 again, on the lab's golden captures (tests/golden/captures).

Each capture holds the probe's exchange first (and, for the recent ones, the trace's connections after
it). Its analysis must not depend on anything but the flow's own packets
(dropping the other flows, of which there are none, or adding some), on the run (the engine is
deterministic), on when the capture started or how slow the path was; and a middlebox verdict
must not become "clean" when the capture stops right after the last packet we sent (the linger
tail, where the probe waits for late packets, is not what convicts the box).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from probe.engine import analyze_flow
from probe.files.pcap import read_records
from tests.golden.own_flow import own_flow

from .exchanges import other_flow_packets, property_settings, table

CAPTURES = sorted((Path(__file__).parent.parent / "golden" / "captures").glob("*.pcap"))
IDS = [capture.stem for capture in CAPTURES]

PER_CAPTURE = property_settings(25)


def load(capture: Path):
    """The capture's records and its first flow: the probe's exchange (a capture recorded since `check`
    locates boxes by itself also holds the trace's connections, after it)."""
    own = own_flow(capture)
    return list(read_records(str(capture))), own.flow, own.packets


def outcome(analysis):
    return analysis.verdict, analysis.direction, analysis.hop, [a.origin for a in analysis.attributions]


def test_there_are_captures():
    assert len(CAPTURES) >= 14


@pytest.mark.parametrize("capture", CAPTURES, ids=IDS)
def test_analysis_is_deterministic_and_ignores_other_flows(capture):
    records, flow, packets = load(capture)
    first = analyze_flow(packets, flow)
    assert analyze_flow(packets, flow) == first
    assert analyze_flow(list(load(capture)[2]), flow) == first  # read again, analysed again
    # the whole capture (with the trace's other connections, where there are some), and the capture
    # without other flows: the same for this flow's packets
    whole = analyze_flow(records, flow)
    assert outcome(whole)[:3] == outcome(first)[:3]
    assert [a for r, a in zip(records, whole.attributions) if flow.belongs(r)] == list(first.attributions)
    assert analyze_flow([r for r in records if flow.belongs(r)], flow) == first


@pytest.mark.parametrize("capture", CAPTURES, ids=IDS)
def test_removing_the_linger_tail_never_makes_a_middlebox_verdict_clean(capture):
    _, flow, packets = load(capture)
    full = analyze_flow(packets, flow)
    last_ours = max(i for i, p in enumerate(packets) if flow.sent_by_client(p))
    cut = packets[:last_ours + 1]
    truncated = analyze_flow(cut, flow)
    if full.verdict.startswith("middlebox"):
        assert truncated.verdict != "clean", table(cut, truncated)


@pytest.mark.parametrize("capture", CAPTURES, ids=IDS)
@PER_CAPTURE
@given(shift=st.floats(-1.7e9, 1e9), factor=st.floats(1.0, 20.0))
def test_shifting_or_slowing_a_capture_changes_nothing(capture, shift, factor):
    _, flow, packets = load(capture)
    start = packets[0].t
    before = outcome(analyze_flow(packets, flow))
    assert outcome(analyze_flow([replace(p, t=p.t + shift) for p in packets], flow)) == before
    assert outcome(analyze_flow([replace(p, t=start + (p.t - start) * factor) for p in packets], flow)) == before


@st.composite
def with_other_flows(draw, packets, flow):
    mixed, ours = list(packets), [True] * len(packets)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(mixed)))
        t = mixed[at - 1].t if at else mixed[0].t
        mixed.insert(at, replace(draw(other_flow_packets(packets, flow)), t=t))
        ours.insert(at, False)
    return mixed, ours


@pytest.mark.parametrize("capture", CAPTURES, ids=IDS)
@PER_CAPTURE
@given(data=st.data())
def test_packets_of_other_flows_change_nothing_in_a_capture(capture, data):
    _, flow, packets = load(capture)
    before = analyze_flow(packets, flow)
    mixed, ours = data.draw(with_other_flows(packets, flow))
    after = analyze_flow(mixed, flow)
    assert (after.verdict, after.direction, after.hop) == (before.verdict, before.direction, before.hop)
    assert [a.origin for a, mine in zip(after.attributions, ours) if mine] == [a.origin for a in before.attributions]
