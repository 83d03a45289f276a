"""`layout.simple_table` lays out what tabulate's "simple" format does, character for character:
on the packet table of every flow of every golden and real capture, on property-generated
exchanges, on flows tables, and on drawn rows of ints and text."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st
from tabulate import tabulate

from probe.render import table as layout

from probe.render import report
from probe.files.flows import analyze_stream
from probe.render.flows import FLOWS_HEADERS, flows_table, flow_row
from probe.engine import analyze_flow
from tests.properties.exchanges import FLOW, forged_exchanges, property_settings
from tests.unit.test_ordinary import GOLDEN, REALWORLD, ROOT


def with_tabulate(monkeypatch, function, *args):
    """`function(*args)` laid out by tabulate itself."""
    with monkeypatch.context() as patch:
        patch.setattr(layout, "simple_table",
                      lambda rows, headers: tabulate(rows, headers=headers, tablefmt="simple"))
        return function(*args)


@pytest.mark.parametrize("path", GOLDEN + REALWORLD, ids=[p.name for p in GOLDEN + REALWORLD])
def test_every_packet_table_and_the_flows_table_of_a_capture(path, monkeypatch):
    results = []
    analyze_stream(str(path), None, results.append)
    for result in results:
        table = report.packet_table(result.packets, result.flow, result.analysis)
        assert table == with_tabulate(monkeypatch, report.packet_table, result.packets, result.flow, result.analysis)
    rows = [flow_row(result) for result in results]
    assert flows_table(rows) == with_tabulate(monkeypatch, flows_table, rows)


@given(forged_exchanges())
@property_settings(100)
def test_packet_tables_of_generated_exchanges(exchange):
    analysis = analyze_flow(list(exchange.packets), FLOW)
    fast = report.packet_table(list(exchange.packets), FLOW, analysis)
    original = layout.simple_table
    layout.simple_table = lambda rows, headers: tabulate(rows, headers=headers, tablefmt="simple")
    try:
        assert fast == report.packet_table(list(exchange.packets), FLOW, analysis)
    finally:
        layout.simple_table = original


cells = st.one_of(st.integers(-10**6, 10**12), st.sampled_from(["", "-", "0.00", "12.50", "1e5", "nan", "True",
                                                                  "1,000", " pad ", "a\nbc", "x\n\ny"]),
                  st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12))


@given(st.integers(1, 5).flatmap(lambda width: st.lists(st.lists(cells, min_size=width, max_size=width),
                                                        min_size=1, max_size=6)))
@property_settings(500)
def test_drawn_rows(rows):
    headers = [f"h{n}" for n in range(len(rows[0]))]
    assert layout.simple_table(rows, headers) == tabulate(rows, headers=headers, tablefmt="simple")


@pytest.mark.parametrize("rows", [[], [["10.0.0.1:40000", "198.51.100.7:80", 8, "clean", "-", "client"]],
                                  [["2001:db8::10:40000", "2001:db8::1:443", 12345, "middlebox-reset", "to-client",
                                    "server"], ["10.0.0.1:1", "10.0.0.2:2", 3, "no-answer", "-", "client"]]])
def test_flows_tables(rows):
    assert flows_table(rows) == tabulate(rows, headers=FLOWS_HEADERS, tablefmt="simple")


def test_packet_tables_are_laid_out_without_tabulate(monkeypatch):
    """Else the tests above would compare tabulate with itself."""
    import tabulate as tab

    results = []
    analyze_stream(str(ROOT / "tests" / "golden" / "captures" / "05-tap-rst-burst.pcap"), None, results.append)
    monkeypatch.setattr(tab, "tabulate", None)  # calling it would fail
    assert all(report.packet_table(r.packets, r.flow, r.analysis) for r in results)


@given(st.text(st.characters(min_codepoint=1, max_codepoint=300), max_size=90), st.integers(5, 80))
@property_settings(2000)
def test_a_short_sentence_is_wrapped_as_textwrap_does(text, width):
    import textwrap

    assert report._wrap(text, width) == ("\n".join(textwrap.wrap(text, width)) or text)
