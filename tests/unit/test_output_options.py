"""`-o FILE` and `-q` on analyze (issue 18), through the real command line; check and trace take
the same options (tests/e2e/test_report_e2e.py runs them in the lab)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "tests" / "golden" / "captures"
PAIR = ROOT / "tests" / "golden" / "two-ended" / "06-field-report"
SCHEMA = json.loads((ROOT / "probe" / "schema" / "probe-1.schema.json").read_text())


def probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "probe", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_output_takes_the_json_document_and_stdout_keeps_the_text(tmp_path):
    capture = str(CAPTURES / "05-tap-rst-burst.pcap")
    alone = probe("analyze", capture, "--json")
    to_file = probe("analyze", capture, "--json", "-o", str(tmp_path / "doc.json"))
    assert (alone.returncode, to_file.returncode) == (3, 3)
    assert to_file.stdout == ""  # as curl -o: the document goes to the file instead
    assert (tmp_path / "doc.json").read_text() == alone.stdout
    with_text = probe("analyze", capture, "-o", str(tmp_path / "doc2.json"))
    assert (tmp_path / "doc2.json").read_text() == alone.stdout
    assert with_text.stdout == probe("analyze", capture).stdout  # the text as without -o
    jsonschema.validate(json.loads(alone.stdout), SCHEMA)


def test_output_of_two_ended_analysis(tmp_path):
    alone = probe("analyze", f"{PAIR}.pcap", f"{PAIR}.server.pcap", "--json")
    run = probe("analyze", f"{PAIR}.pcap", f"{PAIR}.server.pcap", "--output", str(tmp_path / "pair.json"))
    assert run.returncode == alone.returncode == 3
    assert (tmp_path / "pair.json").read_text() == alone.stdout
    assert "NEVER ARRIVED" in run.stdout


def test_quiet_prints_one_verdict_line_per_flow_that_is_not_clean():
    tap = probe("analyze", str(CAPTURES / "05-tap-rst-burst.pcap"), "-q")
    assert tap.returncode == 3 and tap.stderr == ""
    assert tap.stdout.splitlines() == ["192.0.2.10:50049 -> 203.0.113.80:80  verdict: middlebox-reset  direction: both"]
    clean = probe("analyze", str(CAPTURES / "01-clean.pcap"), "--quiet")
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, "", "")
    pair = probe("analyze", f"{PAIR}.pcap", f"{PAIR}.server.pcap", "-q", "--flow", "192.0.2.10:58853")
    assert pair.returncode == 3 and pair.stderr == ""
    assert pair.stdout.splitlines() == [
        "192.0.2.10:58853 -> 203.0.113.80:80  verdict: middlebox-reset  direction: to-server"]


def test_an_output_that_cannot_be_written_is_one_line_and_exit_1(tmp_path):
    for option in ("-o", "--report"):
        run = probe("analyze", str(CAPTURES / "01-clean.pcap"), option, str(tmp_path / "no" / "such" / "file"))
        assert run.returncode == 1 and run.stdout == ""
        assert run.stderr.startswith("probe: cannot write ") and len(run.stderr.splitlines()) == 1
