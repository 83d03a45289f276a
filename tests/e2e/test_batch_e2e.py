"""`probe batch` in the lab: 60 targets of six kinds (netns/fleet.py) at once, against the
verdicts of separate `probe check` runs and against a tcpdump capture of the same run; then
the history, --alert-on-change, the Nagios and node_exporter outputs, and a host left as it was."""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime

import pytest
from e2ekit import guard_tables, nft_objects, run_probe

from netns import fleet

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]

TARGETS = 60
CONCURRENCY = 20
BATCH_TIMEOUT = 120.0


def batch(lab, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    argv = ["ip", "netns", "exec", lab.client_ns, sys.executable, "-m", "probe", "batch", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=BATCH_TIMEOUT, input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


@pytest.fixture(scope="module")
def boxes(lab):
    procs = fleet.start_boxes(lab)
    yield
    for proc in procs:
        lab.stop(proc)


@pytest.fixture(scope="module")
def fleet_run(lab, boxes, tmp_path_factory):
    """One batch of TARGETS targets with tcpdump on the client's interface, and every output."""
    work = tmp_path_factory.mktemp("batch")
    listing = work / "targets.txt"
    listing.write_text("\n".join(fleet.target_lines(TARGETS)) + "\n")
    with fleet.Tcpdump(lab, work / "tcpdump.pcap") as dump:
        run = batch(lab, str(listing), "--out", str(work / "out.jsonl"), "--concurrency", str(CONCURRENCY),
                    "--history", str(work / "history.sqlite"), "--prom", str(work / "probe.prom"),
                    "--pcap", str(work / "batch.pcap"))
    return run, fleet.read_documents(work / "out.jsonl"), dump, work


def test_every_target_gets_its_kinds_verdict(fleet_run):
    run, documents, _, _ = fleet_run
    assert run.returncode == 3, run.stderr  # the worst: interference
    assert sorted(d["line"] for d in documents) == list(range(3, 3 + TARGETS))
    wrong = [(d["line"], fleet.kind_of(d).name, fleet.outcome(d)) for d in documents
             if fleet.outcome(d) != fleet.kind_of(d).expect]
    assert not wrong, run.stderr
    assert collections.Counter(fleet.kind_of(d).name for d in documents) == {k.name: TARGETS // 6 for k in fleet.KINDS}
    assert "60 target(s)" in run.stderr and "middlebox-response" in run.stderr
    assert run.stdout == ""  # --out took the JSON lines


def test_same_verdicts_as_separate_probe_check_runs(lab, fleet_run):
    _, documents, _, _ = fleet_run
    batch_said = collections.defaultdict(set)
    for document in documents:
        batch_said[fleet.kind_of(document).name].add(fleet.outcome(document))
    for kind in fleet.KINDS:
        check = run_probe(lab, ["check", kind.url, "--resolve", kind.resolve, "--json"])
        assert batch_said[kind.name] == {fleet.outcome(check.document)}, (kind.name, check.describe())


def test_no_packet_is_lost_against_tcpdump(fleet_run):
    """Every packet tcpdump saw on the client's interface for a flow while the batch recorded
    it is in that flow's document, and every packet of the documents was on the wire. (Once an
    exchange is over, a late packet, e.g. the server's challenge ACK to our closing reset, is
    recorded by neither `check` nor `batch`.)"""
    _, documents, dump, _ = fleet_run
    records = list(dump.records())
    missed, invented, _late = fleet.compare(documents, records)
    assert not missed and not invented
    assert len(fleet.document_packets(documents)) >= 4 * TARGETS  # the comparison compared something


def test_one_guard_table_and_nothing_left(lab, fleet_run):
    assert guard_tables(lab) == []
    assert [item for item in nft_objects(lab, "ruleset") if "table" in item] == []


def test_history_prom_and_a_quiet_second_run(lab, fleet_run):
    _, documents, _, work = fleet_run
    db = sqlite3.connect(work / "history.sqlite")
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT target) FROM results").fetchone() == (TARGETS, 6)
    prom = (work / "probe.prom").read_text()
    assert 'verdict="middlebox-response"} 1.0' in prom and "probe_target_rtt_seconds{" in prom
    # the same verdicts again: --alert-on-change has nothing to say
    again = batch(lab, str(work / "targets.txt"), "--history", str(work / "history.sqlite"), "--alert-on-change",
                  "--concurrency", str(CONCURRENCY))
    assert (again.returncode, again.stdout, again.stderr) == (0, "", ""), again.stdout + again.stderr
    timeline = subprocess.run([sys.executable, "-m", "probe", "history", str(work / "history.sqlite"),
                               "blocked.example"], capture_output=True, text=True, timeout=60)
    assert timeline.returncode == 0, timeline.stderr
    assert timeline.stdout.count("middlebox-response") == 2 * TARGETS // 6 and "changed from" not in timeline.stdout


def test_a_change_speaks_and_nagios_says_critical(lab, boxes, tmp_path):
    history = str(tmp_path / "h.sqlite")
    clean = "http://www.example.com/ www.example.com:80:203.0.113.80\n"
    first = batch(lab, "-", "--history", history, "--alert-on-change", stdin=clean)
    assert (first.returncode, first.stdout) == (0, "")  # new and clean: nothing to mail
    blocked = "http://www.example.com/ www.example.com:80:203.0.113.80\nhttp://blocked.example/ " \
              "blocked.example:80:203.0.113.80\n"
    second = batch(lab, "-", "--history", history, "--alert-on-change", stdin=blocked)
    assert second.returncode == 3, second.stderr
    [line] = second.stdout.splitlines()  # only the new problem
    assert '"verdict": "middlebox-response"' in line and '"change": "new"' in line
    nagios = batch(lab, "-", "--nagios", stdin=blocked)
    assert nagios.returncode == 2, nagios.stderr
    assert nagios.stdout.startswith("PROBE CRITICAL - 1 interfered with of 2 targets | clean=1;")


def test_sigterm_mid_batch_removes_the_guard(lab, tmp_path):
    """Exchanges toward a silent address are in flight when SIGTERM comes: exit 143, no table."""
    import signal

    from e2ekit import BLACKHOLE_ADDR, finish, guard_table_of, start_probe, wait_for

    listing = tmp_path / "silent.txt"
    listing.write_text("".join(f"http://www.example.com/{i} www.example.com:80:{BLACKHOLE_ADDR}\n" for i in range(20)))
    proc = start_probe(lab, ["batch", str(listing)])
    try:
        def flows_in_the_set():
            table = guard_table_of(lab, proc.pid)
            if table is None:
                return False
            listing = lab.exec(lab.client_ns, ["nft", "list", "set", "inet", table, "flows"], check=False).stdout
            return "elements" in listing

        wait_for(flows_in_the_set, 20.0, "the batch's flows are in its guard's set")
        proc.send_signal(signal.SIGTERM)
        run = finish(proc, ["batch"], timeout=30.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert run.returncode == 143, run.stderr
    assert run.stderr.strip().endswith("probe: terminated")
    assert guard_tables(lab) == []


def test_the_server_is_left_with_nothing_half_open(lab, fleet_run):
    """After the batch, no socket of the lab's servers toward the batch's ports is still open or
    half open (TIME-WAIT is a closed connection's normal end): every flow ended with FINs or
    resets. (Only the batch's own ports: other tests' SIGTERMed runs may leave some.)"""
    from e2ekit import wait_for

    _, documents, _, _ = fleet_run
    ours = {f"{d['client']['address']}:{d['client']['port']}" for d in documents if d.get("client")}

    def leftovers():
        out = lab.exec(lab.server_ns, ["ss", "-Htan"]).stdout
        return [line for line in out.splitlines()
                if len(line.split()) >= 5 and line.split()[4] in ours and not line.startswith("TIME-WAIT")]

    wait_for(lambda: not leftovers(), 5.0, "the server to hold no open or half-open connection toward us")


def test_the_packet_rate_limit_is_honoured(lab, tmp_path):
    """`--rate 40`: 24 closed-port targets (one SYN each, and nothing else to send) go out at
    40 packets a second, give or take the bucket's burst of rate / 10, not all at once."""
    listing = tmp_path / "targets.txt"
    listing.write_text("".join(f"http://www.example.com:81/ www.example.com:81:{lab.server_addr}\n"
                               for _ in range(24)))
    run = batch(lab, str(listing), "--rate", "40", "--no-locate", "--concurrency", "100")
    documents = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(documents) == 24 and all(d["verdict"] == "server-reset" for d in documents), run.stderr
    syn_times = sorted(datetime.fromisoformat(d["started_at"]).timestamp() + p["t_ms"] / 1000
                       for d in documents for p in d["packets"] if p["dir"] == "sent" and p["flags"] == "S")
    assert len(syn_times) == 24
    spread = syn_times[-1] - syn_times[0]
    burst = 40 / 10
    assert spread >= (24 - burst - 1) / 40, f"24 SYNs in {spread:.3f} s: faster than 40 per second"
    assert spread <= 24 / 40 + 1.0, f"24 SYNs took {spread:.3f} s: far slower than the limit asks"
