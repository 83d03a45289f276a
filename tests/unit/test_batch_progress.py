"""batch's progress bar (issue 18): it says which phase it is in, each phase counts its own
targets, and the elapsed time moves while nothing finishes."""

from __future__ import annotations

import io
import re
import time

from probe.commands import batch


def _bar(monkeypatch, count: int):
    screen = io.StringIO()
    monkeypatch.setattr(batch.sys, "stderr", screen)
    monkeypatch.setattr(batch._Progress, "REDRAW", 0.05)
    return batch._Progress(count, show=True), screen


def _last(screen: io.StringIO) -> str:
    return re.split(r"[\r\n]", screen.getvalue().rstrip("\r\n "))[-1]


def test_each_phase_is_named_and_counts_its_own_targets(monkeypatch):
    progress, screen = _bar(monkeypatch, 6)
    try:
        progress.update(6)  # every exchange over (5 reported, 1 waiting for its trace)
        progress.bar.refresh()  # (tqdm draws at most every 0.1 s; the redrawing thread would draw it)
        assert "probing" in _last(screen) and "6/6" in _last(screen)
        progress.phase("tracing 1 path(s)", 1)
        progress.bar.refresh()
        line = _last(screen)
        assert line.startswith("tracing 1 path(s)") and "0/1" in line
        progress.update(1)
        progress.bar.refresh()
        assert "1/1" in _last(screen)
    finally:
        progress.close()


def test_the_elapsed_time_moves_while_nothing_finishes(monkeypatch):
    progress, screen = _bar(monkeypatch, 2)
    try:
        deadline = time.monotonic() + 5
        while "[00:01<" not in screen.getvalue():  # no update: only the redrawing thread can show it
            assert time.monotonic() < deadline, screen.getvalue()
            time.sleep(0.05)
        assert "0/2" in _last(screen)
    finally:
        progress.close()
    assert not progress.thread.is_alive()
