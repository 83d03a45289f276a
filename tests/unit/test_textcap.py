"""Text captures (probe/files/text.py): the formats, the times, the report, and the command line.

The texts are made here, at test time, by the real tools where they are installed (tcpdump,
tshark, text2pcap, od, xxd, hexdump), from the lab's golden captures or from packets made with
scapy, so that what is tested is what those tools print, not what this file imagines they do.
Wireshark's "Copy as Hex Dump" has no command line; `wireshark_hex_dump` writes its layout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

from probe.files import text as textcap
from probe.errors import ProbeError
from probe.files.pcap import ip_payload

GOLDEN = Path(__file__).parent.parent / "golden" / "captures"
FIELD_REPORT = GOLDEN / "06-field-report.pcap"
BLOCK_PAGE = GOLDEN / "07-block-page.pcap"  # an HTTP block page: "<" and blanks in the ASCII column
TAP = GOLDEN / "05-tap-rst-burst.pcap"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"needs {name}")
    return found


def run_tool(*arguments: str) -> str:
    done = subprocess.run([tool(arguments[0]), *arguments[1:]], capture_output=True, text=True, timeout=60,
                          env={"TZ": "UTC", "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert done.returncode == 0, done.stderr
    return done.stdout


def tcpdump(pcap: Path, *flags: str) -> str:
    return run_tool("tcpdump", "-r", str(pcap), "-nn", *flags)


def frames_and_times(pcap: Path) -> list[tuple[float, bytes]]:
    with open(pcap, "rb") as handle:
        return [(float(t), frame) for t, frame in dpkt.pcap.Reader(handle)]


def relative(times: list[float]) -> list[float]:
    return [t - times[0] for t in times]


def write_pcap(path: Path, packets: list[tuple[float, bytes]], linktype: int = 101, caplen: int | None = None):
    """A classic pcap; with `caplen`, every record cut to it and its length on the wire kept."""
    from scapy.utils import RawPcapWriter

    writer = RawPcapWriter(str(path), linktype=linktype, nano=True)
    writer.write_header(None)
    for t, frame in packets:
        seconds = int(t)
        data = frame[:caplen] if caplen else frame
        writer.write_packet(data, sec=seconds, usec=round((t - seconds) * 1e9), caplen=len(data), wirelen=len(frame))
    writer.close()
    return path


def wireshark_hex_dump(frame: bytes) -> str:
    """Wireshark's Copy > as Hex Dump: offset, three blanks, 16 bytes, three blanks, ASCII (with blanks)."""
    rows = []
    for at in range(0, len(frame), 16):
        chunk = frame[at:at + 16]
        hex_part = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        rows.append(f"{at:04x}   {hex_part:<47}   {text}")
    return "\n".join(rows) + "\n"


def cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "probe", *arguments], capture_output=True, text=True, timeout=120)


# --- formats -------------------------------------------------------------------------------------


def test_wireshark_copy_as_hex_dump_with_prose_between_packets():
    packets = frames_and_times(BLOCK_PAGE)
    text = "".join(f"Packet {n} from the customer's Wireshark:\n{wireshark_hex_dump(frame)}\n"
                   for n, (_t, frame) in enumerate(packets, 1))
    reading = textcap.parse(text)
    assert [f.data for f in reading.frames] == [frame for _t, frame in packets]
    assert reading.formats == (textcap.FORMATS["bare"],)
    assert "no times" in reading.clock and not any(f.timed for f in reading.frames)
    assert [f.t for f in reading.frames] == [n * textcap.NO_TIME_STEP for n in range(len(packets))]
    prose_lines = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith("Packet ")]
    assert list(reading.not_understood) == prose_lines  # the ASCII columns (blanks, "<", ">") are understood


def test_tshark_summary_lines_and_hex_give_bytes_and_relative_times():
    text = run_tool("tshark", "-r", str(BLOCK_PAGE), "-P", "-x")
    packets = frames_and_times(BLOCK_PAGE)
    reading = textcap.parse(text)
    assert [f.data for f in reading.frames] == [frame for _t, frame in packets]
    assert "tshark" in reading.clock
    got = relative([f.t for f in reading.frames])
    assert max(abs(a - b) for a, b in zip(got, relative([t for t, _f in packets]))) < 2e-9
    assert reading.not_understood == ()


def test_tshark_detail_view_takes_the_epoch_time():
    text = run_tool("tshark", "-r", str(FIELD_REPORT), "-V", "-x")
    packets = frames_and_times(FIELD_REPORT)
    reading = textcap.parse(text)
    assert [f.data for f in reading.frames] == [frame for _t, frame in packets]
    assert [round(f.t, 6) for f in reading.frames] == [round(t, 6) for t, _f in packets]


@pytest.mark.parametrize("dumper", [["od", "-Ax", "-tx1", "-v"], ["xxd"], ["hexdump", "-C"]])
def test_other_hex_dumpers(dumper, tmp_path):
    """od (text2pcap's documented input), xxd and hexdump -C of a packet's bytes."""
    frame = frames_and_times(BLOCK_PAGE)[4][1]  # the block page: 250 bytes
    raw = tmp_path / "packet.bin"
    raw.write_bytes(frame)
    reading = textcap.parse(run_tool(*dumper, str(raw)))
    assert [f.data for f in reading.frames] == [frame]
    assert reading.frames[0].linktype == 101 and reading.frames[0].l4_checksum is True


def test_text2pcap_reads_the_same_bytes(tmp_path):
    """text2pcap on a hex dump gives the frames probe reads from it, and --write-pcap writes them too."""
    packets = frames_and_times(FIELD_REPORT)
    dump = tmp_path / "dump.txt"
    dump.write_text("".join(wireshark_hex_dump(frame) for _t, frame in packets))
    theirs = tmp_path / "text2pcap.pcap"
    run_tool("text2pcap", "-q", "-F", "pcap", "-l", "101", str(dump), str(theirs))
    ours = tmp_path / "ours.pcap"
    done = cli("analyze", str(dump), "--write-pcap", str(ours))
    assert done.returncode in (3, 4), done.stderr
    assert [f for _t, f in frames_and_times(ours)] == [f for _t, f in frames_and_times(theirs)] == \
        [f for _t, f in packets]


def test_ethernet_rows_with_link_header_and_rows_without(tmp_path):
    """-xx rows of an Ethernet capture start at the MAC header, -x rows at the IP header: the bytes say which."""
    packets = frames_and_times(TAP)
    ethernet = [(t, b"\x52\x54\x00\x00\x00\x02\x52\x54\x00\x00\x00\x01\x08\x00" + frame) for t, frame in packets]
    pcap = write_pcap(tmp_path / "ethernet.pcap", ethernet, linktype=1)
    with_link = textcap.parse(tcpdump(pcap, "-xx", "-e"))
    without = textcap.parse(tcpdump(pcap, "-x", "-e"))
    assert [(f.linktype, f.data) for f in with_link.frames] == [(1, frame) for _t, frame in ethernet]
    assert [(f.linktype, f.data) for f in without.frames] == [(101, frame) for _t, frame in packets]
    assert not any(f.cut for f in without.frames)  # -e's "length 66" is the frame's, not the IP packet's


def test_linux_cooked_capture(tmp_path):
    """tcpdump -i any captures (SLL): a 16-byte link header with the protocol at bytes 14-15."""
    packets = frames_and_times(FIELD_REPORT)
    sll = [(t, b"\x00\x00\x00\x01\x00\x06\x52\x54\x00\x00\x00\x01\x00\x00\x08\x00" + f) for t, f in packets]
    pcap = write_pcap(tmp_path / "sll.pcap", sll, linktype=113)
    reading = textcap.parse(tcpdump(pcap, "-XX", "-e", "-vv"))
    assert [(f.linktype, f.data) for f in reading.frames] == [(113, frame) for _t, frame in sll]


def test_ipv6_text_analyses_as_the_capture(tmp_path):
    from scapy.all import IPv6, TCP, Ether, Raw

    client, server, mine, theirs = "2001:db8::10", "2001:db8:1::80", "52:54:00:0a:00:0a", "52:54:00:50:00:50"
    out, back = Ether(src=mine, dst=theirs) / IPv6(src=client, dst=server, hlim=64), \
        Ether(src=theirs, dst=mine) / IPv6(src=server, dst=client, hlim=60)
    exchange = [(0.0, out / TCP(sport=40000, dport=80, flags="S", seq=1000)),
                (0.05, back / TCP(sport=80, dport=40000, flags="SA", seq=5000, ack=1001)),
                (0.0505, out / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001)),
                (0.0508, out / TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001) /
                 Raw(b"GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n")),
                (0.0528, back.copy() / TCP(sport=80, dport=40000, flags="R", seq=5001))]
    exchange[-1][1][IPv6].hlim = 62  # a reset from nearer than the server
    pcap = write_pcap(tmp_path / "v6.pcap", [(1.7e9 + t, bytes(p)) for t, p in exchange], linktype=1)
    reference = cli("analyze", str(pcap), "--json")
    assert json.loads(reference.stdout)["flows"], reference.stderr
    for flags in (["-vvXe"], ["-xx"]):
        text = tmp_path / "v6.txt"
        text.write_text(tcpdump(pcap, *flags).replace("\n", " "))
        done = cli("analyze", str(text), "--json")
        assert done.returncode == reference.returncode
        got, expected = json.loads(done.stdout)["flows"], json.loads(reference.stdout)["flows"]
        assert [(f["verdict"], f["direction"], [p["origin"] for p in f["packets"]]) for f in got] == \
            [(f["verdict"], f["direction"], [p["origin"] for p in f["packets"]]) for f in expected]


# --- times ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, words", [
    (["-tt"], "seconds since 1970"), (["-tttt"], "tcpdump -tttt"), (["-ttt"], "tcpdump -ttt"),
    (["-ttttt"], "tcpdump -ttttt"), (["--time-stamp-precision=nano"], "times of day"),
    (["-tt", "--time-stamp-precision=nano"], "seconds since 1970")])
def test_time_formats(flags, words):
    packets = frames_and_times(TAP)
    reading = textcap.parse(tcpdump(TAP, "-x", *flags))
    assert words in reading.clock
    precision = 1e-8 if "nano" in " ".join(flags) else 1.5e-6
    got, expected = relative([f.t for f in reading.frames]), relative([t for t, _f in packets])
    assert max(abs(a - b) for a, b in zip(got, expected)) < precision
    if flags[0] in ("-tt", "-tttt"):
        assert abs(reading.frames[0].t - packets[0][0]) < precision
    if flags == ["--time-stamp-precision=nano"]:
        assert reading.frames[0].t == pytest.approx(textcap.datetime(1970, 1, 1, tzinfo=textcap.timezone.utc)
                                                    .timestamp() + packets[0][0] % 86400, abs=1e-6)


def test_midnight_passes_into_the_next_day(tmp_path):
    packets = frames_and_times(TAP)
    midnight = 1_795_564_800.0  # 2026-11-25 00:00:00 UTC
    shifted = [(t - packets[0][0] + midnight - 0.06, frame) for t, frame in packets]
    pcap = write_pcap(tmp_path / "midnight.pcap", shifted)
    text = tcpdump(pcap, "-vvX")
    assert "23:59:59." in text and "00:00:00." in text
    reading = textcap.parse(text)
    assert reading.midnights == 1 and "pass midnight 1 time" in reading.clock
    got = relative([f.t for f in reading.frames])
    assert max(abs(a - b) for a, b in zip(got, relative([t for t, _f in shifted]))) < 1.5e-6
    assert reading.frames[0].t < 86400 <= reading.frames[-1].t  # 1970-01-01, then 1970-01-02


def test_a_packet_without_its_header_line_is_placed_between_its_neighbours():
    lines = tcpdump(FIELD_REPORT, "-X").splitlines()
    headers = [n for n, line in enumerate(lines) if line[:1].isdigit()]
    del lines[headers[2]]
    reading = textcap.parse("\n".join(lines))
    times = [f.t for f in reading.frames]
    assert [f.timed for f in reading.frames] == [True, True, False, True, True, True]
    assert times[2] == pytest.approx((times[1] + times[3]) / 2)
    assert any("no header line gave the time of packet(s) 3" in line for line in reading.summary())


# --- what was read -------------------------------------------------------------------------------


def test_the_snap_length_cut(tmp_path):
    packets = frames_and_times(FIELD_REPORT)
    pcap = write_pcap(tmp_path / "cut.pcap", packets, caplen=48)
    text = tcpdump(pcap, "-vvX")
    reading = textcap.parse(text)
    assert [(len(f.data), f.wire_len) for f in reading.frames] == [(min(48, len(frame)), len(frame))
                                                                   for _t, frame in packets]
    assert [f.cut for f in reading.frames] == [True] * 5 + [False]  # the last, a bare reset, is 40 bytes
    assert all(f.cut_mark and f.ip_checksum and f.l4_checksum is None for f in reading.frames if f.cut)
    assert "cut short (the snap length): packet(s) 1-5, 48 byte(s) kept of 52 to 151" in reading.summary()
    # --write-pcap keeps the length on the wire: tcpdump prints the same text from it
    source, out = tmp_path / "cut.txt", tmp_path / "back.pcap"
    source.write_text(text)
    cli("analyze", str(source), "--write-pcap", str(out))
    assert tcpdump(out, "-vvX") == text


def test_checksums_show_a_misread_byte():
    lines = tcpdump(FIELD_REPORT, "-vvX").splitlines()
    row = next(n for n, line in enumerate(lines) if "0x0030:  10a4 a479 4845" in line)  # packet 4's request
    lines[row] = lines[row].replace("4845 4144", "4845 4145")  # "HEAD" misread as "HEAE"
    reading = textcap.parse("\n".join(lines))
    assert [f.l4_checksum for f in reading.frames] == [True, True, True, False, True, True]
    assert any(line.startswith("checksums: 6/6 IPv4 headers, 5/6 TCP/UDP/ICMP checksums verify (wrong: packet(s) 4")
               for line in reading.summary())


def test_an_ipv4_header_that_fails_its_checksum_needs_its_header_line():
    text = tcpdump(FIELD_REPORT, "-vvX", "-c", "1")
    damaged = text.replace("0x0000:  4500 003c 0837 4000 4006", "0x0000:  4500 003c 0837 4000 3f06")  # TTL 63
    reading = textcap.parse(damaged)
    assert len(reading.frames) == 1 and reading.frames[0].ip_checksum is False
    alone = "\n".join(line for line in damaged.splitlines() if line.startswith("\t0x"))  # no header line
    bare = textcap.parse(alone)
    assert bare.frames == () and "checksum fails" in bare.lost[0]


def test_missing_rows_are_zeros_and_said():
    lines = tcpdump(BLOCK_PAGE, "-X").splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith("\t0x0000:  4500 00fa"))  # the block page
    del lines[first + 5]  # its row 0x0050
    reading = textcap.parse("\n".join(lines))
    page = frames_and_times(BLOCK_PAGE)[4][1]
    frame = reading.frames[4]
    assert frame.lost == ((0x50, 0x60),) and frame.data == page[:0x50] + bytes(16) + page[0x60:]
    assert frame.l4_checksum is False
    assert f"packet 5 (line {first + 1}): bytes 0x0050-0x005f are missing from the text (zeros in their place)" \
        in reading.summary()


def test_a_packet_whose_headers_are_missing_is_not_taken():
    lines = tcpdump(FIELD_REPORT, "-X").splitlines()
    row = next(n for n, line in enumerate(lines) if line.startswith("\t0x0010:"))  # packet 1's
    del lines[row]
    reading = textcap.parse("\n".join(lines))
    assert len(reading.frames) == 5
    assert reading.lost == (f"lines 2-{row + 2}: a packet whose IP or TCP header is among the missing rows, not taken",)


def test_rows_whose_first_row_is_missing():
    lines = tcpdump(FIELD_REPORT, "-X").splitlines()
    del lines[0:2]  # packet 1's header line and its first row
    reading = textcap.parse("\n".join(lines))
    assert len(reading.frames) == 5
    assert reading.lost == ("lines 1-3: hex rows (offset 0x0010...) of a packet whose first row is missing, "
                            "not taken",)


def test_a_header_line_whose_rows_are_missing():
    lines = tcpdump(FIELD_REPORT, "-X").splitlines()
    packet_two = [n for n, line in enumerate(lines) if line[:1].isdigit()][1]
    del lines[packet_two + 1:packet_two + 5]
    reading = textcap.parse("\n".join(lines))
    assert len(reading.frames) == 5
    assert reading.lost == (f"line {packet_two + 1}: a packet's header line whose hex rows are missing",)


def test_lines_not_understood():
    lines = tcpdump(FIELD_REPORT, "-vvX", "-c", "2").splitlines()
    lines.insert(0, "Hi team, here is the capture from the customer (they added a face 0x4500 marker):")
    lines.insert(4, "   -- this row is where it gets interesting --")
    lines.append("Regards, support")
    reading = textcap.parse("\n".join(lines))
    assert len(reading.frames) == 2
    assert reading.not_understood == (1, 5, len(lines))
    assert reading.summary()[-1] == f"not understood: line(s) 1, 5, {len(lines)} of {len(lines)}"


def test_tcpdump_chatter_and_markup_are_understood():
    text = tcpdump(BLOCK_PAGE, "-vvX")
    html_page = ("<p>reading from file x.pcap, link-type RAW (Raw IP), snapshot length 65535</p>\n<pre>"
                 + text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>\n")
                 + "</pre>\n<p>7 packets captured</p>\n")
    reading = textcap.parse(html_page)
    assert [f.data for f in reading.frames] == [frame for _t, frame in frames_and_times(BLOCK_PAGE)]
    assert reading.not_understood == ()


@pytest.mark.parametrize("encoding", ["utf-16", "cp1252", "crlf", "quoted"])
def test_encodings_and_quoting(encoding, tmp_path):
    text = "Ticket 4711 – réponse du client:\n" + tcpdump(FIELD_REPORT, "-vvXe")
    if encoding == "crlf":
        data = text.replace("\n", "\r\n").encode()
    elif encoding == "quoted":
        data = "".join(f"> {line}\n" for line in text.splitlines()).encode()
    else:
        data = text.encode(encoding)
    path = tmp_path / "ticket.txt"
    path.write_bytes(data)
    assert textcap.is_text_file(str(path))
    reading = textcap.read(str(path))
    assert [f.data for f in reading.frames] == [frame for _t, frame in frames_and_times(FIELD_REPORT)]
    assert reading.not_understood == (1,)


def test_prose_alone_is_no_packet(tmp_path):
    prose = ("We added a face at 0x4500 and a cafe at 0000 ab cd ef.\nThe beef is dead: 0x0000: added\n"
             "At 21:55:48.281224 the reset came (192.0.2.10 > 203.0.113.80: Flags [R]).\n")
    assert textcap.parse(prose).frames == ()
    path = tmp_path / "prose.txt"
    path.write_text(prose)
    done = cli("analyze", str(path))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"probe: {path} is not a pcap or pcapng file, "
                                                                  f"and no packet could be read from it as text")


def test_the_size_of_the_text_is_bounded(tmp_path, monkeypatch):
    path = tmp_path / "big.txt"
    path.write_text(tcpdump(FIELD_REPORT, "-X"))
    monkeypatch.setattr(textcap, "MAX_TEXT_BYTES", 1000)
    with pytest.raises(ProbeError, match="is text of more than"):
        textcap.read(str(path))


def test_what_is_text():
    assert textcap.looks_like_text(b"21:55:48.281224 IP 192.0.2.10")
    assert textcap.looks_like_text("0x0000: ".encode("utf-16"))
    assert not textcap.looks_like_text(bytes(range(256)))
    assert not textcap.looks_like_text(FIELD_REPORT.read_bytes()[:512])


# --- the command line ----------------------------------------------------------------------------


def test_write_pcap_round_trip(tmp_path):
    text = tcpdump(FIELD_REPORT, "-vvXe")
    pasted, out = tmp_path / "ticket.txt", tmp_path / "ticket.pcap"
    pasted.write_text(text.replace("\n", " "))
    done = cli("analyze", str(pasted), "--write-pcap", str(out))
    assert done.returncode == 3, done.stderr  # middlebox-reset, as from the pcap
    assert tcpdump(out, "-vvXe") == text
    with open(out, "rb") as handle:
        assert dpkt.pcap.Reader(handle).datalink() == 101


@pytest.mark.parametrize("arguments, words", [
    (["{pcap}", "--write-pcap", "{out}"], "--write-pcap converts a text capture"),
    (["{text}", "{pcap}", "--write-pcap", "{out}"], "--write-pcap converts one text capture")])
def test_write_pcap_usage_errors(arguments, words, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(tcpdump(FIELD_REPORT, "-X"))
    names = {"pcap": str(FIELD_REPORT), "text": str(text), "out": str(tmp_path / "out.pcap")}
    done = cli("analyze", *[a.format(**names) for a in arguments])
    assert done.returncode == 2 and words in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "out.pcap").exists()


def test_the_report_is_in_the_json_totals(tmp_path):
    lines = tcpdump(FIELD_REPORT, "-vvX").splitlines()
    lines.insert(3, "see below")
    pasted = tmp_path / "t.txt"
    pasted.write_text("\n".join(lines))
    done = cli("analyze", str(pasted), "--json")
    warnings = json.loads(done.stdout)["totals"]["warnings"]
    assert warnings == [f"{pasted} is text: {line}" if n == 0 else f"{pasted}: {line}"
                        for n, line in enumerate(textcap.parse("\n".join(lines)).summary())]
    assert warnings[-1] == f"{pasted}: not understood: line(s) 4 of {len(lines)}"
    assert done.stderr.splitlines()[-len(warnings):] == [f"probe: {w}" for w in warnings]


def test_older_tcpdump_header_lines(tmp_path):
    """tcpdump before 4.0: MAC addresses without leading zeros, "proto: TCP", "length: 60", flags
    without "Flags [...]" (the header lines of reports from that time)."""
    packets = frames_and_times(FIELD_REPORT)
    ethernet = [(t, b"\x00\x1b\x21\x04\x0a\x0c\x00\x0e\x0c\x8d\xa6\x2c\x08\x00" + frame) for t, frame in packets]
    text = tcpdump(write_pcap(tmp_path / "e.pcap", ethernet, linktype=1), "-vvXe")
    old = (text.replace("00:0e:0c:8d:a6:2c", "0:e:c:8d:a6:2c").replace("00:1b:21:04:0a:0c", "0:1b:21:4:a:c")
           .replace("proto TCP (6), length ", "proto: TCP (6), length: ").replace("Flags [S], ", "S ")
           .replace("Flags [S.], ", "S ").replace("Flags [P.], ", "P ").replace("Flags [R], ", "R "))
    assert "0:e:c:8d:a6:2c > 0:1b:21:4:a:c" in old and "Flags [" in old  # the ACK's "Flags [.]" stays
    reading = textcap.parse(old)
    assert [f.data for f in reading.frames] == [frame for _t, frame in packets]
    assert all(f.timed for f in reading.frames)
    assert relative([f.t for f in reading.frames]) == pytest.approx(relative([t for t, _f in packets]), abs=1.5e-6)


def test_times_that_go_back_are_said(tmp_path):
    """Two captures in one ticket (the client's, then the server's): the times go back."""
    client = tcpdump(FIELD_REPORT, "-X")
    later = [(t + 3.0, frame) for t, frame in frames_and_times(TAP)]
    server = tcpdump(write_pcap(tmp_path / "later.pcap", later), "-X")
    reading = textcap.parse(server + "\nand the server's side:\n" + client)
    assert len(reading.frames) == 14 + 6 and reading.midnights == 0
    assert [n for n, _seconds in reading.steps_back] == [15]
    assert any(line.startswith("the times go back at packet 15 (") for line in reading.summary())
    assert textcap.parse(client + server).steps_back == ()


def test_both_ends_as_text(tmp_path):
    """The field report's two captures (client and server), each pasted as text, pair and judge as
    the pcaps do: the reset the server received was never sent by the client."""
    ends = GOLDEN.parent / "two-ended"
    texts = []
    for name in ("06-field-report.pcap", "06-field-report.server.pcap"):
        path = tmp_path / (name + ".txt")
        path.write_text(tcpdump(ends / name, "-vvXe").replace("\n", " "))
        texts.append(str(path))
    from_text = cli("analyze", *texts, "--json")
    from_pcap = cli("analyze", str(ends / "06-field-report.pcap"), str(ends / "06-field-report.server.pcap"), "--json")
    assert from_text.returncode == from_pcap.returncode == 3
    keep = ("verdict", "direction", "paired_by")
    got, expected = json.loads(from_text.stdout)["flows"], json.loads(from_pcap.stdout)["flows"]
    assert [{k: f.get(k) for k in keep} for f in got] == [{k: f.get(k) for k in keep} for f in expected]
    assert "FORGED" in cli("analyze", *texts).stdout


def test_padding_trailers_and_an_ascii_column_that_looks_like_hex(tmp_path):
    """Bytes after the IP packet (Ethernet padding to 60 bytes, a 4-byte frame check sequence) are
    read and said; an ASCII column that reads as hex ("FA" for the bytes 46 41) is not read."""
    from scapy.all import IP, TCP, Raw

    mac = b"\x52\x54\x00\x00\x00\x02\x52\x54\x00\x00\x00\x01\x08\x00"
    payload = b"x" * 8 + b"FA"  # 20 + 20 + 10 = 50 bytes: the last row of -X holds "4641" and "FA"
    packets = [bytes(IP(src="192.0.2.10", dst="203.0.113.80") / TCP(sport=40000, dport=80, flags="PA") / payload),
               bytes(IP(src="203.0.113.80", dst="192.0.2.10") / TCP(sport=80, dport=40000, flags="R")),
               bytes(IP(src="203.0.113.80", dst="192.0.2.10") / TCP(sport=80, dport=40000, flags="A"))]
    frames = [mac + packets[1] + bytes(6), mac + packets[0], mac + packets[2] + bytes(6) + b"\xde\xad\xbe\xef",
              mac + packets[0]]
    pcap = write_pcap(tmp_path / "e.pcap", [(1.7e9 + n, f) for n, f in enumerate(frames)], linktype=1)
    for flags in ("-XX", "-xx"):
        reading = textcap.parse(tcpdump(pcap, flags))
        assert [f.data for f in reading.frames] == frames, flags
        assert [f.trailer for f in reading.frames] == [6, 0, 10, 0]
        assert "packet(s) 1, 3: 6 to 10 byte(s) after the IP packet" in " ".join(reading.summary())
    text = tcpdump(pcap, "-X")  # from the IP header on; tcpdump prints what follows the packet too
    assert "0x0030:  4641" in text and "  FA\n" in text
    reading = textcap.parse(text)
    assert [f.data for f in reading.frames] == [packets[1] + bytes(6), packets[0],
                                                packets[2] + bytes(6) + b"\xde\xad\xbe\xef", packets[0]]
    # a trailer at the very end of the text is not read: a word of prose there reads the same
    assert textcap.parse(tcpdump(pcap, "-xx", "-c", "1")).frames[0].data == mac + packets[1]
