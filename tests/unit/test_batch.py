"""`probe batch`'s pure parts: the target list, the exit code of many verdicts, the history
and what changed, the Nagios plugin output and the node_exporter textfile."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from probe.jobs.targets import Line, Tally, parse_line, read_lines
from probe.outcome import worst as worst_exit
from probe.errors import UsageError
from probe.jobs.store import History, targets, timeline
from probe.render.monitor import CRITICAL, OK, UNKNOWN, WARNING, metric_of, nagios_output, nagios_state, write_prom
from probe.network.target import Resolve

from .test_cli import guarded_probe


def document(verdict, url="http://www.example.com/", address="198.51.100.80", rtt=50.0, **extra) -> dict:
    family = {"family": "ipv6" if ":" in address else "ipv4"} if address else {}
    return {"schema": "probe/1", "command": "check", "target": {"url": url, "host": "www.example.com",
                                                                 "address": address, "port": 80, **family},
            "verdict": verdict, "direction": extra.get("direction"), "hop": extra.get("hop"), "rtt_ms": rtt,
            "packets": [], "explanation": "x", **({"error": extra["error"]} if "error" in extra else {})}


# -- the list -------------------------------------------------------------------------------------

def test_lines_comments_and_resolve_entries():
    text = ["# fleet\n", "\n", "http://a.example/  # front page\n", "b.example:8080 b.example:8080:198.51.100.7\n",
            "   \n", "http://c.example/x --resolve c.example:80:203.0.113.9\n"]
    lines = list(read_lines(text))
    assert [(line.number, line.url) for line in lines] == [(3, "http://a.example/"), (4, "b.example:8080"),
                                                            (6, "http://c.example/x")]
    assert lines[1].resolves == (Resolve("b.example", 8080, "198.51.100.7"),)
    assert lines[2].resolves == (Resolve("c.example", 80, "203.0.113.9"),)


def test_target_names_for_the_history():
    assert Line(1, "www.example.com").key == "http://www.example.com/"
    assert Line(1, "http://www.example.com:80/a", (Resolve("www.example.com", 80, "198.51.100.80"),)).key == \
        "http://www.example.com/a @198.51.100.80"
    # an entry for another host or port does not pin this target
    assert Line(1, "http://www.example.com/", (Resolve("other.example", 80, "198.51.100.80"),)).key == \
        "http://www.example.com/"


@pytest.mark.parametrize("text, message", [
    ("ftp://a.example/", "line 7: unsupported scheme"),
    ("http://a.example/ a.example:80", "line 7: bad --resolve"),
    ("http://a.example/ a.example:80:not-an-address", "line 7: 'not-an-address' is not an IP address"),
    ("http://a.example/ 'unclosed", "line 7: No closing quotation"),
])
def test_bad_lines_name_their_number(text, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_line(text, 7)


def test_minus_4_and_minus_6_pick_a_lines_pinned_address_of_their_family_or_refuse_the_line():
    text = "http://a.example/ a.example:80:198.51.100.7 a.example:80:[2001:db8::7]"
    assert parse_line(text, 1, 6).key == "http://a.example/ @2001:db8::7"
    assert parse_line(text, 1, 4).key == "http://a.example/ @198.51.100.7"
    assert parse_line(text, 1).key == "http://a.example/ @198.51.100.7"  # the first, as without -4/-6
    with pytest.raises(UsageError, match=re.escape("line 3: --resolve address 198.51.100.7 is an IPv4 address, "
                                                   "but -6 asks for IPv6")):
        parse_line("http://a.example/ a.example:80:198.51.100.7", 3, 6)
    with pytest.raises(UsageError, match=re.escape("line 4: the URL's address 2001:db8::7 is an IPv6 address, "
                                                   "but -4 asks for IPv4")):
        parse_line("http://[2001:db8::7]/", 4, 4)
    assert parse_line("http://b.example/ a.example:80:198.51.100.7", 5, 6).family == 6  # not this host: DNS decides


def test_worst_exit_code():
    assert worst_exit([]) == 0
    assert worst_exit([0, 0]) == 0
    assert worst_exit([0, 4]) == 4
    assert worst_exit([4, 1, 0]) == 1
    assert worst_exit([4, 3, 1, 0]) == 3  # interference is what a batch is run to find


def test_tally_keeps_a_bounded_list_of_problems():
    tally = Tally()
    for i in range(200):
        tally.add(document("server-reset", url=f"http://{i}.example/"), 4)
    tally.add(document("clean", rtt=80.0), 0)
    assert tally.total == 201 and tally.counts["server-reset"] == 200
    assert len(tally.problems) == 50 and tally.problems_left_out == 150
    assert tally.rtt_max == 80.0 and tally.exit_code == 4


# -- history --------------------------------------------------------------------------------------

def test_history_says_what_changed(tmp_path):
    path = str(tmp_path / "h.sqlite")
    clock = iter(range(1000, 2000)).__next__
    runs = [["clean", "clean"], ["clean", "middlebox-reset"], ["clean", "middlebox-reset"], ["clean", "clean"]]
    changes = []
    for states in runs:
        history = History(path, clock=clock)
        changes.append([history.record(key, document(state), 0).kind for key, state in zip(["a", "b"], states)])
        history.close(0)
    assert changes == [["new", "new"], [None, "changed"], [None, None], [None, "changed"]]
    name, entries = timeline(path, "b")
    assert name == "b" and [e.state for e in entries] == ["clean", "middlebox-reset", "middlebox-reset", "clean"]
    assert [e.changed_from for e in entries] == [None, "clean", None, "middlebox-reset"]
    summary = {row["target"]: row for row in targets(path)}
    assert summary["b"]["changes"] == 2 and summary["b"]["runs"] == 4 and summary["a"]["changes"] == 0


def test_alert_speaks_for_changes_and_new_problems_only(tmp_path):
    history = History(str(tmp_path / "h.sqlite"))
    assert not history.record("a", document("clean"), 0).speaks("clean")  # new and clean: silent
    assert history.record("b", document("server-reset"), 4).speaks("server-reset")  # new problem
    assert not history.record("b", document("server-reset"), 4).speaks("server-reset")
    change = history.record("b", document("clean"), 0)  # recovery
    assert change.speaks("clean") and change.previous == "server-reset"
    assert history.record("c", document(None, error="no route"), 1).speaks("error")
    history.close(4)


def test_timeline_needs_an_unambiguous_target(tmp_path):
    from probe.errors import ProbeError

    path = str(tmp_path / "h.sqlite")
    history = History(path)
    history.record("http://a.example/", document("clean"), 0)
    history.record("http://ab.example/", document("clean"), 0)
    history.close(0)
    with pytest.raises(ProbeError, match="matches 2 targets"):
        timeline(path, "example")
    assert timeline(path, "http://a.example/")[0] == "http://a.example/"
    with pytest.raises(ProbeError, match="no history file"):
        timeline(str(tmp_path / "missing.sqlite"), "a")


# -- monitoring -----------------------------------------------------------------------------------

def test_nagios_states():
    assert nagios_state([0, 0]) == OK
    assert nagios_state([0, 4]) == WARNING
    assert nagios_state([0, 1]) == UNKNOWN
    assert nagios_state([1, 4]) == WARNING
    assert nagios_state([4, 3, 1]) == CRITICAL


def test_nagios_output_status_line_and_perfdata():
    tally = Tally()
    tally.add(document("clean", rtt=40.0), 0)
    tally.add(document("middlebox-reset", url="http://bad.example/", direction="to-client", hop=2, rtt=60.0), 3)
    text, state = nagios_output(tally)
    status, *details = text.splitlines()
    assert state == CRITICAL
    assert status == ("PROBE CRITICAL - 1 interfered with of 2 targets | clean=1;;;0;2 interfered=1;;1;0;2 "
                      "failed=0;1;;0;2 unmeasured=0;;;0;2 rtt_max=60.000ms;;;0; rtt_mean=50.000ms;;;0;")
    assert details == ["http://bad.example/ [198.51.100.80]: middlebox-reset to-client at hop 2"]
    assert nagios_output(Tally())[1] == UNKNOWN


def test_prom_textfile(tmp_path):
    path = tmp_path / "probe.prom"
    path.write_text("old\n")
    metrics = [metric_of(document("clean", rtt=51.5), 0), metric_of(document(None, url="http://x.example/",
                                                                              address=None, rtt=None, error="e"), 1)]
    write_prom(str(path), metrics, finished_at=1700000000.0, seconds=7.5, exit_code=1)
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(path.read_text()) for sample in family.samples}
    labels = (("address", "198.51.100.80"), ("family", "ipv4"), ("port", "80"), ("url", "http://www.example.com/"))

    def verdict(name, of=labels):
        return samples[("probe_target_verdict", tuple(sorted(of + (("verdict", name),))))]

    assert verdict("clean") == 1 and verdict("middlebox-reset") == 0 and verdict("error") == 0
    assert samples[("probe_target_rtt_seconds", labels)] == 0.0515
    unmeasured = (("address", ""), ("family", ""), ("port", "80"), ("url", "http://x.example/"))
    assert verdict("error", unmeasured) == 1 and verdict("clean", unmeasured) == 0
    assert ("probe_target_rtt_seconds", unmeasured) not in samples
    assert samples[("probe_batch_exit_code", ())] == 1 and samples[("probe_batch_targets", ())] == 2
    assert os.listdir(tmp_path) == ["probe.prom"]  # the temporary file was renamed over it


def test_prom_textfile_says_which_family_a_target_was_probed_over(tmp_path):
    """A site can fail over one family and not the other (issue 15): the family is a label."""
    path = tmp_path / "probe.prom"
    metrics = [metric_of(document("clean"), 0), metric_of(document("middlebox-reset", address="2001:db8::80"), 3)]
    write_prom(str(path), metrics, finished_at=1700000000.0, seconds=1.0, exit_code=3)
    text = path.read_text()
    assert 'address="2001:db8::80",family="ipv6"' in text and 'address="198.51.100.80",family="ipv4"' in text


# -- the command, refused before it sends anything --------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--alert-on-change"], "--alert-on-change needs --history"),
    (["--concurrency", "0"], "--concurrency must be from 1 to 1000"),
    (["--rate", "0"], "--rate must be more than 0"),
    (["--nagios", "--history", "h", "--alert-on-change"], "do not go together"),
])
def test_bad_options(tmp_path, args, message):
    listing = tmp_path / "targets"
    listing.write_text("http://www.example.com/\n")
    run = guarded_probe("batch", str(listing), *args)
    if "--nagios" in args:  # a plugin that cannot start is UNKNOWN to Nagios, not CRITICAL (2)
        assert run.returncode == 3 and run.stdout.startswith("PROBE UNKNOWN - "), run.stderr
    else:
        assert run.returncode == 2, run.stderr
    assert message in run.stderr and run.stderr.count("\n") == 1


def test_bad_line_is_refused_before_anything_is_sent(tmp_path):
    listing = tmp_path / "targets"
    listing.write_text("http://www.example.com/\n\nhttps://www.example.com/\nftp://www.example.com/\n")
    run = guarded_probe("batch", str(listing))
    assert run.returncode == 2, run.stderr
    assert run.stderr == ("probe: line 4: unsupported scheme 'ftp': only http:// and https:// URLs can be "
                          "probed\n")


def test_unreadable_list(tmp_path):
    run = guarded_probe("batch", str(tmp_path / "missing"))
    assert run.returncode == 1 and "cannot read" in run.stderr


def test_batch_import_stays_light():
    code = "import sys, probe.cli; print(any(m.startswith(('scapy', 'tqdm', 'prometheus_client', 'sqlite3')) " \
           "for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_one_severity_order_for_batch_analyze_and_monitoring():
    """Issue 12: analyze and batch ordered exit codes two ways; now both call probe.outcome.worst."""
    from probe.outcome import SEVERITY, ExitStatus, worst

    assert worst([0, 4, 1]) == worst([4, 1, 0]) == ExitStatus.FAILED
    assert worst([1, 3, 4]) == 3 and worst([]) == 0 and worst([4, 0]) == 4
    assert list(SEVERITY)[-1] is ExitStatus.INTERFERENCE
    assert nagios_state([0, 4]) == WARNING and nagios_state([1, 4]) == WARNING and nagios_state([1, 0]) == UNKNOWN
    assert nagios_state([3, 1]) == CRITICAL and nagios_state([]) == OK
