"""Every batch result kept in a history (`--history FILE|URL`): a SQLite file, or a PostgreSQL
database that many vantage points share; and what changed since the last run.

A target is named by its line: the canonical URL, and the address when the line pins one
(`HOST:PORT:ADDR`), so a name whose DNS answer moves is still one target. A target's state
is its verdict, or `error` when it could not be measured. Every run is made from one
*vantage* (`--vantage NAME`, by default the host's name), stored with the run; a run
*changes* a target when its state differs from the one the previous run **from the same
vantage** recorded (a target blocked from one office and clean from another is not a change
each time the two take turns). A target seen for the first time from a vantage is `new`: news
only when it is not clean (a cron job that mails its output must not mail a thousand lines
the first night).

How a batch uses the database, so that a shared one stays easy to share:
- before the probes, one short connection: the schema is brought up to date, and the latest
  state of every target from this vantage is read in one query (table `latest`);
- after the probes, one more: the run, its results and the new latest states are written in
  one transaction. No connection or lock is held while the probes run, a run is all in the
  history or not at all, and vantage points that write at once only wait for each other's
  commit. A database that is down, refuses the login or drops the connection is a
  `HistoryError`: the batch goes on without it and says so.

Both backends have the same tables, made by the same numbered migrations; the version is in
the table `schema_version`. A SQLite file from before versions (the tables of migration 1, no
`schema_version`) is version 1 and is upgraded in place; its runs get the vantage of the run
that upgrades it (by default this host's name: a SQLite file is written by the host it is on).
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass

from probe.errors import ProbeError, UsageError

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
CONNECT_TIMEOUT = 10  # seconds, unless the URL or PGCONNECT_TIMEOUT says otherwise
SQLITE_BUSY_TIMEOUT = 30  # seconds a writer waits for another's commit
MIGRATION_LOCK = 0x70726F6265  # "probe": the advisory lock that serialises migrations in PostgreSQL

# Each migration is a list of statements. `{serial}`, `{real}` and `{bigint}` are the column
# types each backend spells its own way; a `?` is the vantage given to the run that migrates.
MIGRATIONS: list[list[str]] = [
    [  # 1: the schema of the first release (SQLite only, before versions)
        "CREATE TABLE IF NOT EXISTS runs (id {serial}, started_at {real} NOT NULL, finished_at {real},"
        " exit_code INTEGER)",
        "CREATE TABLE IF NOT EXISTS results (id {serial}, run_id {bigint} NOT NULL REFERENCES runs(id),"
        " target TEXT NOT NULL, at {real} NOT NULL, url TEXT, address TEXT, port INTEGER, state TEXT NOT NULL,"
        " direction TEXT, hop INTEGER, rtt_ms {real}, exit_code INTEGER NOT NULL, explanation TEXT)",
        "CREATE INDEX IF NOT EXISTS results_by_target ON results(target, id)",
    ],
    [  # 2: vantage points, and each target's latest state from each of them
        "ALTER TABLE runs ADD COLUMN vantage TEXT NOT NULL DEFAULT ''",
        "UPDATE runs SET vantage = ?",
        "CREATE TABLE latest (target TEXT NOT NULL, vantage TEXT NOT NULL, state TEXT NOT NULL,"
        " at {real} NOT NULL, run_id {bigint} NOT NULL REFERENCES runs(id), PRIMARY KEY (target, vantage))",
        "INSERT INTO latest (target, vantage, state, at, run_id)"
        " SELECT results.target, runs.vantage, results.state, results.at, results.run_id"
        " FROM results JOIN runs ON runs.id = results.run_id"
        " WHERE results.id IN (SELECT MAX(id) FROM results GROUP BY target)",
        "CREATE INDEX results_by_run ON results(run_id)",
    ],
    [  # 3: the address family each result was probed over (issue 15: a site can fail over one
        # family and not the other), in the results and each target's latest state; rows from
        # before get it from their address
        "ALTER TABLE results ADD COLUMN family TEXT",
        "UPDATE results SET family = CASE WHEN REPLACE(address, ':', '') <> address THEN 'ipv6'"
        " WHEN address IS NOT NULL AND address <> '' THEN 'ipv4' END",
        "ALTER TABLE latest ADD COLUMN family TEXT",
        "UPDATE latest SET family = (SELECT results.family FROM results WHERE results.run_id = latest.run_id"
        " AND results.target = latest.target ORDER BY results.id DESC LIMIT 1)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


class HistoryError(ProbeError):
    """The history could not be read or written (exit 1); the message names no password."""


def default_vantage() -> str:
    return socket.gethostname() or "localhost"


def check_vantage(name: str) -> str:
    if not name or len(name) > 200 or not name.isprintable() or name != name.strip():
        raise UsageError(f"--vantage {name!r} is not a usable name: give 1 to 200 printable characters")
    return name


def is_postgres(location: str) -> bool:
    return location.startswith(POSTGRES_SCHEMES)


def _userinfo_password(location: str) -> tuple[int, int] | None:
    """Where the password of a postgresql:// URL's user part is (start, end), if it has one; the
    last @ before the query ends the user part, so a password may hold / or @ unencoded."""
    if not is_postgres(location):
        return None
    start = location.index("://") + 3
    query_at = location.find("?", start)
    user_end = location.rfind("@", start, query_at if query_at >= 0 else len(location))
    colon = location.find(":", start, user_end) if user_end >= 0 else -1
    return (colon + 1, user_end) if colon >= 0 else None


def redact(location: str) -> str:
    """The location as it may be printed: a URL without its password (in the user part or as a
    `password=` parameter); a file path as it is."""
    if not is_postgres(location):
        return location
    where = _userinfo_password(location)
    if where is not None:
        location = f"{location[:where[0]]}***{location[where[1]:]}"
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", location, flags=re.I)


def _secrets(location: str) -> list[str]:
    """Every password the location or libpq's environment carries (never to be printed)."""
    found = [location] if redact(location) != location else []
    where = _userinfo_password(location)
    if where is not None:
        password = location[where[0]:where[1]]
        found += [password, urllib.parse.unquote(password)]
    found += re.findall(r"[?&]password=([^&#]*)", location, flags=re.I)
    if os.environ.get("PGPASSWORD"):
        found.append(os.environ["PGPASSWORD"])
    return sorted({s for s in found if s}, key=len, reverse=True)


def _one_line(message: str, location: str) -> str:
    """A driver's message as one line, with the location shown without its password and any
    password masked."""
    text = "; ".join(part.strip() for part in str(message).splitlines() if part.strip()) or "unknown error"
    text = re.sub(r"\s+", " ", text)
    if redact(location) != location:
        text = text.replace(location, redact(location))
    for secret in _secrets(location):
        text = text.replace(secret, "***")
    return text


# -- the two backends ------------------------------------------------------------------------


class _Database:
    """One open connection, SQL written once with `?` parameters for both backends."""

    types: dict[str, str]
    location: str

    def execute(self, sql: str, params: tuple = ()):
        raise NotImplementedError

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        raise NotImplementedError

    def transaction(self, migrating: bool = False):
        raise NotImplementedError

    def table_exists(self, name: str) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # the schema, shared ------------------------------------------------------------------
    def version(self) -> int:
        if self.table_exists("schema_version"):
            row = self.execute("SELECT MAX(version) FROM schema_version").fetchone()
            return row[0] or 0
        return 1 if self.table_exists("runs") else 0

    def migrate(self, vantage: str) -> None:
        """Bring the schema to SCHEMA_VERSION: each missing migration, and the version, in one
        transaction that one writer at a time holds (the others then find nothing to do)."""
        if self.version() == SCHEMA_VERSION:
            return
        with self.transaction(migrating=True):
            version = self.version()
            if version > SCHEMA_VERSION:
                raise HistoryError(f"the history in {redact(self.location)} has schema version {version}; this "
                                   f"probe knows up to {SCHEMA_VERSION}: upgrade probe")
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    self.execute(statement.format(**self.types), (vantage,) if "?" in statement else ())
            if version < SCHEMA_VERSION:
                self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                self.execute("DELETE FROM schema_version")
                self.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))


class _SQLite(_Database):
    types = {"serial": "INTEGER PRIMARY KEY", "real": "REAL", "bigint": "INTEGER"}

    def __init__(self, path: str):
        import sqlite3

        self.location = path
        self.db = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None)

    def execute(self, sql, params=()):
        return self.db.execute(sql, params)

    def executemany(self, sql, rows):
        self.db.executemany(sql, rows)

    def transaction(self, migrating=False):
        return _SQLiteTransaction(self.db)

    def table_exists(self, name):
        return self.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() \
            is not None

    def close(self):
        self.db.close()


class _SQLiteTransaction:
    """BEGIN IMMEDIATE: the write lock from the start, so two writers never deadlock upgrading."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, error, trace):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


class _Postgres(_Database):
    types = {"serial": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "real": "DOUBLE PRECISION",
             "bigint": "BIGINT"}

    def __init__(self, url: str):
        psycopg = _driver(url)
        self.location = url
        given = psycopg.conninfo.conninfo_to_dict(check_location(url))
        extra = {}
        if "connect_timeout" not in given and not os.environ.get("PGCONNECT_TIMEOUT"):
            extra["connect_timeout"] = CONNECT_TIMEOUT
        if "application_name" not in given and not os.environ.get("PGAPPNAME"):
            extra["application_name"] = "probe"
        # libpq reads the rest itself, as psql does: PGHOST, PGUSER, PGPASSWORD, ~/.pgpass, ...
        self.db = psycopg.connect(url, autocommit=True, **extra)

    def execute(self, sql, params=()):
        return self.db.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql, rows):
        with self.db.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    def transaction(self, migrating=False):
        return _PostgresTransaction(self, migrating)

    def table_exists(self, name):
        return self.execute("SELECT 1 FROM information_schema.tables WHERE table_name = ? AND table_schema = "
                            "current_schema()", (name,)).fetchone() is not None

    def close(self):
        self.db.close()


class _PostgresTransaction:
    def __init__(self, database: _Postgres, migrating: bool):
        self.database, self.migrating = database, migrating

    def __enter__(self):
        self.transaction = self.database.db.transaction()
        self.transaction.__enter__()
        if self.migrating:  # held to the commit: one migrating writer at a time
            self.database.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))

    def __exit__(self, *exc):
        return self.transaction.__exit__(*exc)


class _Guarded:
    """`with _Guarded(location) as db:` an open, up-to-date database; every driver error on the
    way in or out becomes one HistoryError line without a password."""

    def __init__(self, location: str, vantage: str, doing: str, create: bool = True):
        self.location, self.vantage, self.doing, self.create = location, vantage, doing, create
        self.database: _Database | None = None

    def __enter__(self) -> _Database:
        try:
            self.database = _Postgres(self.location) if is_postgres(self.location) else _SQLite(self.location)
            if not self.create and self.database.version() == 0:
                raise HistoryError(f"no history in {redact(self.location)} yet: make one with probe batch "
                                   f"--history {redact(self.location)}")
            self.database.migrate(self.vantage)
        except BaseException as error:
            self._close()
            raise self._translated(error) from None
        return self.database

    def __exit__(self, kind, error, trace):
        self._close()
        if error is not None:
            translated = self._translated(error)
            if translated is not error:
                raise translated from None

    def _close(self) -> None:
        if self.database is not None:
            try:
                self.database.close()
            except Exception:  # closing a connection that already broke: nothing more to say
                pass
            self.database = None

    def _translated(self, error: BaseException) -> BaseException:
        if isinstance(error, ProbeError) or not isinstance(error, Exception):
            return error
        if _is_driver_error(error):
            return HistoryError(f"history {redact(self.location)}: cannot {self.doing}: "
                                f"{_one_line(error, self.location)}")
        return error


def _is_driver_error(error: BaseException) -> bool:
    import sqlite3

    if isinstance(error, sqlite3.Error):
        return True
    module = type(error).__module__ or ""
    return module.startswith("psycopg")


def check_location(location: str) -> str:
    """A SQLite path or a postgresql:// URL; any other URL is a usage error."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location) and not is_postgres(location):
        raise UsageError(f"--history {redact(location)}: give a SQLite file or a postgresql:// URL")
    if not location:
        raise UsageError("--history needs a SQLite file or a postgresql:// URL")
    if is_postgres(location):
        psycopg = _driver(location)
        try:
            psycopg.conninfo.conninfo_to_dict(location)
        except psycopg.ProgrammingError as error:
            raise UsageError(f"--history {redact(location)} is not a PostgreSQL URL: "
                             f"{_one_line(error, location)}") from None
    return location


def _driver(location: str):
    try:
        import psycopg
    except ImportError:
        raise HistoryError(f"--history {redact(location)} needs the PostgreSQL driver psycopg: "
                           "python3 -m pip install 'psycopg[binary]' (or 'probe[postgresql]')") from None
    return psycopg


# -- writing: one batch ------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """How one result compares with the target's previous one from the same vantage."""

    kind: str | None  # "new", "changed", or None (same as before)
    previous: str | None = None
    previous_at: float | None = None
    previous_family: str | None = None  # "ipv4", "ipv6", or None (not measured, or kept before families)

    def speaks(self, state: str) -> bool:
        """Whether --alert-on-change reports it."""
        return self.kind == "changed" or (self.kind == "new" and state != "clean")

    def as_json(self) -> dict:
        return {"change": self.kind, "previous_verdict": self.previous, "previous_at": self.previous_at,
                "previous_family": self.previous_family}


def state_of(document: dict) -> str:
    return document.get("verdict") or "error"


_RESULT_COLUMNS = ("run_id, target, at, url, address, port, state, direction, hop, rtt_ms, exit_code, explanation,"
                   " family")


class History:
    """One batch run's view of the history: compare, then keep, each result; `close()` writes
    them all in one transaction. Raises HistoryError when the database cannot be used."""

    def __init__(self, location: str, vantage: str | None = None, clock=time.time):
        self.location, self.clock = check_location(location), clock
        self.vantage = vantage or default_vantage()
        self.started_at = clock()
        self.rows: list[tuple] = []  # (target, at, url, address, port, state, direction, hop, rtt, code, text, family)
        with _Guarded(location, self.vantage, "read the previous results") as db:
            self.previous = {target: (state, at, family) for target, state, at, family in
                             db.execute("SELECT target, state, at, family FROM latest WHERE vantage = ?",
                                        (self.vantage,)).fetchall()}

    def record(self, key: str, document: dict, exit_code: int) -> Change:
        """Keep one result; return how it compares with the target's previous one."""
        state, at = state_of(document), self.clock()
        before = self.previous.get(key)
        change = Change("new") if before is None else Change(None if before[0] == state else "changed", *before)
        target = document.get("target", {})
        family = target.get("family")
        self.previous[key] = (state, at, family)  # a target listed twice compares with its earlier line
        self.rows.append((key, at, target.get("url"), target.get("address"), target.get("port"), state,
                          document.get("direction"), document.get("hop"), document.get("rtt_ms"), exit_code,
                          document.get("explanation"), family))
        return change

    def close(self, exit_code: int | None = None) -> int:
        """Write the run and its results in one transaction; the number of results written."""
        with _Guarded(self.location, self.vantage, f"write this run's {len(self.rows)} result(s)") as db:
            with db.transaction():
                run_id = db.execute("INSERT INTO runs (started_at, finished_at, exit_code, vantage) VALUES "
                                    "(?, ?, ?, ?) RETURNING id",
                                    (self.started_at, self.clock(), exit_code, self.vantage)).fetchone()[0]
                db.executemany(f"INSERT INTO results ({_RESULT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               [(run_id, *row) for row in self.rows])
                last = {}
                for row in self.rows:
                    last[row[0]] = row
                # in target order, so that two writers of one vantage take the row locks alike
                db.executemany("INSERT INTO latest (target, vantage, state, at, run_id, family) VALUES "
                               "(?, ?, ?, ?, ?, ?) ON CONFLICT (target, vantage) DO UPDATE SET state = excluded.state, "
                               "at = excluded.at, run_id = excluded.run_id, family = excluded.family "
                               "WHERE excluded.at >= latest.at",
                               [(key, self.vantage, row[5], row[1], run_id, row[11])
                                for key, row in sorted(last.items())])
        return len(self.rows)


# -- reading -----------------------------------------------------------------------------------


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
    vantage: str
    changed_from: str | None  # the previous state from the same vantage, when this entry is a change
    family: str | None = None  # "ipv4" or "ipv6": what the result was probed over


def _reading(location: str) -> _Guarded:
    check_location(location)
    if not is_postgres(location) and not os.path.exists(location):
        raise HistoryError(f"no history file {location}: make one with probe batch --history {location}")
    return _Guarded(location, default_vantage(), "read the history", create=False)


_ENTRY_QUERY = ("SELECT results.target, results.at, results.state, results.direction, results.hop, results.rtt_ms,"
                " results.exit_code, results.address, results.explanation, runs.vantage, results.family"
                " FROM results JOIN runs ON runs.id = results.run_id")


def _vantage_filter(vantages: list[str] | tuple[str, ...], column: str) -> tuple[str, tuple]:
    if not vantages:
        return "", ()
    return f" {column} IN ({', '.join('?' * len(vantages))})", tuple(vantages)


def _entries(rows) -> list[Entry]:
    """Entries of one target, in order, each change computed against the same vantage."""
    entries, previous = [], {}
    for _target, at, state, direction, hop, rtt, code, address, explanation, vantage, family in rows:
        before = previous.get(vantage)
        entries.append(Entry(at, state, direction, hop, rtt, code, address, explanation, vantage,
                             changed_from=before if before is not None and before != state else None,
                             family=family))
        previous[vantage] = state
    return entries


def targets(location: str, vantages: list[str] | tuple[str, ...] = ()) -> list[dict]:
    """Every target from every vantage (or those named): runs, the last state and since when."""
    where, params = _vantage_filter(vantages, "runs.vantage")
    with _reading(location) as db:
        rows = db.execute(f"{_ENTRY_QUERY}{' WHERE' + where if where else ''} ORDER BY results.target, runs.vantage, "
                          "results.id", params).fetchall()
    out = []
    for (name, vantage), group in itertools.groupby(rows, key=lambda row: (row[0], row[9])):
        entries = _entries(group)
        since = entries[-1]
        for entry in reversed(entries):
            if entry.state != entries[-1].state:
                break
            since = entry
        out.append({"target": name, "vantage": vantage, "runs": len(entries), "state": entries[-1].state,
                    "family": entries[-1].family, "since": since.at, "last": entries[-1].at,
                    "changes": sum(1 for e in entries if e.changed_from is not None)})
    return out


def timeline(location: str, target: str, vantages: list[str] | tuple[str, ...] = ()) -> tuple[str, list[Entry]]:
    """One target's results, oldest first, from every vantage (or those named). `target` is its
    name or a unique part of it."""
    with _reading(location) as db:
        names = [row[0] for row in db.execute("SELECT DISTINCT target FROM latest").fetchall()]
        matches = [name for name in names if name == target] or [name for name in names if target in name]
        if not matches:
            raise HistoryError(f"no target matching {target!r} in {redact(location)}")
        if len(matches) > 1:
            raise HistoryError(f"{target!r} matches {len(matches)} targets ({', '.join(sorted(matches)[:5])}"
                               f"{', ...' if len(matches) > 5 else ''}): give more of its name")
        where, params = _vantage_filter(vantages, "runs.vantage")
        rows = db.execute(f"{_ENTRY_QUERY} WHERE results.target = ?{' AND' + where if where else ''} "
                          "ORDER BY results.id", (matches[0], *params)).fetchall()
    if not rows:
        raise HistoryError(f"no result for {matches[0]} from vantage {', '.join(vantages)} in {redact(location)}")
    return matches[0], _entries(rows)


def differing(location: str, vantages: list[str] | tuple[str, ...] = ()) -> list[dict]:
    """The targets whose latest verdict is not the same from every vantage (or from those named):
    "blocked from A, clean from B". Each with every vantage's latest state and when it was seen."""
    where, params = _vantage_filter(vantages, "vantage")
    with _reading(location) as db:
        rows = db.execute(f"SELECT target, vantage, state, at FROM latest{' WHERE' + where if where else ''} "
                          "ORDER BY target, vantage", params).fetchall()
    out = []
    for name, group in itertools.groupby(rows, key=lambda row: row[0]):
        seen = [{"vantage": vantage, "state": state, "at": at} for _, vantage, state, at in group]
        if len({s["state"] for s in seen}) > 1:
            out.append({"target": name, "vantages": seen})
    return out
