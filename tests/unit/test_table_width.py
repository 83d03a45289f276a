"""The packet table fits the terminal: one line per packet at 80 columns with its evidence under
it, the evidence in a column of its own when the terminal is wide (issue 18)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from probe.render.report import EVIDENCE_INDENT, SHORT_EVIDENCE, WIDE_TABLE, packet_table
from tests.golden.own_flow import own_flow

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "captures"
CAPTURES = sorted(GOLDEN.glob("*.pcap"))


def judged(capture: Path):
    result = own_flow(capture)
    return result.packets, result.flow, result.analysis


@pytest.mark.parametrize("capture", CAPTURES, ids=[c.stem for c in CAPTURES])
@pytest.mark.parametrize("width", [80, 100])
def test_at_a_narrow_width_every_line_fits_and_every_packet_has_one_row(capture, width):
    packets, flow, analysis = judged(capture)
    lines = packet_table(packets, flow, analysis, width=width).splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    rows = [line for line in lines[1:] if not line.startswith(EVIDENCE_INDENT)]
    assert [int(row.split()[0]) for row in rows] == list(range(1, len(packets) + 1))


def test_the_evidence_is_under_its_packet_shortened_unless_verbose():
    packets, flow, analysis = judged(GOLDEN / "05-tap-rst-burst.pcap")
    forged = next(i for i, a in enumerate(analysis.attributions) if a.origin == "middlebox")
    assert len(analysis.attributions[forged].evidence) > SHORT_EVIDENCE  # what the test relies on

    def evidence_of(table: str, number: int) -> list[str]:
        lines = table.splitlines()
        start = next(i for i, line in enumerate(lines) if line.split()[:1] == [str(number)])
        block = []
        for line in lines[start + 1:]:
            if not line.startswith(EVIDENCE_INDENT):
                break
            block.append(line.strip())
        return block

    short = evidence_of(packet_table(packets, flow, analysis, width=80), forged + 1)
    full = evidence_of(packet_table(packets, flow, analysis, width=80, verbose=True), forged + 1)
    assert short[-1].startswith("(and ") and short[-1].endswith(" more: -v)")
    assert " ".join(full).startswith(" ".join(short[:-1]))
    assert len(full) > len(short)


def test_a_wide_terminal_gets_the_evidence_column():
    packets, flow, analysis = judged(GOLDEN / "06-field-report.pcap")
    header = packet_table(packets, flow, analysis, width=WIDE_TABLE).splitlines()[0].split()
    assert header[-3:] == ["info", "origin", "evidence"] and "from" in header
    assert packet_table(packets, flow, analysis, width=WIDE_TABLE - 1).splitlines()[0].split()[-1] == "info"


@pytest.mark.parametrize("columns", ["80", "200"])
def test_the_command_follows_COLUMNS(columns):
    result = subprocess.run([sys.executable, "-m", "probe", "analyze", "-v", str(GOLDEN / "06-field-report.pcap")],
                            capture_output=True, text=True, env={"COLUMNS": columns, "PATH": "/usr/bin:/bin"},
                            cwd=Path(__file__).resolve().parent.parent.parent)
    table = [line for line in result.stdout.splitlines() if line.lstrip().startswith("#")]
    assert table, result.stdout + result.stderr
    assert ("evidence" in table[0].split()) == (int(columns) >= WIDE_TABLE)


def test_the_window_column_is_scaled_as_tshark_scales_it():
    """RFC 7323: both SYNs carried a window scale (ours 7, the server's 10 in the lab), so every later
    segment's window is its field shifted by its sender's scale; SYNs and resets are shown as sent."""
    packets, flow, analysis = judged(GOLDEN / "05-tap-rst-burst.pcap")
    lines = packet_table(packets, flow, analysis, width=80).splitlines()
    header = lines[0].split()
    column = header.index("win")
    rows = {int(line.split()[0]): line for line in lines[1:] if not line.startswith(EVIDENCE_INDENT)}
    syn, synack = packets[0], packets[1]
    ours = dict(syn.options)["WScale"]
    theirs = dict(synack.options)["WScale"]
    assert ours and theirs  # what the test relies on: scaled windows differ from the field
    for n, packet in enumerate(packets, 1):
        expected = packet.win if "S" in packet.flags or "R" in packet.flags else \
            packet.win << (ours if flow.sent_by_client(packet) else theirs)
        cells = rows[n].split()
        # rows without an ack have one cell fewer before the window
        win = cells[column] if "A" in packet.flags else cells[column - 1]
        assert int(win) == expected, rows[n]
