"""Batch's alert-on-change policy (`probe.jobs.targets.Outcomes`), out of the command: every
target recorded and tallied, only changes spoken under --alert-on-change. A real SQLite history."""

from __future__ import annotations

from probe.jobs.store import History
from probe.jobs.targets import Judged, Line, Outcomes


def judged(number: int, verdict: str | None, code: int) -> Judged:
    return Judged(Line(number, f"http://site{number}.example/"), {"verdict": verdict, "target": {}}, code)


def run(path, alert_on_change, results):
    spoken = []
    store = History(str(path), "lab")
    outcomes = Outcomes(store, alert_on_change, spoken.append)
    for result in results:
        outcomes.add(result)
    store.close(outcomes.exit_code)
    return outcomes, spoken


def test_under_alert_on_change_only_a_change_is_spoken_and_sets_the_exit_status(tmp_path):
    history = tmp_path / "h.sqlite"
    first, said = run(history, True, [judged(1, "clean", 0), judged(2, "middlebox-reset", 3)])
    # a new target is spoken only when it is not clean (a fleet's first run alerts on its problems)
    assert [d["verdict"] for d in said] == ["middlebox-reset"]
    assert (first.everything.total, first.spoken.total, first.exit_code) == (2, 1, 3)

    again, said = run(history, True, [judged(1, "clean", 0), judged(2, "middlebox-reset", 3)])
    assert said == [] and again.everything.total == 2
    assert again.exit_code == 0  # nothing changed: the cron job stays quiet and green

    changed, said = run(history, True, [judged(1, "middlebox-reset", 3), judged(2, "middlebox-reset", 3)])
    assert [(d["verdict"], d["change"]) for d in said] == [("middlebox-reset", "was clean")]
    assert changed.exit_code == 3


def test_without_alert_on_change_everything_is_spoken_with_its_history(tmp_path):
    history = tmp_path / "h.sqlite"
    run(history, False, [judged(1, "clean", 0)])
    outcomes, said = run(history, False, [judged(1, "clean", 0), judged(2, None, 1)])
    assert [d["history"]["change"] for d in said] == [None, "new"]  # null: as before
    assert all(d["history"]["vantage"] == "lab" and "change" not in d for d in said)
    assert (outcomes.spoken.total, outcomes.exit_code) == (2, 1)
