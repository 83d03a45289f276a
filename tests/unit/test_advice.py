"""Explanations in short sentences and what to do next (issue 18): from the recorded captures,
through the engine and the documents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from probe.render.advice import next_step

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "tests" / "golden" / "captures"


def flow_of(name: str) -> dict:
    run = subprocess.run([sys.executable, "-m", "probe", "analyze", str(CAPTURES / f"{name}.pcap"), "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    return json.loads(run.stdout)["flows"][0]


def test_the_field_report_quotes_the_sequence_number_the_table_shows():
    flow = flow_of("06-field-report")
    reset = flow["packets"][-1]
    synack = next(p for p in flow["packets"] if p["flags"] == "SA")
    relative = (reset["seq"] - synack["seq"]) % (1 << 32)
    assert relative == 1  # the table's seq of the reset
    assert f"(seq {relative} = our ACK," in flow["explanation"]
    assert str(reset["seq"]) not in flow["explanation"]  # no absolute number the table does not show
    sentences = [s for s in flow["explanation"].split(". ") if s]
    assert sentences[0] == "A device in between reset the connection toward the server, in our name"
    assert len(sentences) >= 3 and max(map(len, sentences)) < 200


def test_a_forged_page_is_quoted_by_its_first_line():
    flow = flow_of("07-block-page")
    assert flow["explanation"].startswith("A device in between answered in the server's place")
    assert 'It begins "HTTP/1.1 403 Forbidden".' in flow["explanation"]


def test_forged_resets_are_counted_then_proved_without_nested_brackets():
    flow = flow_of("05-tap-rst-burst")
    forged = [p for p in flow["packets"] if p["origin"] == "middlebox" and "R" in p["flags"]]
    assert flow["explanation"].startswith(f"A device in between forged {len(forged)} reset(s) toward us. The first one: ")


@pytest.mark.parametrize("verdict, hop, words", [
    ("middlebox-reset", 1, "your own network (its firewall or proxy)"),
    ("middlebox-reset", 3, "hop 3 (192.0.2.3): ask the network that runs it"),
    ("middlebox-response", None, "run probe trace"),
    ("dropped", 4, "swallowed at hop 4"),
    ("server-reset", None, "ask the site's host"),
    ("no-answer", None, "check the address and port"),
    ("unreachable", 2, "the error comes from hop 2"),
])
def test_the_next_step_names_who_to_call(verdict, hop, words):
    step = next_step(verdict, None, hop, "192.0.2.3" if hop == 3 else None)
    assert step.startswith("Next: ") and words in step


def test_nothing_to_do_when_clean():
    assert next_step("clean") is None and next_step("expired") is None
    assert flow_of("01-clean")["next_step"] is None
    assert flow_of("02-closed-port")["next_step"].startswith("Next: ask the site's host")
