"""Every document probe prints validates against the schema shipped in the package (issue 18):
the check document of every golden scenario, the analyze document, the error document; and a
broken document does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from probe.render.report import check_document, finish_document
from probe.schema import schema_path
from tests.golden.own_flow import own_flow

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN = ROOT / "tests" / "golden" / "captures"
CAPTURES = sorted(GOLDEN.glob("*.pcap"))
VALIDATOR = Draft202012Validator(json.loads(schema_path().read_text()))


def test_the_schema_is_itself_valid():
    Draft202012Validator.check_schema(json.loads(schema_path().read_text()))


@pytest.mark.parametrize("capture", CAPTURES, ids=[c.stem for c in CAPTURES])
def test_the_check_document_of_every_scenario_validates(capture):
    own = own_flow(capture)
    document = check_document({"url": "http://www.example.com/", "host": "www.example.com",
                               "address": own.flow.server, "port": own.flow.server_port}, own.packets, own.flow,
                              own.analysis)
    VALIDATOR.validate(finish_document(document, 0.0, 0))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True, text=True, cwd=ROOT)


def test_the_analyze_document_validates():
    result = run("analyze", "--json", str(GOLDEN / "05-tap-rst-burst.pcap"), str(GOLDEN / "01-clean.pcap"))
    VALIDATOR.validate(json.loads(result.stdout))


def test_the_error_document_validates_and_is_no_exchange():
    result = run("check", "--json", "--ttl", "0", "198.51.100.80")
    document = json.loads(result.stdout)
    VALIDATOR.validate(document)
    assert not Draft202012Validator(VALIDATOR.schema["$defs"]["exchange"]).is_valid(document)


@pytest.mark.parametrize("broken", [
    lambda d: d.pop("verdict"),
    lambda d: d.update(verdict="blocked"),
    lambda d: d["packets"][0].update(origin="router"),
    lambda d: d["packets"][0].pop("flags"),
    lambda d: d.update(direction="sideways"),
])
def test_a_broken_document_does_not_validate(broken):
    own = own_flow(GOLDEN / "06-field-report.pcap")
    document = check_document({"url": "u", "host": "h", "address": own.flow.server, "port": 80}, own.packets,
                              own.flow, own.analysis)
    broken(document)
    assert not VALIDATOR.is_valid(document)
