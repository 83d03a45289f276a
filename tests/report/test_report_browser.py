"""`--report FILE.html` rendered by a real browser (headless Chromium, Debian's package).

Each case is a recorded capture of a lab scenario (tests/golden), analysed by the real command
line with `--report` and `--json`: what the page must show is read from the JSON document of
the same run, so a report that drops, adds or mis-marks a packet fails. The screenshot test
fails on a blank or broken page: the PNG must have the window's size, not be one colour, hold
ink in a sane proportion, and show the forged packets in red where there are any.
"""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.report.browser import CHROMIUM, WHY_ABSENT, dump_dom, read_png, screenshot

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=WHY_ABSENT)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
CASES = {  # name: (capture files and options, the verdict the lab scenario expects)
    "field-report": ([GOLDEN / "captures" / "06-field-report.pcap"], "middlebox-reset"),
    "tap": ([GOLDEN / "captures" / "05-tap-rst-burst.pcap"], "middlebox-reset"),
    "block-page": ([GOLDEN / "captures" / "07-block-page.pcap"], "middlebox-response"),
    # the probe's own flow (the first: the captures also hold the run's TTL-limited probes)
    "two-ended": ([GOLDEN / "two-ended" / "06-field-report.pcap", GOLDEN / "two-ended" / "06-field-report.server.pcap",
                   "--flow", "192.0.2.10:58853"], "middlebox-reset"),
}
WIDTH, HEIGHT = 1000, 1400


def _probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "probe", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """name -> (the report, the JSON document of the same analysis)."""
    out = tmp_path_factory.mktemp("reports")
    made = {}
    for name, (files, _verdict) in CASES.items():
        page = out / f"{name}.html"
        run = _probe("analyze", *map(str, files), "--json", "--report", str(page))
        assert run.returncode == 3, run.stderr
        made[name] = (page, json.loads(run.stdout))
    return made


class _Elements(HTMLParser):
    """Every element of a serialised DOM: (tag, attributes, text directly inside it)."""

    def __init__(self):
        super().__init__()
        self.elements: list[list] = []
        self.open: list[list] = []

    def handle_starttag(self, tag, attrs):
        element = [tag, dict(attrs), ""]
        self.elements.append(element)
        if tag not in ("meta", "br", "path", "line") and not self.get_starttag_text().endswith("/>"):
            self.open.append(element)

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self.open:
            self.open[-1][2] += data

    def having(self, tag: str, css: str | None = None) -> list[list]:
        return [e for e in self.elements if e[0] == tag and (css is None or css in (e[1].get("class") or "").split())]


def _elements(page: Path) -> _Elements:
    parser = _Elements()
    parser.feed(dump_dom(page))
    return parser


def _drawn_flow(document: dict) -> dict:
    flows = [flow for flow in document["flows"] if flow["verdict"] != "clean"]
    assert len(flows) == 1, "each case is one exchange that is not clean"
    return flows[0]


@pytest.mark.parametrize("name", CASES)
def test_the_browser_shows_the_verdict_ladder_and_evidence(reports, name):
    page, document = reports[name]
    flow = _drawn_flow(document)
    dom = _elements(page)
    verdicts = [e[2] for e in dom.elements if e[1].get("id") == "verdict"]
    assert verdicts == [CASES[name][1]] == [flow["verdict"]]
    ladders = dom.having("svg", "ladder")
    assert len(ladders) == 1
    drawn = dom.having("g", "packet")
    forged_drawn = dom.having("g", "forged")
    table_rows = [e for e in dom.having("tr") if e[1].get("class") in (None, "", "forged")]
    if "server_side" in flow:
        client, server = flow["packets"], flow["server_side"]["packets"]
        assert len(drawn) == len(client) + len(server) - len(flow["matched"])
        assert len(forged_drawn) == len(flow["forged"]) >= 1
        assert len(dom.having("g", "never-arrived")) == len(flow["never_arrived"]) >= 1
        assert len(dom.having("tr", "forged")) == len(flow["forged"])  # blamed in the server's table
        assert len(table_rows) - 2 == len(client) + len(server)  # less the two header rows
    else:
        forged = [p for p in flow["packets"] if p["origin"] == "middlebox"]
        assert len(drawn) == len(flow["packets"])
        assert len(forged_drawn) == len(forged) == len(dom.having("tr", "forged"))
        assert len(table_rows) - 2 == len(flow["packets"]) + 1  # less the headers, plus the flows table's row
        if name != "field-report":  # the field report's forged reset went to the server: the client saw none
            assert forged
    for n, packet in enumerate(flow["packets"], 1):
        for sentence in packet["evidence"]:
            assert any(e[2] == sentence for e in dom.having("li")), sentence
    assert flow["explanation"].split(". ")[0] in " ".join(e[2] for e in dom.having("p"))
    if name == "block-page":  # the forged page's status line is on its arrow
        assert any("FORGED" in e[2] and "HTTP/1.1 403 Forbidden" in e[2] for e in dom.having("text"))


@pytest.mark.parametrize("name", CASES)
def test_the_report_fetches_nothing(reports, name):
    dom = _elements(reports[name][0])
    assert not dom.having("script") and not dom.having("link") and not dom.having("img")
    for _tag, attributes, _text in dom.elements:
        for key in ("src", "href"):
            assert key not in attributes, attributes


def _looks_rendered(png: Path, expect_red: bool) -> list[str]:
    """What is wrong with a screenshot of a report (nothing: an empty list)."""
    width, height, rows = read_png(png)
    problems = []
    if (width, height) != (WIDTH, HEIGHT):
        problems.append(f"size {width}x{height}")
    pixels = [row[i:i + 3] for row in rows[::4] for i in range(0, len(row), 12)]  # every 4th pixel each way
    colours = set(pixels)
    ink = sum(1 for p in pixels if sum(p) < 600) / len(pixels)
    red = sum(1 for r, g, b in pixels if r > 150 and g < 80 and b < 80)
    if len(colours) < 8:
        problems.append(f"{len(colours)} colour(s)")
    if not 0.01 < ink < 0.6:
        problems.append(f"ink covers {ink:.1%} of the page")
    if expect_red and red < 20:
        problems.append(f"{red} red pixel(s) where forged packets are drawn")
    return problems


@pytest.mark.parametrize("name", CASES)
def test_the_screenshot_is_a_page(reports, tmp_path, name):
    page, document = reports[name]
    png = screenshot(page, tmp_path / f"{name}.png", WIDTH, HEIGHT)
    assert _looks_rendered(png, expect_red=True) == []  # every case's verdict is an interference: red


def test_the_screenshot_check_fails_on_a_blank_page(tmp_path):
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    problems = _looks_rendered(screenshot(blank, tmp_path / "blank.png", WIDTH, HEIGHT), expect_red=True)
    assert any("colour" in p for p in problems) and any("ink" in p for p in problems)
