"""The fuzz target runs in CI for a fixed, short budget (PROBE_FUZZ_SECONDS, default 20 s),
seeded with the lab's golden captures; a finding fails the test with libFuzzer's report."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from . import fuzz_engine

TARGET = Path(fuzz_engine.__file__)
SECONDS = int(os.environ.get("PROBE_FUZZ_SECONDS", "20"))


def test_the_seed_corpus_stands_for_the_golden_captures(tmp_path):
    from probe.files.pcap import ip_packets

    assert fuzz_engine.seed_corpus(tmp_path) >= 14
    capture = next((Path(__file__).parent.parent / "golden" / "captures").glob("06-*.pcap"))
    original = list(ip_packets(str(capture)))
    decoded = fuzz_engine.packets_of((tmp_path / capture.stem).read_bytes())
    assert [raw for _, raw in decoded] == [raw for _, raw in original]
    assert all(abs((t - decoded[0][0]) - (o - original[0][0])) < 1e-4 for (t, _), (o, _) in zip(decoded, original))
    fuzz_engine.one_input((tmp_path / capture.stem).read_bytes())


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed (pip install "
                    "'.[test]'); the hypothesis run below stands in")
def test_atheris_finds_nothing_in_its_budget(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    fuzz_engine.seed_corpus(corpus)
    result = subprocess.run(
        [sys.executable, str(TARGET), f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=2048",
         "-max_len=20000", f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=SECONDS + 120, cwd=tmp_path)
    report = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, report
    assert "Done" in report and "runs in" in report, report  # it really fuzzed, for the whole budget


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=2000))
def test_the_target_holds_on_random_inputs(data):
    """The same target under hypothesis: runs where atheris is missing, and keeps the target honest."""
    fuzz_engine.one_input(data)
