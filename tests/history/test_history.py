"""The history on both backends (a SQLite file, a PostgreSQL database of a cluster the tests
start): the same results come back from each; changes are per vantage; the view of targets
whose vantage points disagree; the upgrade of a SQLite file made before vantage points
(tests/history/data/make_v1.py says how it was made)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest

from probe.jobs.store import SCHEMA_VERSION, History, HistoryError, differing, redact, targets, timeline

DATA = os.path.join(os.path.dirname(__file__), "data")


def document(verdict, url="http://a.example/", address="198.51.100.80") -> dict:
    return {"target": {"url": url, "address": address, "port": 80, "family": "ipv6" if ":" in address else "ipv4"},
            "verdict": verdict,
            "direction": "to-client" if verdict == "middlebox-reset" else None,
            "hop": 2 if verdict == "middlebox-reset" else None, "rtt_ms": 50.25, "explanation": f"said {verdict}"}


def run(location, vantage, states: dict, clock) -> dict:
    """One batch from `vantage`: {target: verdict}; returns {target: change kind}."""
    history = History(location, vantage, clock=clock)
    kinds = {name: history.record(name, document(verdict, url=name), 0).kind for name, verdict in states.items()}
    assert history.close(0) == len(states)
    return kinds


def ticking():
    return iter(range(1_800_000_000, 1_800_100_000, 3)).__next__


# Two vantage points taking turns: the office sees b blocked from the second run on, the data
# centre never does; c recovers from the office's side only.
TURNS = [
    ("office", {"a": "clean", "b": "clean", "c": "no-answer"}),
    ("dc", {"a": "clean", "b": "clean", "c": "no-answer"}),
    ("office", {"a": "clean", "b": "middlebox-reset", "c": "clean"}),
    ("dc", {"a": "clean", "b": "clean", "c": "no-answer"}),
    ("office", {"a": "clean", "b": "middlebox-reset", "c": "clean"}),
]


def fill(location) -> list[dict]:
    clock = ticking()
    return [run(location, vantage, states, clock) for vantage, states in TURNS]


def test_changes_are_per_vantage(location):
    kinds = fill(location)
    assert kinds[0] == kinds[1] == {"a": "new", "b": "new", "c": "new"}  # each vantage's first sight
    assert kinds[2] == {"a": None, "b": "changed", "c": "changed"}
    # the data centre's clean b is compared with its own clean b, not with the office's reset
    assert kinds[3] == {"a": None, "b": None, "c": None}
    assert kinds[4] == {"a": None, "b": None, "c": None}


def test_timeline_and_targets_per_vantage(location):
    fill(location)
    name, entries = timeline(location, "b")
    assert name == "b" and [(e.vantage, e.state) for e in entries] == [
        ("office", "clean"), ("dc", "clean"), ("office", "middlebox-reset"), ("dc", "clean"),
        ("office", "middlebox-reset")]
    assert [e.changed_from for e in entries] == [None, None, "clean", None, None]
    _, dc_only = timeline(location, "b", ["dc"])
    assert {e.vantage for e in dc_only} == {"dc"} and len(dc_only) == 2
    rows = {(r["target"], r["vantage"]): r for r in targets(location)}
    assert rows[("b", "office")]["state"] == "middlebox-reset" and rows[("b", "office")]["changes"] == 1
    assert rows[("b", "dc")] == {"target": "b", "vantage": "dc", "runs": 2, "state": "clean", "family": "ipv4",
                                 "since": rows[("b", "dc")]["since"], "last": rows[("b", "dc")]["last"],
                                 "changes": 0}
    assert rows[("b", "dc")]["since"] < rows[("b", "dc")]["last"]
    assert {r["vantage"] for r in targets(location, ["office"])} == {"office"}


def test_the_vantage_points_that_disagree_now(location):
    fill(location)
    split = differing(location)
    assert [row["target"] for row in split] == ["b", "c"]
    assert [(v["vantage"], v["state"]) for v in split[0]["vantages"]] == [("dc", "clean"),
                                                                          ("office", "middlebox-reset")]
    assert differing(location, ["office"]) == []  # one vantage agrees with itself
    later = iter(range(1_800_200_000, 1_800_300_000)).__next__
    run(location, "dc", {"b": "middlebox-reset", "c": "clean"}, later)  # now blocked from both
    assert differing(location) == []


def test_the_same_results_come_back_from_each_backend(tmp_path, pg_url):
    said = []
    for location in (str(tmp_path / "h.sqlite"), pg_url):
        fill(location)
        said.append((targets(location), differing(location), timeline(location, "c")))
    assert said[0] == said[1]
    assert isinstance(said[1][2][1][0].rtt_ms, float) and said[1][2][1][0].rtt_ms == 50.25
    # times keep their microseconds (PostgreSQL's REAL would round them to minutes: DOUBLE PRECISION)
    run(pg_url, "dc", {"d": "clean"}, iter([1_900_000_000.0, 1_900_000_000.123456, 1_900_000_001.0]).__next__)
    assert timeline(pg_url, "d")[1][0].at == 1_900_000_000.123456


def test_a_run_is_written_whole_in_one_transaction(location):
    history = History(location, "office", clock=ticking())
    for n in range(500):
        history.record(f"t{n}", document("clean", url=f"t{n}"), 0)
    history.close(0)
    assert len(targets(location)) == 500
    # a run that is never closed (the process died) leaves nothing half written
    unfinished = History(location, "office", clock=ticking())
    unfinished.record("t0", document("middlebox-reset"), 3)
    assert timeline(location, "t0")[1][-1].state == "clean" and len(timeline(location, "t0")[1]) == 1


def test_reading_a_history_that_does_not_exist(tmp_path, pg_url):
    with pytest.raises(HistoryError, match="no history file"):
        targets(str(tmp_path / "missing.sqlite"))
    with pytest.raises(HistoryError, match="no history in .* yet: make one with probe batch --history"):
        targets(pg_url)


def test_a_newer_schema_is_refused(location):
    fill(location)
    _set_version(location, SCHEMA_VERSION + 1)
    with pytest.raises(HistoryError, match=f"schema version {SCHEMA_VERSION + 1}; this probe knows up to "
                                           f"{SCHEMA_VERSION}: upgrade probe"):
        History(location, "office")


def _set_version(location, version):
    if location.endswith(".sqlite"):
        with sqlite3.connect(location) as db:
            db.execute("UPDATE schema_version SET version = ?", (version,))
    else:
        import psycopg

        with psycopg.connect(location, autocommit=True) as db:
            db.execute("UPDATE schema_version SET version = %s", (version,))


# -- the upgrade of a file made before vantage points -------------------------------------------

def test_a_version_1_file_is_upgraded_in_place_and_keeps_every_row(tmp_path):
    path = str(tmp_path / "old.sqlite")
    shutil.copy(os.path.join(DATA, "v1-history.sqlite"), path)
    with open(os.path.join(DATA, "v1-history.json")) as handle:
        old_said = json.load(handle)
    with sqlite3.connect(path) as db:
        before = db.execute("SELECT * FROM results ORDER BY id").fetchall()
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'schema_version'").fetchone() is None
    # the first batch after the upgrade, from this host: compared with the old runs
    history = History(path, "branch-7", clock=iter(range(1_900_000_000, 1_900_000_100)).__next__)
    assert history.record("http://b.example/", document("clean"), 0).kind is None
    assert history.record("http://c.example/", document("clean"), 0).kind == "changed"
    history.close(0)
    with sqlite3.connect(path) as db:
        after = db.execute("SELECT * FROM results ORDER BY id").fetchall()
        width = len(before[0])  # migration 3 added the family column: every old row keeps the rest
        assert [row[:width] for row in after[:len(before)]] == before and len(after) == len(before) + 2
        assert {row[width] for row in after} == {"ipv4"}
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert {row[0] for row in db.execute("SELECT vantage FROM runs")} == {"branch-7"}
    # what the old release said about every target and every entry, said again
    new_rows = {row["target"]: row for row in targets(path)}
    for old_row in old_said["targets"]:
        name = old_row["target"]
        _, entries = timeline(path, name)
        old_entries = old_said["timelines"][name[7]]
        assert len(entries) == len(old_entries) + (name != "http://a.example/")
        for new, old in zip(entries, old_entries):
            assert {k: v for k, v in vars(new).items() if k not in ("vantage", "family")} == old
            assert new.family == "ipv4"  # migration 3 reads it from the address (198.51.100.80)
    assert new_rows["http://a.example/"] == dict(old_said["targets"][0], vantage="branch-7", family="ipv4")


def test_the_upgrade_of_an_old_file_by_probe_history_names_this_host(tmp_path):
    import socket

    path = str(tmp_path / "old.sqlite")
    shutil.copy(os.path.join(DATA, "v1-history.sqlite"), path)
    assert {r["vantage"] for r in targets(path)} == {socket.gethostname()}
    assert len(timeline(path, "b.example")[1]) == 5


# -- what is printed ---------------------------------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    ("postgresql://probe:pw@db.example.net:5432/probe", "postgresql://probe:***@db.example.net:5432/probe"),
    ("postgres://probe@db.example.net/probe", "postgres://probe@db.example.net/probe"),
    ("postgresql:///probe?host=/run/pg&password=pw&sslmode=require",
     "postgresql:///probe?host=/run/pg&password=***&sslmode=require"),
    ("postgresql://probe:p/a@ss@db.example.net/probe", "postgresql://probe:***@db.example.net/probe"),
    ("/var/lib/probe/history.sqlite", "/var/lib/probe/history.sqlite"),
])
def test_urls_are_printed_without_their_password(url, shown):
    assert redact(url) == shown


# -- the address family (issue 15) ---------------------------------------------------------------

def test_each_result_keeps_its_family_and_a_change_says_the_previous_one(location):
    """A name probed over IPv4, then over IPv6 (its AAAA came, or -6): the timeline and the
    targets say which family each result came over, and the change names the one before."""
    clock = ticking()
    history = History(location, "office", clock=clock)
    assert history.record("http://a.example/", document("clean"), 0).kind == "new"
    history.close(0)
    history = History(location, "office", clock=clock)
    change = history.record("http://a.example/", document("middlebox-reset", address="2001:db8::80"), 3)
    history.record("http://u.example/", {"target": {"url": "http://u.example/"}, "verdict": None,
                                         "explanation": "not measured"}, 1)
    history.close(3)
    _, entries = timeline(location, "a.example")
    assert change.as_json() == {"change": "changed", "previous_verdict": "clean", "previous_at": entries[0].at,
                                "previous_family": "ipv4"}
    assert [(e.state, e.family, e.address) for e in entries] == [("clean", "ipv4", "198.51.100.80"),
                                                                  ("middlebox-reset", "ipv6", "2001:db8::80")]
    rows = {row["target"]: row for row in targets(location)}
    assert rows["http://a.example/"]["family"] == "ipv6" and rows["http://u.example/"]["family"] is None
    assert History(location, "office").previous["http://a.example/"][2] == "ipv6"


def test_a_version_2_history_gets_each_rows_family_from_its_address(location, monkeypatch):
    """Migration 3 on a database of the previous release (migrations 1 and 2, rows written as that
    release wrote them): rows keep everything, and each gets the family of its address."""
    import probe.jobs.store as history_module

    monkeypatch.setattr(history_module, "MIGRATIONS", history_module.MIGRATIONS[:2])
    monkeypatch.setattr(history_module, "SCHEMA_VERSION", 2)
    with history_module._Guarded(location, "office", "make a version 2 history") as db:
        assert db.version() == 2
        run_id = db.execute("INSERT INTO runs (started_at, finished_at, exit_code, vantage) VALUES (1, 2, 0, 'office')"
                            " RETURNING id").fetchone()[0]
        for at, (target, address) in enumerate([("http://a.example/", "198.51.100.80"),
                                                ("http://b.example/", "2001:db8::80"), ("http://c.example/", None)]):
            db.execute("INSERT INTO results (run_id, target, at, url, address, port, state, exit_code) VALUES "
                       "(?, ?, ?, ?, ?, 80, ?, 0)", (run_id, target, at, target, address, "clean" if address else "error"))
            db.execute("INSERT INTO latest (target, vantage, state, at, run_id) VALUES (?, 'office', ?, ?, ?)",
                       (target, "clean" if address else "error", at, run_id))
    monkeypatch.undo()
    families = {row["target"]: row["family"] for row in targets(location)}  # reading upgrades it
    assert families == {"http://a.example/": "ipv4", "http://b.example/": "ipv6", "http://c.example/": None}
    assert History(location, "office").previous["http://b.example/"][2] == "ipv6"
    assert [e.state for e in timeline(location, "a.example")[1]] == ["clean"]
