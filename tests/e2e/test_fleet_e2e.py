"""Two vantage points in the lab, one PostgreSQL history (issue 19): the same targets probed
from a vantage whose path has the fleet's boxes at r2 and from one whose path has none (the
boxes stopped: the same lab, another day's path). `probe history --differ` names exactly the
targets the box changes, each with both verdicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from netns import fleet

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "history"))
from pgcluster import running  # noqa: E402

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]

KINDS = [kind for kind in fleet.KINDS if kind.name in ("clean", "blockpage", "firewall")]


@pytest.fixture(scope="module")
def history_url():
    with running() as cluster:
        # the unix socket: a file, reachable from the client's network namespace as from the host
        yield cluster.socket_url(cluster.new_database("fleet"))


def batch(lab, listing, vantage: str, url: str) -> subprocess.CompletedProcess:
    argv = ["ip", "netns", "exec", lab.client_ns, sys.executable, "-m", "probe", "batch", str(listing),
            "--history", url, "--vantage", vantage, "--no-progress"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_two_vantage_points_one_seeing_a_box(lab, history_url, tmp_path):
    listing = tmp_path / "targets.txt"
    listing.write_text("".join(f"{kind.url} {kind.resolve}\n" for kind in KINDS))
    boxes = fleet.start_boxes(lab)
    try:
        branch = batch(lab, listing, "branch", history_url)
    finally:
        for proc in boxes:
            lab.stop(proc)
    assert branch.returncode == 3, branch.stderr
    datacentre = batch(lab, listing, "datacentre", history_url)
    assert datacentre.returncode == 4, datacentre.stderr  # :8081 has nothing listening: the server resets
    split = subprocess.run([sys.executable, "-m", "probe", "history", history_url, "--differ", "--json"],
                           capture_output=True, text=True, timeout=60)
    assert split.returncode == 0, split.stderr
    seen = {row["target"]: {v["vantage"]: v["state"] for v in row["vantages"]}
            for row in json.loads(split.stdout)["targets"]}
    assert seen == {
        "http://blocked.example/ @203.0.113.80": {"branch": "middlebox-response", "datacentre": "clean"},
        f"http://www.example.com:{fleet.FIREWALL_PORT}/ @203.0.113.80": {"branch": "middlebox-reset",
                                                                         "datacentre": "server-reset"},
    }
    text = subprocess.run([sys.executable, "-m", "probe", "history", history_url, "--differ"],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "middlebox-response" in text.stdout, text.stderr
    print(text.stdout)  # what the README shows (pytest -s)
