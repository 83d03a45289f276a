"""Golden, for issue 20: a capture pasted as text analyses as the capture itself does.

For every lab capture in captures/ (raw IP, the client's side), the text real tcpdump prints of
it (`-vvXe`, `-xx`, `-X`), made here at test time, must give `probe analyze` the same flows,
verdicts, directions, hops and per-packet origins as the pcap; and so must the same text with
every line break removed and sentences (in several languages, some of them hex-looking) put
between the rows, as a web page or a ticket renders a paste. The lab's captures have no link
header, so each is also rewritten behind an Ethernet header (`ethernet_copy`), for `-e` header
lines with MAC addresses and `-xx`/`-XX` rows that start with the link header.

tcpdump prints times of day to the microsecond; the pcaps keep nanoseconds. Times are compared
relative to the first packet, to the microsecond.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from probe.files import text as textcap
from probe.files.flows import analyze_file
from probe.files.pcap import ip_packets

HERE = Path(__file__).parent
CAPTURES = sorted((HERE / "captures").glob("*.pcap"))
TCPDUMP = shutil.which("tcpdump")
pytestmark = pytest.mark.skipif(TCPDUMP is None, reason="needs tcpdump (CI installs it)")

RAW_FLAGS = {"vvXe": ["-vvXe"], "xx": ["-xx"], "X": ["-X"]}
ETHERNET_FLAGS = {"vvXe": ["-vvXe"], "xx": ["-xx"], "X": ["-X"], "XXe": ["-XXe"], "vvxxe": ["-vvxxe"]}

SENTENCES = (
    "Here the customer's connection was reset.",
    "这里连接被重置了，客户说页面打不开。",
    "Ici la connexion a été coupée par le pare-feu.",
    "Здесь соединение было сброшено.",
    "added by support: see the face value 0x4500 in the first row",  # hex-looking words, glued to the hex
    "Decided at 21:55 after the cafe opened; beef, dead, 0000 and ffff mean nothing here.",
    "<b>Note:</b> the next row is the important one &mdash; 0x0010 is where TCP starts.",
    "客户端 192.0.2.10 -> 服务器 203.0.113.80 (the path 192.0.2.1 > 198.51.100.2 looked fine)",
)


def tcpdump_text(pcap: Path, flags: list[str]) -> str:
    done = subprocess.run([TCPDUMP, "-r", str(pcap), "-nn", *flags], capture_output=True, text=True, timeout=60,
                          env={"TZ": "UTC", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_together(text: str) -> str:
    """Every line break removed, a sentence after every second hex row (glued on, as pasted)."""
    out, rows = [], 0
    for line in text.splitlines():
        out.append(line)
        if line.lstrip().startswith("0x"):
            rows += 1
            if rows % 2:
                out.append(SENTENCES[(rows // 2) % len(SENTENCES)])
    return "".join(out)


def ethernet_copy(pcap: Path, out: Path) -> Path:
    """The same packets behind an Ethernet header (each end its own MAC address)."""
    import dpkt

    with open(pcap, "rb") as source, open(out, "wb") as handle:
        reader = dpkt.pcap.Reader(source)
        writer = dpkt.pcap.Writer(handle, snaplen=65535, linktype=dpkt.pcap.DLT_EN10MB, nano=True)
        first_source = None
        for timestamp, packet in reader:
            first_source = first_source or packet[12:16]
            ours, theirs = b"\x52\x54\x00\x0a\x00\x0a", b"\x52\x54\x00\x50\x00\x50"
            dst, src = (theirs, ours) if packet[12:16] == first_source else (ours, theirs)
            writer.writepkt(dst + src + b"\x08\x00" + packet, ts=timestamp)
    return out


def judged(path: Path) -> list[tuple]:
    """What must not change between a capture and its text: per flow, its ends, the verdict, and
    every packet's headers and origin."""
    results, _totals = analyze_file(str(path))
    flows = []
    for result in results:
        flow, analysis = result.flow, result.analysis
        t0 = result.packets[0].t
        packets = [(p.src, p.dst, p.flags, p.seq, p.ack, p.ttl, p.ip_id, p.win, p.payload, p.proto)
                   for p in result.packets]
        flows.append(((flow.client, flow.client_port, flow.server, flow.server_port, flow.vantage),
                      analysis.verdict, analysis.direction, analysis.hop,
                      [a.origin for a in analysis.attributions], packets, [p.t - t0 for p in result.packets]))
    return flows


def assert_same_flows(got: list[tuple], expected: list[tuple]) -> None:
    """Equal but for the times, which tcpdump printed to the microsecond (truncating): within 1.5 us."""
    assert [flow[:-1] for flow in got] == [flow[:-1] for flow in expected]
    for (*_rest, times), (*_same, expected_times) in zip(got, expected):
        assert max(abs(a - b) for a, b in zip(times, expected_times)) < 1.5e-6


def variants():
    for capture in CAPTURES:
        for name in RAW_FLAGS:
            yield pytest.param(capture, "raw", name, id=f"{capture.stem}-{name}")
    for capture in CAPTURES:
        for name in ETHERNET_FLAGS:
            yield pytest.param(capture, "ethernet", name, id=f"{capture.stem}-ethernet-{name}")


@pytest.mark.parametrize("capture, link, flags", list(variants()))
@pytest.mark.parametrize("shape", ["as-printed", "run-together"])
def test_text_analyses_as_the_capture(capture, link, flags, shape, tmp_path):
    pcap = capture if link == "raw" else ethernet_copy(capture, tmp_path / "ethernet.pcap")
    text = tcpdump_text(pcap, (RAW_FLAGS if link == "raw" else ETHERNET_FLAGS)[flags])
    if shape == "run-together":
        text = run_together(text)
        assert "\n" not in text
    pasted = tmp_path / "pasted.txt"
    pasted.write_text(text)

    expected = judged(capture)
    assert expected, "the golden capture holds a flow"
    assert_same_flows(judged(pasted), expected)

    # the bytes themselves: every IP packet of the capture, in order
    reading = textcap.parse(text)
    from_pcap = [packet for _t, packet in ip_packets(str(pcap))]
    assert [textcap_ip(frame) for frame in reading.frames] == from_pcap
    assert not reading.lost and all(not frame.lost and not frame.cut and frame.timed for frame in reading.frames)
    assert all(frame.ip_checksum for frame in reading.frames)
    # -xx rows of the Ethernet copy hold the link header; -x rows and the raw capture's do not
    with_link = link == "ethernet" and flags in ("xx", "XXe", "vvxxe")
    assert {frame.linktype for frame in reading.frames} == {1 if with_link else 101}
    # the sentences are the only text not understood (a run-together paste is one line)
    assert reading.not_understood == ((1,) if shape == "run-together" else ())


def textcap_ip(frame) -> bytes:
    from probe.files.pcap import ip_payload

    return ip_payload(frame.linktype, frame.data)


@pytest.mark.parametrize("capture", CAPTURES[:1] + [c for c in CAPTURES if "06" in c.stem], ids=lambda c: c.stem)
def test_the_command_line_gives_the_same_document(capture, tmp_path):
    """`probe analyze TEXT --json` and `probe analyze PCAP --json`: the same flows, and the report of
    what was read in totals.warnings (and on stderr)."""
    import json
    import sys

    pasted = tmp_path / "ticket.txt"
    pasted.write_text(run_together(tcpdump_text(capture, ["-vvXe"])))
    documents = {}
    for path in (capture, pasted):
        done = subprocess.run([sys.executable, "-m", "probe", "analyze", str(path), "--json"], capture_output=True,
                              text=True, timeout=120)
        documents[path] = (done.returncode, json.loads(done.stdout), done.stderr)
    code, from_pcap, _stderr = documents[capture]
    text_code, from_text, stderr = documents[pasted]
    assert text_code == code
    keep = ("client", "server", "vantage", "verdict", "direction", "hop")
    assert [{k: f[k] for k in keep} for f in from_text["flows"]] == \
        [{k: f[k] for k in keep} for f in from_pcap["flows"]]
    assert [[p["origin"] for p in f["packets"]] for f in from_text["flows"]] == \
        [[p["origin"] for p in f["packets"]] for f in from_pcap["flows"]]
    warnings = from_text["totals"]["warnings"]
    assert warnings[0].startswith(f"{pasted} is text: {len(list(ip_packets(str(capture))))} packet(s) read from "
                                  f"tcpdump hex rows")
    assert any("1970-01-01 (UTC) is assumed" in w for w in warnings)
    assert any(w.endswith("not understood: line(s) 1 of 1") for w in warnings)
    assert all(f"probe: {w}" in stderr for w in warnings)
