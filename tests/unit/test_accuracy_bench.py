"""The accuracy matrix's figures (bench/locate_accuracy.py): what counts as the hop right and as
the bracket holding the box, read from `probe trace --json` documents."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "locate_accuracy.py"
spec = importlib.util.spec_from_file_location("locate_accuracy", BENCH)
bench = importlib.util.module_from_spec(spec)
sys.modules["locate_accuracy"] = bench  # dataclasses look their module up there
spec.loader.exec_module(bench)


def document(hop, bracket):
    return json.dumps({"hop": hop, "bracket": None if bracket is None else
                       {"passed": bracket[0], "not_reached": bracket[1]}})


def test_the_bracket_holds_the_box_after_passed_and_before_not_reached():
    in_path = bench.outcome_of(document(2, (2, 3)), 3)
    assert in_path.hop_right(2) and in_path.bracket_holds(2) and not in_path.bracket_holds(3)
    on_path = bench.outcome_of(document(2, (1, 3)), 3)
    assert on_path.bracket_holds(2) and not on_path.bracket_holds(3)
    wrong = bench.outcome_of(document(3, (2, 4)), 3)
    assert not wrong.hop_right(2) and wrong.bracket_holds(2)


def test_no_document_or_no_location_counts_as_wrong():
    for outcome in (bench.outcome_of("Traceback ...", 1), bench.outcome_of(document(None, None), 0)):
        assert not outcome.hop_right(2) and not outcome.bracket_holds(2)


def test_a_cell_counts_both_figures_over_the_runs():
    outcomes = [bench.outcome_of(document(2, (2, 3)), 3), bench.outcome_of(document(3, (2, 4)), 3),
                bench.outcome_of(document(None, None), 0)]
    assert bench.cell(outcomes, 2) == "1/3 · 2/3"
    assert bench.cell([], 2) == "-"
    text = bench.table({("tap", "none", 2): outcomes}, ["tap"], ["none", "ecmp"], [2])
    assert "1/3 · 2/3" in text and "| ecmp" in text


def test_under_ecmp_runs_whose_flow_took_the_clean_branch_are_counted_apart():
    from dataclasses import replace

    met = replace(bench.outcome_of(document(2, (1, 3)), 3), met_box=True, verdict="middlebox-reset")
    missed = replace(bench.outcome_of(document(None, None), 3), met_box=True, verdict="middlebox-reset")
    clean = replace(bench.outcome_of(document(None, None), 0), met_box=False, verdict="clean")
    wrongly = replace(clean, verdict="middlebox-reset")
    assert bench.cell([met, clean, clean], 2) == "1/1 · 1/1 (+2 clean)"
    assert bench.cell([met, missed, clean], 2) == "1/2 · 1/2 (+1 clean)"  # a miss is never hidden
    assert bench.cell([met, wrongly], 2) == "1/1 · 1/1 (+1 clean, 1 not said clean)"


def test_multipath_is_judged_against_the_labs_counters():
    from dataclasses import replace

    base = bench.outcome_of(document(2, (1, 3)), 3)
    runs = [replace(base, multipath_said=True, both_branches=True),
            replace(base, multipath_said=False, both_branches=False),
            replace(base, multipath_said=False, both_branches=True)]
    assert bench.multipath_line(runs) == "multipath said as the lab saw it: 2/3 (2 with both)"
    assert bench.multipath_line([base]) is None


def test_the_readme_table_goes_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{bench.MARKERS[0]}\nold\n{bench.MARKERS[1]}\nafter\n")
    bench.write_readme(readme, "new table")
    assert readme.read_text() == f"before\n{bench.MARKERS[0]}\nnew table\n{bench.MARKERS[1]}\nafter\n"


def test_kinds_and_lists_are_checked():
    assert bench.KIND_KEYS["blockpage"] == "block page" and len(bench.KINDS) == 7
    with pytest.raises(Exception, match="unknown hop"):
        bench.parse_list("1,9", ["1", "2"], "hop")


def test_politeness_sums_up_packets_and_what_was_left_open():
    from dataclasses import replace

    base = bench.outcome_of(document(2, (1, 3)), 3)
    runs = [replace(base, packets_sent=40, left_open=0), replace(base, packets_sent=61, left_open=1)]
    assert bench.politeness_line(runs) == ("packets to the server per run: max 61, mean 50; "
                                           "server sockets left open: 1")
    assert bench.politeness_line([base]) is None
    runs.append(replace(base, packets_sent=50, left_open=2, left_states=("SYN-RECV", "FIN-WAIT-1")))
    assert bench.politeness_line(runs).endswith("server sockets left open: 3 (FIN-WAIT-1 1, SYN-RECV 1)")
