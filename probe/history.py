"""Every batch result kept in SQLite (`--history FILE`), and what changed since the last run.

A target is named by its line: the canonical URL, and the address when the line pins one
(`HOST:PORT:ADDR`), so a name whose DNS answer moves is still one target. A target's state
is its verdict, or `error` when it could not be measured; a run *changes* a target when its
state differs from the one its previous run recorded. A target seen for the first time is
`new`: news only when it is not clean (a cron job that mails its output must not mail a
thousand lines the first night).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from probe.errors import ProbeError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL, exit_code INTEGER);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), target TEXT NOT NULL,
    at REAL NOT NULL, url TEXT, address TEXT, port INTEGER, state TEXT NOT NULL, direction TEXT,
    hop INTEGER, rtt_ms REAL, exit_code INTEGER NOT NULL, explanation TEXT);
CREATE INDEX IF NOT EXISTS results_by_target ON results(target, id);
"""
COMMIT_EVERY = 200  # results: a killed run keeps what it measured


@dataclass(frozen=True)
class Change:
    """How one result compares with the target's previous one."""

    kind: str | None  # "new", "changed", or None (same as before)
    previous: str | None = None
    previous_at: float | None = None

    def speaks(self, state: str) -> bool:
        """Whether --alert-on-change reports it."""
        return self.kind == "changed" or (self.kind == "new" and state != "clean")

    def as_json(self) -> dict:
        return {"change": self.kind, "previous_verdict": self.previous, "previous_at": self.previous_at}


def state_of(document: dict) -> str:
    return document.get("verdict") or "error"


def _connect(path: str) -> sqlite3.Connection:
    try:
        connection = sqlite3.connect(path, timeout=30)
        connection.executescript(SCHEMA)
    except sqlite3.Error as error:
        raise ProbeError(f"cannot use the history file {path}: {error}") from None
    return connection


class History:
    """One batch run's view of the history file: compare, then record, each result."""

    def __init__(self, path: str, clock=time.time):
        self.path, self.clock = path, clock
        self.db = _connect(path)
        self.run_id = self.db.execute("INSERT INTO runs (started_at) VALUES (?)", (clock(),)).lastrowid
        self.db.commit()
        self.pending = 0

    def record(self, key: str, document: dict, exit_code: int) -> Change:
        """Store one result; return how it compares with the target's previous run."""
        state = state_of(document)
        row = self.db.execute("SELECT state, at FROM results WHERE target = ? ORDER BY id DESC LIMIT 1",
                              (key,)).fetchone()
        change = Change("new") if row is None else Change(None if row[0] == state else "changed", *row)
        target = document.get("target", {})
        self.db.execute("INSERT INTO results (run_id, target, at, url, address, port, state, direction, hop, rtt_ms,"
                        " exit_code, explanation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (self.run_id, key, self.clock(), target.get("url"), target.get("address"), target.get("port"),
                         state, document.get("direction"), document.get("hop"), document.get("rtt_ms"), exit_code,
                         document.get("explanation")))
        self.pending += 1
        if self.pending >= COMMIT_EVERY:
            self.db.commit()
            self.pending = 0
        return change

    def close(self, exit_code: int | None = None) -> None:
        self.db.execute("UPDATE runs SET finished_at = ?, exit_code = ? WHERE id = ?",
                        (self.clock(), exit_code, self.run_id))
        self.db.commit()
        self.db.close()


@dataclass(frozen=True)
class Entry:
    at: float
    state: str
    direction: str | None
    hop: int | None
    rtt_ms: float | None
    exit_code: int
    address: str | None
    explanation: str | None
    changed_from: str | None  # the previous state, when this entry is a change


def targets(path: str) -> list[dict]:
    """Every target in the file: runs, the last state and when it began."""
    db = _open_existing(path)
    try:
        names = [row[0] for row in db.execute("SELECT DISTINCT target FROM results ORDER BY target")]
        out = []
        for name in names:
            entries = _entries(db, name)
            since = entries[-1]
            for entry in reversed(entries):
                if entry.state != entries[-1].state:
                    break
                since = entry
            out.append({"target": name, "runs": len(entries), "state": entries[-1].state,
                        "since": since.at, "last": entries[-1].at,
                        "changes": sum(1 for e in entries if e.changed_from is not None)})
        return out
    finally:
        db.close()


def timeline(path: str, target: str) -> tuple[str, list[Entry]]:
    """One target's results, oldest first. `target` is its name or a unique part of it."""
    db = _open_existing(path)
    try:
        names = [row[0] for row in db.execute("SELECT DISTINCT target FROM results")]
        matches = [name for name in names if name == target] or [name for name in names if target in name]
        if not matches:
            raise ProbeError(f"no target matching {target!r} in {path}")
        if len(matches) > 1:
            raise ProbeError(f"{target!r} matches {len(matches)} targets ({', '.join(sorted(matches)[:5])}"
                             f"{', ...' if len(matches) > 5 else ''}): give more of its name")
        return matches[0], _entries(db, matches[0])
    finally:
        db.close()


def _open_existing(path: str) -> sqlite3.Connection:
    import os

    if not os.path.exists(path):
        raise ProbeError(f"no history file {path}: make one with probe batch --history {path}")
    return _connect(path)


def _entries(db: sqlite3.Connection, name: str) -> list[Entry]:
    rows = db.execute("SELECT at, state, direction, hop, rtt_ms, exit_code, address, explanation FROM results "
                      "WHERE target = ? ORDER BY id", (name,)).fetchall()
    entries, previous = [], None
    for row in rows:
        entries.append(Entry(*row, changed_from=previous if previous is not None and previous != row[1] else None))
        previous = row[1]
    return entries
