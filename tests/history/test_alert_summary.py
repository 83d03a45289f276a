"""The summary an --alert-on-change batch mails (issue 18): every changed target by name with
what it was and what it is now, the probed and the changed targets counted apart. Through the
real command line over the fake network (tests/history/fakebatch.py), with a SQLite history."""

from __future__ import annotations

import re

from test_fleet_batch import batch


def test_the_alert_names_every_changed_target_with_was_and_now(tmp_path):
    listing = tmp_path / "targets.txt"
    listing.write_text("http://www.example.com/ www.example.com:80:203.0.113.80\n"
                       "http://blocked.example/ blocked.example:80:203.0.113.81\n"
                       "http://other.example/ other.example:80:203.0.113.82\n")
    history = str(tmp_path / "history.sqlite")
    dead = {"FAKEBATCH_DEAD": "203.0.113.81,203.0.113.82"}
    first = batch(str(listing), "--history", history, "--alert-on-change", env=dead)
    assert first.returncode == 4, first.stderr
    changes, counts = _changes(first.stderr), _counts(first.stderr)
    assert changes == {"http://blocked.example/": ("(new)", "unreachable"),
                       "http://other.example/": ("(new)", "unreachable")}  # new and clean: not news
    assert counts == {"clean": (1, 0), "unreachable": (2, 2)}
    assert "3 target(s) probed in " in first.stderr and ", 2 changed since the previous run (2 of them new)" in first.stderr

    cleared = batch(str(listing), "--history", history, "--alert-on-change", env={"FAKEBATCH_DEAD": "203.0.113.82"})
    assert cleared.returncode == 0, cleared.stderr  # the only change is a recovery
    assert _changes(cleared.stderr) == {"http://blocked.example/": ("unreachable", "clean")}
    assert _counts(cleared.stderr) == {"clean": (2, 1), "unreachable": (1, 0)}
    assert "3 target(s) probed in " in cleared.stderr and ", 1 changed since the previous run (0 of them new)" \
        in cleared.stderr

    same = batch(str(listing), "--history", history, "--alert-on-change", env={"FAKEBATCH_DEAD": "203.0.113.82"})
    assert (same.returncode, same.stdout, same.stderr) == (0, "", "")  # nothing changed: nothing to mail


def test_without_alerts_the_summary_counts_every_target(tmp_path):
    listing = tmp_path / "targets.txt"
    listing.write_text("http://www.example.com/ www.example.com:80:203.0.113.80\n"
                       "http://blocked.example/ blocked.example:80:203.0.113.81\n")
    run = batch(str(listing), env={"FAKEBATCH_DEAD": "203.0.113.81"})
    assert run.returncode == 4
    assert "changed" not in run.stderr and "2 target(s) probed in " in run.stderr
    assert re.search(r"^verdict\s+targets$", run.stderr, re.M)


def _section(text: str, header: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == header.split())
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def _changes(stderr: str) -> dict[str, tuple[str, str]]:
    assert "changed since the previous run:" in stderr
    return {row[1]: (row[3], row[4]) for row in _section(stderr, "line url address was now direction hop")}


def _counts(stderr: str) -> dict[str, tuple[int, int]]:
    return {row[0]: (int(row[1]), int(row[2])) for row in _section(stderr, "verdict probed changed")}


def test_the_summary_is_coloured_only_when_asked(tmp_path):
    listing = tmp_path / "targets.txt"
    listing.write_text("http://www.example.com/ www.example.com:80:203.0.113.80\n"
                       "http://blocked.example/ blocked.example:80:203.0.113.81\n")
    dead = {"FAKEBATCH_DEAD": "203.0.113.81"}
    plain = batch(str(listing), env=dead)
    coloured = batch(str(listing), "--color=always", env={**dead, "NO_COLOR": "1"})  # the flag wins
    assert "\x1b[" not in plain.stderr  # stderr is a pipe: auto means none
    assert "\x1b[1;32mclean\x1b[0m" in coloured.stderr and "\x1b[1;33munreachable\x1b[0m" in coloured.stderr
    strip = re.compile(r"\x1b\[[0-9;]*m")
    without_times = re.compile(r"probed in [0-9.]+ s")
    assert without_times.sub("", strip.sub("", coloured.stderr)) == without_times.sub("", plain.stderr)
