"""Text captures are untrusted text: properties of `probe.files.text.parse` (issue 20).

1. Prose never makes a packet, however hex-looking its words ("face", "added", "0x4500",
   "0x0000: beef", times, addresses), and no text makes the parser raise.
2. Real packets among prose: tcpdump's rows with random sentences between their lines (or run
   together on one line) give exactly the packets of the capture.
3. Real `tcpdump -X` output, reflowed at a random width (the line breaks lost and new ones made,
   long words broken or not) and with random lines dropped, gives the same packets, or says what
   was lost: no packet is read wrong without a statement (bytes missing, cut short, a checksum
   that fails), and every packet that left something in the text is read whole or named by the
   report (a line it mentions, or a line not understood).

The tcpdump texts are made at test time from the lab's golden captures (tcpdump is needed).
"""

from __future__ import annotations

import functools
import random
import re
import shutil
import subprocess
from pathlib import Path

import dpkt
import pytest
from hypothesis import example, given, note, strategies as st

from probe.files import text as textcap

from .exchanges import property_settings

GOLDEN = Path(__file__).parent.parent / "golden" / "captures"
SOURCES = ("05-tap-rst-burst", "06-field-report", "07-block-page", "09-icmp-prohibited", "14-lossy-path")

# Words of prose, many of them hex-looking. None holds a byte whose high nibble is 4 or 6 (read as
# two-digit or four-digit groups), so that no arrangement of them can hold an IPv4 or IPv6 header.
HEXISH = ("face", "added", "cafe", "dead", "beef", "0000", "ffff", "ab", "cd", "00", "ff", "1234", "0800",
          "86dd", "c0ffee", "deadbeef", "0x4500", "0x0000", "0x0000:", "0x0010:", "0000:", "0010", "00000000:",
          "0x", "fade", "bad", "e88f", "dcf5")
WORDS = ("the", "customer", "said", "reset", "here", "firewall", "Здесь", "连接", "重置", "coupée", "IP", ">",
         "21:55:48.281224", "1795470948.281224", "192.0.2.10.50727", "203.0.113.80.80:", "Flags", "[R],",
         "length", "60", "(tos", "0x0,", "ttl", "64)", "<br>", "&nbsp;", "|", "...", "E..<.7@.@.4*....")
SEPARATORS = (" ", " ", "  ", "\t", "\n", "\n\t", "", "\r\n")

PROPERTY = property_settings(300)
REFLOW = property_settings(400)


def _tcpdump(name: str, *flags: str) -> str:
    binary = shutil.which("tcpdump")
    if binary is None:
        pytest.skip("needs tcpdump (CI installs it)")
    return _tcpdump_cached(binary, name, flags)


@functools.lru_cache(maxsize=None)
def _tcpdump_cached(binary: str, name: str, flags: tuple) -> str:
    return subprocess.run([binary, "-r", str(GOLDEN / f"{name}.pcap"), "-nn", *flags], capture_output=True,
                          text=True, timeout=60, env={"TZ": "UTC"}, check=True).stdout


@functools.lru_cache(maxsize=None)
def _packets(name: str) -> tuple[tuple[float, bytes], ...]:
    with open(GOLDEN / f"{name}.pcap", "rb") as handle:
        return tuple((float(t), frame) for t, frame in dpkt.pcap.Reader(handle))


@st.composite
def prose(draw, words=HEXISH + WORDS):
    pieces = draw(st.lists(st.tuples(st.sampled_from(words), st.sampled_from(SEPARATORS)), max_size=80))
    return "".join(word + separator for word, separator in pieces)


# --- 1 -------------------------------------------------------------------------------------------


@PROPERTY
@given(text=prose())
@example(text="0x0000: face cafe 0x0010: dead beef 0000 ab cd ef 00 ff\n0010 ab cd")
@example(text="At 21:55:48.281224 IP 192.0.2.10.50727 > 203.0.113.80.80: the face of 0x4500 was added")
def test_prose_makes_no_packet(text):
    reading = textcap.parse(text)
    assert reading.frames == ()
    reading.summary()


@PROPERTY
@given(text=st.text(alphabet=st.sampled_from("0123456789abcdefx:. \t\n<>&;|-Ee[]()") | st.characters(),
                    max_size=600))
def test_no_text_makes_the_parser_raise(text):
    reading = textcap.parse(text)
    reading.summary()
    for frame in reading.frames:  # whatever it took for a packet carries a verifying IP header
        assert frame.ip_checksum is not False or frame.linktype != 101 or frame.data[0] >> 4 == 6


# --- 2 -------------------------------------------------------------------------------------------


@PROPERTY
@given(name=st.sampled_from(SOURCES), flags=st.sampled_from(["-X", "-vvXe", "-x", "-xx"]),
       run_together=st.booleans(), data=st.data())
def test_real_packets_among_prose(name, flags, run_together, data):
    lines = _tcpdump(name, flags).splitlines()
    # prose, not fragments of tcpdump's own lines: no row offsets, and no ">", "(tos" or "IP" (prose
    # that reads "TIME IP A > B" is a header line by any measure)
    words = tuple(w for w in HEXISH + WORDS if not re.fullmatch(r"0x[0-9a-f]{4}:|0+:|>|\(tos|IP", w))
    sentences = data.draw(st.lists(st.tuples(st.integers(0, len(lines)), prose(words)), max_size=24))
    text_lines = list(lines)
    for where, sentence in sorted(sentences, reverse=True):
        text_lines.insert(where, sentence.replace("\n", " ").replace("\r", " "))
    text = ("" if run_together else "\n").join(text_lines)
    note(text[:2000])
    reading = textcap.parse(text)
    originals = [frame for _t, frame in _packets(name)]
    assert [frame.data[:len(original)] for frame, original in zip(reading.frames, originals)] == originals
    # hex words glued to a packet's last row with no blank between ("0a0d 0a" + "00" + the next header)
    # read as bytes after the packet, as the text says: said as such
    assert [frame.trailer for frame in reading.frames] == [len(frame.data) - len(original)
                                                           for frame, original in zip(reading.frames, originals)]
    # a run of hex words in the prose may be named as a block that holds no packet; nothing else is lost
    assert all("hold no IP packet" in statement for statement in reading.lost)


# --- 3 -------------------------------------------------------------------------------------------


def _tokens(text: str) -> list[tuple[str, int]]:
    """Every word of tcpdump's output with the number of the packet it belongs to (negative for the
    words of its header line: -1 - the number)."""
    tokens, packet = [], -1
    for line in text.splitlines():
        if line[:1].isdigit():  # a header line opens the next packet
            packet += 1
        row = line.lstrip().startswith("0x")
        tokens += [(word, packet if row else -1 - packet) for word in line.split()]
    return tokens


def reflow(tokens: list[tuple[str, int]], width: int, break_words: bool) -> list[list[tuple[str, int]]]:
    """Fill lines up to `width` characters, as an editor or a web page does; a word longer than the
    width is broken (`break_words`) or left whole on a line of its own."""
    lines, line, used = [], [], 0
    for word, packet in tokens:
        pieces = [word[i:i + width] for i in range(0, len(word), width)] if break_words else [word]
        for piece in pieces:
            if line and used + 1 + len(piece) > width:
                lines.append(line)
                line, used = [], 0
            used += len(piece) + (1 if line else 0)
            line.append((piece, packet))
    if line:
        lines.append(line)
    return lines


def _mentioned_lines(reading) -> set[int]:
    """Every line the report names: lines not understood, lines in a statement of loss, and the
    lines of every packet it flags (bytes missing, cut short, a checksum that fails)."""
    lines = set(reading.not_understood)
    for statement in reading.lost:
        found = re.match(r"lines? (\d+)(?:-(\d+))?", statement)
        lines.update(range(int(found.group(1)), int(found.group(2) or found.group(1)) + 1))
    for frame in reading.frames:
        if _flagged(frame):
            lines.update(range(frame.line, frame.last_line + 1))
    return lines


def _flagged(frame) -> bool:
    return bool(frame.lost or frame.mixed or frame.trailer) or frame.cut or frame.ip_checksum is False \
        or frame.l4_checksum is False


@REFLOW
@given(name=st.sampled_from(SOURCES), width=st.integers(8, 200), break_words=st.booleans(),
       drop=st.sampled_from([0.0, 0.0, 0.02, 0.05, 0.15, 0.4]), seed=st.integers(0, 2 ** 32 - 1))
def test_reflowed_tcpdump_output_with_lines_dropped(name, width, break_words, drop, seed):
    originals = [frame for _t, frame in _packets(name)]
    lines = reflow(_tokens(_tcpdump(name, "-X")), width, break_words)
    dice = random.Random(seed)  # which lines go: one draw, not one per line (hypothesis is slow at those)
    kept = [line for line in lines if drop == 0.0 or dice.random() >= drop]
    text = "\n".join(" ".join(word for word, _packet in line) for line in kept)
    note(text[:3000])
    reading = textcap.parse(text)

    # no packet is read wrong without a statement, but where the text itself cannot tell: lines lost
    # between two packets' rows that read the same there leave rows that join seamlessly
    exact = _match_in_order([frame.data for frame in reading.frames], originals)
    for frame, match in zip(reading.frames, exact):
        assert match is not None or _flagged(frame) or _seamless_join(frame.data, originals), \
            f"packet {frame.number} read wrong, and nothing said"

    if len(kept) == len(lines):  # nothing dropped: the same packets, and nothing said to be lost
        assert [frame.data for frame in reading.frames] == originals
        assert not reading.lost and not any(_flagged(frame) for frame in reading.frames)
        if width >= 16 or not break_words:  # no time was broken in two
            expected = [t for t, _frame in _packets(name)]
            got = [frame.t for frame in reading.frames]
            assert max(abs((a - got[0]) - (b - expected[0])) for a, b in zip(got, expected)) < 1.5e-6
        return

    # every packet that left some of its rows in the text is read whole, or named by the report. Where
    # the text cannot tell: packets with the same bytes (a retransmission) stand for each other; rows
    # that read as the rest of a packet read whole (the same bytes at the same offsets) are taken as
    # its rows; a packet that left only part of its header line may be taken for the next one's header.
    mentioned = _mentioned_lines(reading)
    read_whole = [frame for frame, match in zip(reading.frames, exact) if match is not None]
    joined = [frame for frame, match in zip(reading.frames, exact)
              if match is None and _seamless_join(frame.data, originals)]
    inside = {n for frame in read_whole + joined for n in range(frame.line, frame.last_line + 1)}
    for data in set(originals):
        same = [n for n, original in enumerate(originals) if original == data]
        missing = len(same) - min(len(same), sum(frame.data == data for frame in read_whole))
        accounted = 0
        for packet in same:
            survived = {n for n, line in enumerate(kept, 1) if any(p == packet for _word, p in line)}
            accounted += not survived or bool(survived & mentioned) or survived <= inside
        assert accounted >= missing, f"packet(s) {[n + 1 for n in same]} lost without a word"


def _seamless_join(data: bytes, originals: list[bytes]) -> bool:
    """`data` is the start of one packet and the rest of another, of the same length."""
    for i, first in enumerate(originals):
        common = 0
        while common < min(len(data), len(first)) and data[common] == first[common]:
            common += 1
        if any(j != i and len(second) == len(data) and data[common:] == second[common:]
               for j, second in enumerate(originals)):
            return True
    return False


def _match_in_order(found: list[bytes], originals: list[bytes]) -> list[int | None]:
    """For each packet read, the index of the original it equals, or None: the longest common
    subsequence of the two lists (a capture may hold the same bytes twice, a retransmission)."""
    n, m = len(found), len(originals)
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best[i][j] = best[i + 1][j + 1] + 1 if found[i] == originals[j] else max(best[i + 1][j], best[i][j + 1])
    matches, i, j = [], 0, 0
    while i < n:
        if j < m and found[i] == originals[j] and best[i][j] == best[i + 1][j + 1] + 1:
            matches.append(j)
            i, j = i + 1, j + 1
        elif j < m and best[i][j + 1] >= best[i + 1][j]:
            j += 1
        else:
            matches.append(None)
            i += 1
    return matches
