"""`analyze_report.flow_json_text`, the text of one flow of `probe analyze --json`: the same JSON
values as `json.dumps(..., indent=2)` writes, for every flow of every golden capture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probe.files.flows import analyze_file
from probe.render.flows import analyzed_flow_json, flow_json_text

GOLDEN = sorted((Path(__file__).resolve().parents[1] / "golden" / "captures").glob("*.pcap"))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda path: path.name)
def test_the_same_values_as_the_indented_encoder(path):
    results, _totals = analyze_file(str(path))
    assert results
    for result in results:
        item = analyzed_flow_json(result)
        text = flow_json_text(item)
        assert json.loads(text) == json.loads(json.dumps(item, indent=2)) == item
        lines = text.split("\n")
        assert lines[0] == "{" and lines[-1] == "}" and all(line.startswith("  ") for line in lines[1:-1])
        assert sum(line.startswith('    {"n": ') for line in lines) == len(item["packets"])


def test_no_packets_and_no_fields():
    assert json.loads(flow_json_text({"packets": [], "verdict": "clean"})) == {"packets": [], "verdict": "clean"}
    assert flow_json_text({}) == "{}"
