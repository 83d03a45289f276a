"""`--report` of live probes in the lab, rendered by headless Chromium: a trace toward the tap
and a check of the field report's box (the swallowing box, which forges the reset toward the
server) show the hop table with the box's row marked at the hop the JSON names, and the ladder
draws every packet of the exchange."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from e2ekit import run_probe
from probe.render.report import verdict_line
from tests.report.browser import CHROMIUM, WHY_ABSENT
from tests.report.test_report_browser import _elements

pytestmark = [pytest.mark.root, pytest.mark.skipif(CHROMIUM is None, reason=WHY_ABSENT)]

TRIGGER_HOST = "blocked.example"
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "probe" / "schema" / "probe-1.schema.json").read_text())


@pytest.mark.parametrize("command, name, hop", [("trace", "tap", 2), ("check", "swallow", 3)])
def test_live_report_shows_the_hops_and_the_ladder(lab, box, tmp_path, command, name, hop):
    box(name, hop)
    page = tmp_path / "report.html"
    run = run_probe(lab, [command, f"http://{TRIGGER_HOST}/", "--resolve", f"{TRIGGER_HOST}:80:{lab.server_addr}",
                          "--json", "--report", str(page)])
    assert run.returncode == 3, run.describe()
    document = json.loads(run.stdout)
    assert document["hop"] == hop, run.describe()
    dom = _elements(page)
    assert [e[2] for e in dom.elements if e[1].get("id") == "verdict"] == [document["verdict"]]
    found = [n for n, e in enumerate(dom.elements) if e[0] == "tr" and e[1].get("class") == "found"]
    assert len(found) == 1
    assert dom.elements[found[0] + 1][2] == str(hop)  # the marked row's first cell: its TTL
    hop_tables = [n for n, e in enumerate(dom.elements) if e[0] == "th" and e[2] == "router"]
    assert len(hop_tables) == 1 and document["hops"], "a located box comes with its hop table"
    ttls = [e[2] for n, e in enumerate(dom.elements)  # the first cell of each row after the hop table's header
            if n > hop_tables[0] and e[0] == "td" and dom.elements[n - 1][0] == "tr"]
    assert ttls[:len(document["hops"])] == [str(row["ttl"]) for row in document["hops"]]
    assert len(dom.having("g", "packet")) == len(document["packets"])
    forged = [p for p in document["packets"] if p["origin"] == "middlebox"]
    assert len(dom.having("g", "forged")) == len(forged)


@pytest.mark.parametrize("command", ["check", "trace"])
def test_quiet_prints_the_verdict_line_and_output_writes_the_document(lab, box, tmp_path, command):
    box("tap", 2)
    document_file = tmp_path / "doc.json"
    run = run_probe(lab, [command, f"http://{TRIGGER_HOST}/", "--resolve", f"{TRIGGER_HOST}:80:{lab.server_addr}",
                          "-q", "-o", str(document_file)])
    assert run.returncode == 3, run.describe()
    document = json.loads(document_file.read_text())
    jsonschema.validate(document, SCHEMA)
    assert (document["command"], document["verdict"], document["hop"]) == (command, "middlebox-reset", 2)
    assert run.stdout.splitlines() == [verdict_line(document)]  # the first line of the summary, alone
    assert run.stdout.startswith(f"verdict: middlebox-reset  direction: {document['direction']}  hop: 2  rtt: ")
    assert run.stderr == ""  # no progress under -q
