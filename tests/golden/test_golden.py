"""Golden cases for the engine, no root needed.

captures/: one raw-IP pcap per lab scenario, recorded by the live probe (`--pcap`), beside the
verdict and per-packet origins it must give (see README.md here for how they were made).
records/: hand-made record sequences for edge cases the lab does not produce.
"""

import json
from pathlib import Path

import pytest

from probe.engine import Flow, analyze_flow
from probe.record import PacketRecord
from tests.golden.own_flow import own_flow

HERE = Path(__file__).parent
CAPTURES = sorted((HERE / "captures").glob("*.pcap"))
RECORDS = sorted((HERE / "records").glob("*.json"))


@pytest.mark.parametrize("capture", CAPTURES, ids=[c.stem for c in CAPTURES])
def test_capture_gives_the_recorded_verdict(capture):
    expected = json.loads(capture.with_suffix(".json").read_text())
    analysis = own_flow(capture).analysis
    assert (analysis.verdict, analysis.direction) == (expected["verdict"], expected["direction"])
    assert [a.origin for a in analysis.attributions] == expected["origins"]
    if not expected.get("known_gap"):
        truth = expected["scenario_expects"]
        assert analysis.verdict == truth["verdict"]
        assert analysis.direction == truth.get("direction")


def test_there_is_a_capture_for_every_scenario():
    scenarios = {p.stem for p in (HERE.parent.parent / "netns" / "scenarios").glob("*.toml")}
    assert scenarios == {c.stem for c in CAPTURES}


def _record(item: dict) -> PacketRecord:
    item = dict(item)
    item["options"] = tuple(tuple(o) for o in item.get("options", ()))
    item["payload"] = item.get("payload", "").encode("latin-1")
    return PacketRecord(**item)


@pytest.mark.parametrize("case", RECORDS, ids=[c.stem for c in RECORDS])
def test_hand_made_case(case):
    data = json.loads(case.read_text())
    flow = Flow(**data["flow"])
    analysis = analyze_flow([_record(p) for p in data["packets"]], flow)
    assert analysis.verdict == data["expect"]["verdict"], analysis.explanation
    assert analysis.direction == data["expect"].get("direction")
    if "origins" in data["expect"]:
        assert [a.origin for a in analysis.attributions] == data["expect"]["origins"]
