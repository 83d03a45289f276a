"""`python3 -m netns up --scenario NAME` keeps the scenario's lab and box up, in the background,
until `python3 -m netns down` (issue 18): the probe command it prints gets the scenario's
verdict against the box it started, and `down` leaves no namespace, process or state file."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from netns.lab import MARKER_DIR, _netns_list, _owner_alive

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]
ROOT = Path(__file__).resolve().parents[2]


def netns(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netns", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_up_keeps_the_scenario_until_down():
    before = set(MARKER_DIR.glob("held-*.json")) if MARKER_DIR.is_dir() else set()
    up = netns("up", "--scenario", "06-field-report")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        [state_file] = set(MARKER_DIR.glob("held-*.json")) - before
        state = json.loads(state_file.read_text())
        assert _owner_alive(state["pid"], state["starttime"])  # the holder outlived `up`
        assert set(state["namespaces"]) <= set(_netns_list())
        assert "box     swallow at hop 2" in up.stdout
        [command] = [line.removeprefix("e.g.  ") for line in up.stdout.splitlines() if line.startswith("e.g.  ")]
        run = subprocess.run(shlex.split(command) + ["--json", "--no-locate"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        document = json.loads(run.stdout)
        assert (document["verdict"], document["direction"]) == ("middlebox-reset", "to-server"), run.stderr
    finally:
        down = netns("down")
    assert down.returncode == 0, down.stderr
    assert "scenario 06-field-report down" in down.stdout
    assert not _owner_alive(state["pid"], state["starttime"])
    assert not state_file.exists()
    assert not set(state["namespaces"]) & set(_netns_list())
    again = netns("down")
    assert (again.returncode, again.stdout.strip()) == (0, "no lab is kept up")


def test_an_unknown_scenario_is_refused_and_leaves_nothing():
    before = set(_netns_list())
    up = netns("up", "--scenario", "no-such-scenario")
    assert up.returncode == 2 and "no such scenario" in up.stderr
    assert set(_netns_list()) == before
    assert not list(MARKER_DIR.glob("held-up-*.log"))
