"""The flows table of `probe analyze` laid out as its rows come (`analyze_report.FlowsTable`, through
the command's sorted spool on disk) against `flows_table` over all the rows sorted by start time."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from probe.render.flows import FlowsTable, flows_table
from probe.commands.analyze import _Spool, _write_joined
from tests.properties.exchanges import property_settings

ADDRESSES = st.sampled_from(["10.1.2.3", "198.51.100.80", "2001:db8::1", "fe80::1", "192.0.2.255"])
VERDICTS = st.sampled_from(["clean", "middlebox-reset", "server-reset", "dropped", "no-answer", "unreachable"])
CELL_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def rows(cell=None):
    endpoint = st.builds(lambda address, port: f"{address}:{port}", ADDRESSES, st.integers(1, 65535))
    return st.lists(st.tuples(st.sampled_from([0.0, 1.5, 2.0, 7.25, 1e9]),  # starts that tie often
                              st.builds(list, st.tuples(endpoint, endpoint if cell is None else cell,
                                                        st.integers(0, 10**7), VERDICTS,
                                                        st.sampled_from(["-", "-", "to-client", "to-server", "both"]),
                                                        st.sampled_from(["client", "client", "server"])))),
                    min_size=1, max_size=60)


@pytest.fixture(autouse=True)
def small_runs(monkeypatch):
    monkeypatch.setattr(_Spool, "RUN", 7)  # several sorted runs on disk, merged


def check(items) -> None:
    for summarised in (False, True):
        check_table(items, summarised)


def check_table(items, summarised: bool) -> None:
    """With `summarised`, the rows of clean flows captured at the client come through `add_clean`
    (`analyze.Summary`'s way), the others through `add`: the same table either way."""
    table = FlowsTable(_Spool())
    for start, row in items:
        if summarised and row[3:] == ["clean", "-", "client"]:
            table.add_clean(start, row[0], row[1], row[2])
        else:
            table.add(start, row)
    expected = flows_table([row for _start, row in sorted(items, key=lambda item: item[0])])
    assert "\n".join(table.lines()) == expected


@given(rows())
@property_settings(200)
def test_the_same_table_as_flows_table(items):
    check(items)


@given(rows(CELL_TEXT))
@property_settings(200)
def test_any_text_in_a_cell_the_same_table(items):
    """Non-ASCII, tabs, new lines, the spool's separator, numbers as text: the fallback's cases."""
    check(items)


def test_the_spool_gives_texts_in_start_order_ties_as_they_came(monkeypatch):
    monkeypatch.setattr(_Spool, "RUN", 3)
    spool = _Spool()
    starts = [5.0, 1.0, 5.0, 0.5, 1.0, 9.0, 0.5, 5.0, 2.0, 1.0]
    for n, start in enumerate(starts):
        spool.add(start, f"{n}")
    assert list(spool.texts()) == [str(n) for n, _start in sorted(enumerate(starts), key=lambda item: item[1])]
    assert len(spool) == len(starts) and len(spool.runs) == 3


@pytest.mark.parametrize("where", ["file", "appended file", "pipe", "text stream"])
def test_long_texts_are_copied_whole_wherever_the_document_goes(tmp_path, monkeypatch, where):
    """A long text is copied by the kernel (`os.sendfile`) from the file it is in; where that is
    refused (a file opened for appending) it is read and written, and a stream with no file (a
    test's capture) takes it as text. Every way, the same bytes in start order, the joins between."""
    import io
    import os
    import threading

    monkeypatch.setattr(_Spool, "WINDOW", 64)  # texts of 16 bytes and more are long
    monkeypatch.setattr(_Spool, "BEHIND", 16)
    monkeypatch.setattr(_Spool, "RUN", 4)
    spool = _Spool()
    texts = [f"{n}:" + "\u00e9x" * (n * 5) for n in range(12)]  # short and long, non-ASCII
    for n in (7, 3, 11, 0, 5, 1, 9, 2, 10, 4, 8, 6):
        spool.add(float(n), texts[n])
    expected = ",\n".join(texts)
    path = tmp_path / "document"
    sent, sendfile = [], os.sendfile
    monkeypatch.setattr(os, "sendfile", lambda *args: sent.append(sendfile(*args)) or sent[-1])
    if where == "text stream":
        document = io.StringIO()
        _write_joined(spool, document)
        assert document.getvalue() == expected
        return
    if where == "pipe":
        read_end, write_end = os.pipe()
        got = []
        reader = threading.Thread(target=lambda: got.append(os.fdopen(read_end, "rb").read()))
        reader.start()
        with os.fdopen(write_end, "w", encoding="utf-8") as document:
            _write_joined(spool, document)
        reader.join(timeout=30)
        assert got == [expected.encode()]
        assert sum(sent) > 0
        return
    path.write_bytes(b"head;")
    with open(path, "a" if where == "appended file" else "r+", encoding="utf-8") as document:
        document.seek(0, 2)
        _write_joined(spool, document)
    assert path.read_bytes() == b"head;" + expected.encode()
    assert (sum(sent) > 0) == (where == "file")  # appending: refused, read and written instead
