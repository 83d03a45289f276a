"""Colour in the text people read (issue 18): `--color=auto|always|never` and NO_COLOR, as ls and
grep do it. Run through the real command line, `auto` on a real terminal (a pty)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from probe.render.colour import Paint
from probe.render.report import EVIDENCE_INDENT, HOPS_HEADER, hops_table

ROOT = Path(__file__).resolve().parents[2]
TAP = ROOT / "tests" / "golden" / "captures" / "05-tap-rst-burst.pcap"
ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
RED = "\x1b[31m"
PACKET_ROW = re.compile(r"\s*(\d+)\s+\d+\.\d+\s")  # a packet's row: its number, then its time in ms


def _analyze(*options: str, columns: int, tty: bool, no_color: str | None = None) -> tuple[int, str]:
    """`probe analyze TAP OPTIONS` with stdout on a pty (`tty`) or a pipe; (exit code, stdout)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    env.update(COLUMNS=str(columns), TERM="xterm")
    if no_color is not None:
        env["NO_COLOR"] = no_color
    argv = [sys.executable, "-m", "probe", "analyze", str(TAP), *options]
    if not tty:
        run = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        return run.returncode, run.stdout
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=follower, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=60), b"".join(chunks).decode().replace("\r\n", "\n")


def _forged_numbers() -> set[int]:
    import json

    run = subprocess.run([sys.executable, "-m", "probe", "analyze", str(TAP), "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    return {p["n"] for p in json.loads(run.stdout)["flows"][0]["packets"] if p["origin"] == "middlebox"}


@pytest.mark.parametrize("columns", [80, 200])
def test_a_terminal_gets_the_forged_rows_and_the_verdict_in_colour(columns):
    code, text = _analyze(columns=columns, tty=True)
    assert code == 3
    forged = _forged_numbers()
    assert forged
    coloured_rows = set()
    for line in text.splitlines():
        plain = ESCAPE.sub("", line)
        row = PACKET_ROW.match(plain)
        if columns == 80 and (plain.startswith(EVIDENCE_INDENT) or row):
            assert len(plain) <= 80, plain  # a table line: laid out before it was painted
        if row and line.startswith(RED):
            coloured_rows.add(int(row.group(1)))
    assert coloured_rows == forged  # every forged packet's row, and only theirs
    assert "verdict: \x1b[1;31mmiddlebox-reset\x1b[0m" in text


@pytest.mark.parametrize("columns", [80, 200])
def test_no_color_and_never_give_the_same_plain_text(columns):
    code, with_no_color = _analyze(columns=columns, tty=True, no_color="1")
    assert code == 3 and "\x1b" not in with_no_color
    _code, never = _analyze("--color=never", columns=columns, tty=True)
    assert never == with_no_color
    _code, coloured = _analyze(columns=columns, tty=True)
    assert ESCAPE.sub("", coloured) == with_no_color  # colour changes nothing but the colour


def test_always_colours_a_pipe_and_auto_does_not():
    assert "\x1b" not in _analyze(columns=80, tty=False)[1]
    code, text = _analyze("--color=always", columns=80, tty=False, no_color="1")  # the flag wins
    assert code == 3 and RED in text


def test_an_empty_no_color_does_not_turn_colour_off():
    assert RED in _analyze(columns=80, tty=True, no_color="")[1]  # no-color.org: set and not empty


def test_a_bad_color_is_a_usage_error():
    code, _text = _analyze("--color=sometimes", columns=80, tty=False)
    assert code == 2


def test_the_hop_table_paints_the_box_row_only():
    hops = [{"ttl": ttl, "address": f"192.0.2.{ttl}", "rtt_ms": 1.0, "trigger": fate, "control": "time-exceeded",
             "details": {"trigger": {}, "control": {}}}
            for ttl, fate in ((1, "time-exceeded"), (2, "time-exceeded+reset"), (3, "time-exceeded+reset"))]
    lines = hops_table(hops, Paint(True), box_hop=2).splitlines()
    assert lines[0] == HOPS_HEADER
    assert [ESCAPE.search(line) is not None for line in lines[1:]] == [False, True, False]
    assert hops_table(hops, Paint(False), box_hop=2) == ESCAPE.sub("", "\n".join(lines))
