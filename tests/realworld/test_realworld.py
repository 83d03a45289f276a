"""The engine on real captures of real injectors (../shared/realworld), against each source's own
ground truth: every documented interference found with its forged packets marked `middlebox`,
nothing genuine blamed, nothing crashing, and the CenTrace traces naming their box's hop and the
router their source names."""

from __future__ import annotations

import pytest

from .corpus import REALWORLD, judge_file, meets, truth

pytestmark = pytest.mark.skipif(not (REALWORLD / "truth.json").exists(), reason="../shared/realworld is not here")

FILES = sorted(truth()) if (REALWORLD / "truth.json").exists() else []


@pytest.mark.parametrize("name", FILES)
def test_each_file_as_its_source_says(name):
    expect = truth()[name]
    ok, summary = meets(expect, judge_file(name))
    if ok is None:
        return  # unscored: read without error is all that is asked
    assert ok, f"{expect['expect']}: {expect.get('note', '')} -- probe said {summary}"


@pytest.mark.parametrize("name, hop, address", [
    # CenTrace's test_parse_rst_injected / _with_rst_control / _fin_injected: the middlebox address
    ("centrace/188.65.24.82_www.nifty.org_www.nifty.org.pcap", 17, "134.0.217.233"),
    ("centrace/200.115.176.142_binance.com_binance.com.pcap", 13, "190.242.91.114"),
    ("centrace/103.93.208.20_bisexual.org_bisexual.org.pcap", 17, "149.14.125.90"),
])
def test_the_centrace_traces_name_the_router_their_source_names(name, hop, address):
    [trace] = judge_file(name).traces
    assert trace.result.interference and trace.result.hop == hop
    assert trace.address == address


def test_the_chinese_box_is_on_path_as_centrace_says():
    """test_identify_onpath: the reset and the time exceeded come back for one TTL."""
    [trace] = judge_file("centrace/222.138.4.221_archive.org_archive.org.pcap").traces
    assert trace.result.kind == "on-path"


def test_a_trace_without_its_control_still_names_the_hop():
    [trace] = judge_file("centrace/188.65.24.82_www.nifty.org_www.nifty.org.pcap", with_control=False).traces
    assert trace.result.hop == 17 and trace.result.bracket == (17, 18)


def test_the_requests_that_could_not_reach_the_server_are_not_called_dropped():
    """A request that expired at a router (the ICMP quoting it is in the file) is a trace's probe,
    not a swallowed request: no flow of a CenTrace control run is called `dropped` for it."""
    judged = judge_file("centrace/188.65.24.82_www.nifty.org_example.com.pcap")
    expired = [f for f in judged.flows if any(p.proto == "icmp" for p in f.packets)]
    assert expired and all(f.analysis.verdict != "dropped" for f in expired)
