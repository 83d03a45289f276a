"""`probe batch --history` as vantage points run it, end to end through the real command line
over the fake network of tests/unit/fakenet.py (tests/history/fakebatch.py: no packet leaves
the process): writers at once into one database, a database that is down, a refused login, a
connection dropped in the middle of the write, libpq's environment and .pgpass, and
--alert-on-change and `probe history` across vantage points."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from probe.jobs.store import SCHEMA_VERSION
from pgcluster import PASSWORD, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
FAKEBATCH = os.path.join(HERE, "fakebatch.py")
WRITERS = 5
TARGETS = 100


def write_targets(path, count: int, first_address: int = 80) -> str:
    path.write_text("".join(f"http://t{n}.example/ t{n}.example:80:203.0.113.{first_address + n % 4}\n"
                            for n in range(count)))
    return str(path)


def start_batch(listing: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PROBE_"))}
    environment.update(env or {})
    return subprocess.Popen([sys.executable, FAKEBATCH, "batch", listing, "--no-locate", "--no-progress", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env=environment)


def batch(listing: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = start_batch(listing, *args, env=env)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def probe(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PROBE_"))}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True, text=True, timeout=120,
                          env=environment, stdin=subprocess.DEVNULL)


def query(location: str, sql: str) -> list[tuple]:
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as db:
            return db.execute(sql).fetchall()
    with sqlite3.connect(location) as db:
        return db.execute(sql).fetchall()


def valid(line: str) -> dict:
    """One JSON line, checked against the schema shipped in the package."""
    from jsonschema import Draft202012Validator

    from probe.schema import schema_path

    document = json.loads(line)
    Draft202012Validator(json.loads(schema_path().read_text())).validate(document)
    return document


def problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("probe:")]


def test_vantage_points_writing_at_once_lose_nothing(location, tmp_path):
    """WRITERS batches start together on an empty database: they race to create the schema, then
    each writes its TARGETS results in one transaction. Every row is there, the version is one."""
    listing = write_targets(tmp_path / "targets.txt", TARGETS)
    procs = [start_batch(listing, "--history", location, "--vantage", f"site-{n}") for n in range(WRITERS)]
    done = [(proc.communicate(timeout=180), proc.returncode) for proc in procs]
    for (out, err), code in done:
        assert code == 0, err
        assert len(out.splitlines()) == TARGETS
    assert query(location, "SELECT COUNT(*), COUNT(DISTINCT target) FROM results") == [(WRITERS * TARGETS, TARGETS)]
    assert query(location, "SELECT COUNT(*), COUNT(DISTINCT vantage) FROM runs") == [(WRITERS, WRITERS)]
    assert query(location, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert query(location, "SELECT COUNT(*) FROM latest") == [(WRITERS * TARGETS,)]
    per_run = query(location, "SELECT runs.vantage, COUNT(*) FROM results JOIN runs ON runs.id = results.run_id "
                              "GROUP BY runs.vantage ORDER BY runs.vantage")
    assert per_run == [(f"site-{n}", TARGETS) for n in range(WRITERS)]


def _down_locations(tmp_path) -> dict:
    return {"postgresql": f"postgresql://probe:{PASSWORD}@127.0.0.1:{free_port()}/probe",
            "sqlite": str(tmp_path / "no-such-directory" / "history.sqlite")}


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_database_that_is_down_loses_no_result(tmp_path, backend):
    listing = write_targets(tmp_path / "targets.txt", 8)
    location = _down_locations(tmp_path)[backend]
    run = batch(listing, "--history", location, "--out", str(tmp_path / "out.jsonl"), "--alert-on-change")
    assert run.returncode == 1, run.stderr
    documents = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    # every result is out, even with --alert-on-change: without the history nothing can be called unchanged
    assert sorted(d["line"] for d in documents) == list(range(1, 9)) and {d["verdict"] for d in documents} == {"clean"}
    assert "history" not in documents[0]
    [line] = problem_lines(run.stderr)
    assert line.startswith("probe: history ") and "cannot read the previous results" in line, line
    assert "Traceback" not in run.stderr and PASSWORD not in run.stderr + run.stdout
    if backend == "postgresql":
        assert "probe:***@127.0.0.1" in line and "connection" in line.lower()
    # on standard output too, each line a whole document
    plain = batch(listing, "--history", location)
    assert plain.returncode == 1 and len([json.loads(line) for line in plain.stdout.splitlines()]) == 8


def test_a_refused_login(cluster, tmp_path):
    database = cluster.new_database("refused")
    listing = write_targets(tmp_path / "targets.txt", 3)
    wrong = "Wrong-pw-77"
    run = batch(listing, "--history", cluster.tcp_url(database, password=wrong))
    assert run.returncode == 1 and len(run.stdout.splitlines()) == 3, run.stderr
    [line] = problem_lines(run.stderr)
    assert "password authentication failed" in line and "probe:***@" in line
    assert wrong not in run.stderr + run.stdout and "Traceback" not in run.stderr
    # the same wrong password from libpq's environment is not printed either
    env_run = batch(listing, "--history", "postgresql://", env={"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port),
                                                                 "PGUSER": "probe", "PGDATABASE": database,
                                                                 "PGPASSWORD": wrong})
    assert env_run.returncode == 1 and wrong not in env_run.stderr + env_run.stdout
    assert "password authentication failed" in problem_lines(env_run.stderr)[0]


def test_libpq_environment_and_pgpass_work_as_for_psql(cluster, tmp_path):
    database = cluster.new_database("libpq")
    listing = write_targets(tmp_path / "targets.txt", 3)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{cluster.port}:{database}:probe:{PASSWORD}\n")
    pgpass.chmod(0o600)
    # the URL (without a password) from PROBE_HISTORY, the password from the password file
    run = batch(listing, env={"PROBE_HISTORY": cluster.tcp_url(database, password=None), "PGPASSFILE": str(pgpass),
                              "PROBE_VANTAGE": "from-env"})
    assert run.returncode == 0, run.stderr
    # everything from libpq's variables, as psql takes them
    run = batch(listing, "--history", "postgresql://", "--vantage", "pg-env",
                env={"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "probe", "PGDATABASE": database,
                     "PGPASSWORD": PASSWORD})
    assert run.returncode == 0, run.stderr
    assert query(cluster.socket_url(database), "SELECT vantage, COUNT(*) FROM runs GROUP BY vantage ORDER BY 1") == [
        ("from-env", 1), ("pg-env", 1)]
    shown = probe("history", "--json", env={"PROBE_HISTORY": cluster.tcp_url(database, password=None),
                                            "PGPASSFILE": str(pgpass)})
    assert shown.returncode == 0, shown.stderr
    assert len(json.loads(shown.stdout)["targets"]) == 6  # 3 targets from 2 vantage points


def test_a_connection_dropped_in_the_middle_of_the_write(cluster, tmp_path):
    """The write is held mid-transaction (a lock on `latest`, after the results went in) and its
    connection is terminated: exit 1, every JSON line out, and not one row of the run kept."""
    import psycopg

    url = cluster.socket_url(cluster.new_database("dropped"))
    listing = write_targets(tmp_path / "targets.txt", 20)
    assert batch(listing, "--history", url, "--vantage", "first").returncode == 0
    with psycopg.connect(url) as admin:
        admin.execute("LOCK TABLE latest IN EXCLUSIVE MODE")  # held until this transaction ends
        proc = start_batch(listing, "--history", url, "--vantage", "dropped", "--out", str(tmp_path / "out.jsonl"))
        watcher = psycopg.connect(url, autocommit=True)
        try:
            deadline = time.monotonic() + 60
            while True:  # until the batch's write waits for the lock
                waiting = watcher.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'probe' AND "
                                          "wait_event_type = 'Lock'").fetchall()
                if waiting or proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert waiting, "the batch never came to write"
            watcher.execute("SELECT pg_terminate_backend(%s)", (waiting[0][0],))
        finally:
            watcher.close()
        admin.rollback()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    [line] = problem_lines(err)
    assert "cannot write this run's 20 result(s)" in line and "terminat" in line, line
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 20
    assert query(url, "SELECT vantage, COUNT(*) FROM runs GROUP BY vantage") == [("first", 1)]
    assert query(url, "SELECT COUNT(*) FROM results") == [(20,)]


def test_alert_on_change_and_the_history_across_vantage_points(location, tmp_path):
    """Two targets; the office sees the second unreachable (a router says so), the data centre
    never does. Each vantage is compared with itself only, and `probe history` shows the split."""
    listing = str(tmp_path / "targets.txt")
    (tmp_path / "targets.txt").write_text("http://www.example.com/ www.example.com:80:203.0.113.80\n"
                                          "http://blocked.example/ blocked.example:80:203.0.113.81\n")
    office = {"FAKEBATCH_DEAD": "203.0.113.81"}

    def alert(vantage, env=None):
        return batch(listing, "--history", location, "--vantage", vantage, "--alert-on-change", env=env)

    first = alert("office", office)
    [line] = first.stdout.splitlines()  # the new problem, and only it
    assert first.returncode == 4 and valid(line)["verdict"] == "unreachable"
    assert json.loads(line)["history"] == {"change": "new", "previous_verdict": None, "previous_at": None,
                                           "previous_family": None, "vantage": "office"}
    for vantage, env in (("dc", None), ("dc", None), ("office", office)):  # new and clean; then the same
        quiet = alert(vantage, env)
        assert (quiet.returncode, quiet.stdout) == (0, ""), (vantage, quiet.stderr)
    split = probe("history", location, "--differ", "--json")
    assert split.returncode == 0, split.stderr
    view = json.loads(split.stdout)
    assert view["view"] == "differ" and [t["target"] for t in view["targets"]] == [
        "http://blocked.example/ @203.0.113.81"]
    assert [(v["vantage"], v["state"]) for v in view["targets"][0]["vantages"]] == [("dc", "clean"),
                                                                                  ("office", "unreachable")]
    text = probe("history", location, "--differ")
    assert "blocked.example" in text.stdout and "unreachable" in text.stdout and "www.example.com" not in text.stdout
    # the office's way clears: a change from the office's own previous verdict
    cleared = alert("office")
    [line] = cleared.stdout.splitlines()
    assert cleared.returncode == 0 and valid(line)["history"]["previous_verdict"] == "unreachable"
    assert json.loads(line)["change"] == "was unreachable"
    assert json.loads(probe("history", location, "--differ", "--json").stdout)["targets"] == []
    timeline = json.loads(probe("history", location, "blocked", "--json").stdout)
    assert [(e["vantage"], e["state"], e["changed_from"]) for e in timeline["entries"]] == [
        ("office", "unreachable", None), ("dc", "clean", None), ("dc", "clean", None),
        ("office", "unreachable", None), ("office", "clean", "unreachable")]
    changes = json.loads(probe("history", location, "blocked", "--changes", "--vantage", "office", "--json").stdout)
    assert [(e["state"], e["changed_from"]) for e in changes["entries"]] == [("unreachable", None),
                                                                             ("clean", "unreachable")]
    listing_json = json.loads(probe("history", location, "--json").stdout)
    assert {(t["target"].split()[0], t["vantage"], t["runs"]) for t in listing_json["targets"]} == {
        ("http://www.example.com/", "office", 3), ("http://www.example.com/", "dc", 2),
        ("http://blocked.example/", "office", 3), ("http://blocked.example/", "dc", 2)}


@pytest.mark.parametrize("args, message", [
    (["--history", "mysql://db.example/probe"], "give a SQLite file or a postgresql:// URL"),
    (["--history", "h.sqlite", "--vantage", ""], "--vantage '' is not a usable name"),
    (["--history", "postgresql://probe:Pw-secret-9@[::1/probe"], "is not a PostgreSQL URL"),
    (["--history", "postgresql://probe:Pw-secret-9@127.0.0.1/probe?no_such_option=1"], "is not a PostgreSQL URL"),
])
def test_bad_history_options_are_refused_before_anything_runs(tmp_path, args, message):
    listing = write_targets(tmp_path / "targets.txt", 1)
    run = batch(listing, *args)
    assert run.returncode == 2 and run.stdout == "", run.stderr
    [line] = run.stderr.splitlines()
    assert message in line and "Pw-secret-9" not in line


def test_the_nagios_plugin_says_unknown_when_the_history_is_not_written(tmp_path):
    listing = write_targets(tmp_path / "targets.txt", 2)
    run = batch(listing, "--nagios", "--history", _down_locations(tmp_path)["postgresql"])
    assert run.returncode == 3, run.stderr  # UNKNOWN: the plugin's own code, though every target is clean
    assert run.stdout.startswith("PROBE UNKNOWN - all 2 targets clean; the history was not written | clean=2;")
    [line] = problem_lines(run.stderr)
    assert "cannot read the previous results" in line and PASSWORD not in run.stderr + run.stdout
