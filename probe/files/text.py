"""Captures pasted as text: tcpdump's hex rows, Wireshark's hex dump, text2pcap's input.

Theory of operation. Text in, frames out: `parse(text)` returns a `Reading`, the frames
(time, link type, bytes, length on the wire) and a report of what was read. Nothing here does
I/O but `read(path)`, which reads one file of bounded size.

Bytes come only from hex rows. A row is an offset and then groups of hex digits: tcpdump's
`0x0010:  4500 003c ...` (-x, -xx, -X, -XX), xxd's `00000010: 4500 ...`, and the offset plus
byte rows of Wireshark's "Copy as Hex Dump", tshark -x, text2pcap's input, od -Ax -tx1 and
hexdump -C (`0010  45 00 00 3c ...`). The offsets are the anchor. A packet is a chain of rows
whose offsets follow on: it starts at offset zero, and each next row's offset is the previous
one plus the bytes that row held. That is what finds rows wherever the text put them (at the
start of lines, run together on one line with their line breaks lost, broken across lines,
with prose or markup between them), and what keeps words of prose that look like hex ("face",
"added", "0x4500") out: they do not continue a chain that started at zero, and a chain must
hold an IP header to count (below).

How many bytes a row holds: the next row's offset says. The last row of a packet holds what
the packet's IP header asks for (its total length, or the IPv6 payload length, plus the link
header), never more than a row holds. This also stops the reading before an ASCII column that
happens to look like hex (`-X` prints "ab" for the bytes 61 62): the ASCII column is only
compared with the bytes, to count it as understood, and never read.

Where the link header is: tcpdump's -x/-X rows start at the network layer, -xx/-XX rows and
Wireshark's at the link layer, and the rows do not say which. The bytes do: the IP header is
where an IPv4 header's checksum verifies (or an IPv6 header's payload length fits the bytes),
at offset 0 (the version nibble then gives the family), after an Ethernet header with any
VLAN tags, a Linux cooked header (SLL, SLL2) or a BSD loopback header. tcpdump's own
"link-type" line breaks ties. A chain without such a header is reported, not taken, so that
prose cannot make a packet; an IPv4 header whose checksum fails is taken only when tcpdump's
header line above it names the same addresses.

Header lines are the other anchor. A time is a packet's header only where tcpdump would print
one (the time, then IP, IP6, ip:, a MAC address or an interface, then "A > B" or the -v
fields), so a time in prose is not. A chain never goes on past a header line, nor past what is
left of one ("A.1 > B.2:" whose time was lost), nor without saying so past the remains of other
rows (hex groups with their own ASCII column): rows after those are another packet's. A header
line gives its time to the packet whose rows follow it only when it names that packet's
addresses and TCP flags; else it is a packet whose rows are missing, and the report says so.

Times: tcpdump's time of day (its default; the date is not in the text, `ASSUMED_DATE` is used
and said, and a step back of more than twelve hours is midnight), -tt, -tttt, -ttt and -ttttt,
with micro- or nanoseconds, and tshark's summary lines and "Epoch Time". A packet without a
header line gets a time between its neighbours, and the report says so.

What was read, for the report: the packets; those cut short (fewer bytes than the IP header
or tcpdump's `length N` says: the snap length, or lines missing from the text); whether the
IPv4 header and TCP, UDP and ICMP checksums verify, which shows the bytes were read right;
rows lost inside a packet (their bytes are zeros, and said); header lines whose rows are
missing; and the lines of text that are neither a header line, a row, its ASCII column, nor
tcpdump's own chatter.

Bounds, for untrusted text: `MAX_TEXT_BYTES` of text (the slowest text measured, 4 MB of
offset-and-two-bytes rows, takes 7 s), `MAX_FRAME` bytes per packet, a gap of missing rows of
at most `MAX_GAP` bytes, 256 bytes per row.
"""

from __future__ import annotations

import bisect
import codecs
import html
import ipaddress
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from probe.errors import ProbeError
from probe.files.pcap import LINK_ETHERNET, LINK_LOOP, LINK_NULL, LINK_RAW, LINK_SLL, LINK_SLL2, MAX_RECORD

MAX_TEXT_BYTES = 16 << 20  # a ticket holds kilobytes; 16 MiB of tcpdump -X text is some 3.5 MB of packets
MAX_FRAME = MAX_RECORD  # the largest packet a chain of rows may build
MAX_GAP = 4096  # missing rows inside a packet, in bytes, beyond which a row is not a continuation
HEAD_BYTES = 4096  # what `looks_like_text` needs to see
ASSUMED_DATE = date(1970, 1, 1)  # tcpdump prints the time of day only
DEFAULT_WIDTH = 16  # bytes per row of every dumper here
MAX_TRAILER = 32  # bytes a frame may hold after its packet (padding to 60 bytes, the frame check sequence)
NO_TIME_STEP = 0.001  # seconds between packets when the text has no time at all
STEP_BACK = 1.0  # seconds the times may go back (a capture prints in order) before the report says so

# --- the text, cleaned -----------------------------------------------------------------------------

_TAG_NAMES = (r"br|p|pre|code|tt|div|span|font|b|i|u|em|strong|li|ul|ol|td|tr|th|table|tbody|thead|blockquote|"
              r"samp|kbd|hr|a|small|big|center|section|article|label|var|mark|del|ins|s|q|cite")
_MARKUP = re.compile(
    rf"</?(?:{_TAG_NAMES})(?:[ \t]+[A-Za-z-]{{1,20}}(?:=(?:\"[^\"\n]{{0,200}}\"|'[^'\n]{{0,200}}'|[^\s>]{{1,200}}))?)"
    r"{0,10}[ \t]*/?>"  # HTML tags (strictly shaped: an attribute never runs over hex rows)
    r"|\[/?(?:code|quote|pre|b|i|u|color|size|font|noparse)(?:=[^\]\n]{0,40})?\]"  # BBCode
    r"|^[ \t]*(?:```|~~~)[A-Za-z0-9_+-]{0,20}[ \t]*$", re.I | re.M | re.ASCII)  # Markdown code fences
_QUOTED = re.compile(r"^[ \t]{0,3}(?:>[ \t]?)+", re.M)  # e-mail quoting
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z]{2,8});")
_INVISIBLE = {ord(c): " " for c in "\u200b\u200c\u200d\u2060\ufeff\u00ad"}  # zero-width: not \s
_BLANKS = re.compile(r"[^\S\n ]")  # every other blank (tab, no-break, em, ideographic spaces...) as a space


def _lines(text: str) -> str:
    """Line breaks as "\n" (a "\r" of "\r\n" becomes a blank), so that every position stays put."""
    return text.replace("\r\n", " \n").replace("\r", "\n")


def _clean(text: str) -> str:
    """The text with markup, entities and invisible spaces made blank, every character where it was
    (`_lines(text)` and this line up, position for position)."""
    text = _BLANKS.sub(" ", _lines(text).translate(_INVISIBLE))
    if "&" in text:
        text = _ENTITY.sub(lambda m: _padded(html.unescape(m.group()), len(m.group())), text)
    text = _MARKUP.sub(lambda m: " " * len(m.group()), text)
    quoted = len(_QUOTED.findall(text))
    if quoted and quoted * 2 >= sum(1 for line in text.split("\n") if line.strip()):  # a reply quoting the paste
        text = _QUOTED.sub(lambda m: " " * len(m.group()), text)
    return text


def _padded(character: str, width: int) -> str:
    return (character.replace("\n", " ").replace("\r", " ") + " " * width)[:width]


def looks_like_text(head: bytes) -> bool:
    """The first bytes of a file are text (UTF-8, UTF-16 with its mark, or a single-byte code page)."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    if not head or b"\0" in head:
        return False
    controls = sum(1 for byte in head if byte < 0x20 and byte not in b"\t\n\r\f\v" or byte == 0x7F)
    return controls * 100 <= len(head)


def decode(data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


# --- times ---------------------------------------------------------------------------------------

_TIME = re.compile(
    r"(?P<tshark>(?<![0-9A-Za-z.])[0-9]{1,9}\s+(?P<rel>[0-9]{1,9}\.[0-9]{6,9})\s+"
    r"(?=[0-9A-Fa-f:.]{3,45}\s))"  # tshark and Wireshark summary line: number, seconds, source
    r"|(?P<epoch>[0-9]{10})\.(?P<efrac>[0-9]{6}(?:[0-9]{3})?)(?![0-9])"  # tcpdump -tt, tshark Epoch Time
    r"|(?:(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[ T])?"  # tcpdump -tttt
    r"(?P<hour>[01][0-9]|2[0-3]):(?P<minute>[0-5][0-9]):(?P<second>[0-5][0-9]|60)"
    r"\.(?P<frac>[0-9]{6}(?:[0-9]{3})?)(?![0-9])", re.ASCII)
_SUMMARY = re.compile(r"\S\s+>\s+\S|→|\S\s+->\s+\S")  # "A > B:": a packet's header, not prose
# tcpdump -v's first header line: the IP header's fields, the addresses only on the next line
_VERBOSE_FIRST = re.compile(r"\s+(?:[A-Za-z][A-Za-z0-9_.@-]{0,15}\s+(?:In|Out|P|B|M)\s+)?"
                            r"(?:IP6?|ip6?:)\s+\((?:tos|hlim|flowlabel|class)\s", re.ASCII)
# what tcpdump prints right after the time: the protocol, a MAC address (-e; before tcpdump 4.0
# without leading zeros, "0:1b:21:4:a:c"), an interface and direction (-i any)
_TCPDUMP_NEXT = re.compile(
    r"\s+(?:IP6?\b|ARP\b|RARP\b|ip6?:|[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5}\b|(?:[A-Za-z][A-Za-z0-9_.@-]{0,15}"
    r"\s+)?(?:In|Out|P|B|M)\b|ethertype\b|vlan\b|802\.1|STP\b|LLDP\b|CDP\b|LLC\b)", re.ASCII)
_DETAIL = re.compile(r"Time:[ \t]+(?:[A-Z][a-z]{2}[ \t]+[0-9]{1,2},[ \t]+[0-9]{4}[ \t]+)?$")  # tshark -V


@dataclass(frozen=True)
class _Mark:
    """A time in the text that opens a packet's header (tcpdump's line, tshark's summary or detail)."""

    start: int
    end: int
    kind: str  # "tod" (time of day), "date" (-tttt), "epoch" (-tt), "rel" (tshark: since the first)
    seconds: float  # of the day, since 1970, or since the first packet
    summary: bool  # a packet summary line (its packet's rows may be lost), not a detail line


def _marks(flat: str, found: list[re.Match], stops: list[int]) -> list[_Mark]:
    """The times that open packet headers; a time in prose ("at 21:55:48.281224 it broke") is skipped."""
    marks = []
    for n, m in enumerate(found):
        if m.group("tshark"):
            marks.append(_Mark(m.start(), m.end(), "rel", float(m.group("rel")), True))
            continue
        if m.group("epoch"):
            kind, seconds = "epoch", int(m.group("epoch")) + _fraction(m.group("efrac"))
        else:
            seconds = (int(m.group("hour")) * 3600 + int(m.group("minute")) * 60 + int(m.group("second"))
                       + _fraction(m.group("frac")))
            kind = "tod"
            if m.group("year"):
                try:
                    day = datetime(int(m.group("year")), int(m.group("month")), int(m.group("day")),
                                   tzinfo=timezone.utc)
                except ValueError:
                    continue
                kind, seconds = "date", day.timestamp() + seconds
        line_start = flat.rfind("\n", 0, m.start()) + 1
        if _DETAIL.search(flat, max(line_start, m.start() - 60), m.start()):
            marks.append(_Mark(m.start(), m.end(), kind, seconds, False))
            continue
        index = bisect.bisect_right(stops, m.end())
        after = min(stops[index] if index < len(stops) else len(flat),  # the next row,
                    found[n + 1].start() if n + 1 < len(found) else len(flat), m.end() + 3000)  # the next time
        if _TCPDUMP_NEXT.match(flat, m.end()) and (_VERBOSE_FIRST.match(flat, m.end())
                                                   or _SUMMARY.search(flat, m.end(), after)):
            marks.append(_Mark(m.start(), m.end(), kind, seconds, True))
    return marks


def _fraction(digits: str) -> float:
    return int(digits) / 10 ** len(digits)


# --- rows ----------------------------------------------------------------------------------------

_ANCHOR = re.compile(
    r"0[xX](?P<tcpdump>[0-9a-fA-F]{4,8}):"  # tcpdump
    r"|(?<![xX])(?P<colon>[0-9a-fA-F]{4,8}):(?=\s+[0-9a-fA-F]{2})"  # xxd
    r"|(?<![xX0-9a-fA-F])(?P<bare>[0-9a-fA-F]{3,8}):?(?=\s+[0-9a-fA-F]{2}(?:\s|$))",  # Wireshark, text2pcap, od
    re.ASCII)
_HEX = frozenset("0123456789abcdefABCDEF")
FORMATS = {"tcpdump": "tcpdump hex rows (-x, -xx, -X, -XX)", "colon": "xxd rows",
           "bare": "offset and byte rows (Wireshark's hex dump, tshark -x, text2pcap, od, hexdump)"}


@dataclass
class _Anchor:
    start: int
    end: int
    kind: str
    digits: str
    digits_end: int  # where the offset's digits end (a colon may follow)
    groups: list = field(default_factory=list)  # [(start, end, bytes)] read strictly: whole groups
    stop: int = 0  # where the strict groups end
    strict: bytes = b""  # their bytes
    glued: bool = False  # no whole group, but hex digits run into a word ("2b6bNote": its break was lost)

    def value(self, width: int) -> int | None:
        """The offset, read with `width` digits (a bare offset may have run into the text before it)."""
        if self.kind != "bare":
            return int(self.digits, 16)
        return int(self.digits[-width:], 16) if len(self.digits) >= width else None

    def zero_width(self) -> int:
        """How many trailing zeros the offset has, when it can be offset zero (else 0)."""
        if self.kind != "bare":
            return len(self.digits) if int(self.digits, 16) == 0 else 0
        zeros = len(self.digits) - len(self.digits.rstrip("0"))
        return zeros if zeros >= 3 else 0


def _strict_groups(flat: str, anchor: _Anchor, bounds: set[int], limit: int) -> None:
    """Whole groups of 2 or 4 hex digits after the offset, one size per row (but tcpdump's odd last
    byte), each ending where the hex digits end: a blank, prose glued on with its blank lost, or the
    start of a header or row that ran into it."""
    position, n, words, count = anchor.end, len(flat), None, 0
    while position < limit and count < 256:
        start = position
        while start < n and flat[start] in " \t\n":
            start += 1
        end = start
        while end < n and end - start < 5 and flat[end] in _HEX and (end == start or end not in bounds):
            end += 1
        size = end - start
        ends_clean = end == n or flat[end] not in _HEX or end in bounds
        if start >= limit or start in bounds or size not in (2, 4) or not ends_clean:
            break
        if words is None:
            words = size == 4
        elif words != (size == 4) and not (words and size == 2):
            break
        group = bytes.fromhex(flat[start:end])
        anchor.groups.append((start, end, group))
        count += len(group)
        position = end
        if words and size == 2:
            break
    anchor.stop = anchor.groups[-1][1] if anchor.groups else anchor.end
    anchor.strict = b"".join(group for _start, _end, group in anchor.groups)
    if not anchor.groups:
        start = anchor.end
        while start < n and flat[start] in " \t\n":
            start += 1
        anchor.glued = flat[start:start + 2] != "" and all(c in _HEX for c in flat[start:start + 2])


def _loose_bytes(flat: str, start: int, limit: int, count: int) -> tuple[bytes, int]:
    """`count` bytes from pairs of hex digits across blanks (a line broken inside a group), or b""
    when anything else comes first: a row that falls short is not trusted in part."""
    digits, position = [], start
    while position < limit and len(digits) < 2 * count:
        char = flat[position]
        if char in _HEX:
            digits.append(char)
        elif char not in " \t\n":
            break
        position += 1
    if len(digits) < 2 * count:
        return b"", start
    return bytes.fromhex("".join(digits)), position


def _anchors(flat: str) -> list[_Anchor]:
    found = []
    for m in _ANCHOR.finditer(flat):
        kind = m.lastgroup
        found.append(_Anchor(m.start(kind) - (2 if kind == "tcpdump" else 0), m.end(), kind, m.group(kind),
                             m.end(kind)))
    return found


def _overlaps(anchor: _Anchor, time_starts: list[int]) -> bool:
    """A row's offset that a time runs into ("0x000021:55:48.281224", a line break lost) is no offset."""
    index = bisect.bisect_right(time_starts, anchor.start)
    return index < len(time_starts) and time_starts[index] < anchor.end


@dataclass
class _Row:
    anchor: _Anchor
    offset: int
    start: int  # where the offset starts (a bare offset may have run into the hex before it)


@dataclass
class _Chain:
    """The rows of one packet, as found."""

    kind: str
    digits: int
    width: int
    rows: list[_Row]

    @property
    def start(self) -> int:
        return self.rows[0].start


def _chains(anchors: list[_Anchor], breaks: list[int]) -> tuple[list[_Chain], list[_Anchor]]:
    """Chains of rows whose offsets follow on, each from an offset-zero row, one open chain per style
    of row (a hex dump quoted inside tcpdump's output does not end its packet); and the stray rows:
    anchors with hex after them that continue no chain (a packet whose first row is lost, or prose)."""
    chains: list[_Chain] = []
    strays: list[_Anchor] = []
    open_chains: dict[str, _Chain] = {}
    cursor = 0
    for anchor in anchors:
        if anchor.start < cursor or not (anchor.groups or anchor.glued):
            continue
        chain = open_chains.get(anchor.kind)
        if chain is not None and _continues(chain, anchor, breaks):
            start = anchor.digits_end - chain.digits if anchor.kind == "bare" else anchor.start
            chain.rows.append(_Row(anchor, anchor.value(chain.digits), start))
            cursor = anchor.stop
            continue
        zeros = anchor.zero_width() if anchor.groups else 0
        if not zeros:
            strays.append(anchor)
            continue
        strict = len(anchor.strict)
        width = strict if strict in (8, 16, 24, 32, 48, 64) else DEFAULT_WIDTH
        start = anchor.digits_end - zeros if anchor.kind == "bare" else anchor.start
        chain = _Chain(anchor.kind, zeros if anchor.kind == "bare" else len(anchor.digits), width,
                       [_Row(anchor, 0, start)])
        chains.append(chain)
        open_chains[anchor.kind] = chain
        cursor = anchor.stop
    return chains, strays


def _continues(chain: _Chain, anchor: _Anchor, breaks: list[int]) -> bool:
    if anchor.kind != chain.kind:
        return False
    value = anchor.value(chain.digits)
    if anchor.kind != "bare" and len(anchor.digits) != chain.digits and value < 16 ** chain.digits:
        return False  # tcpdump and xxd pad offsets to a fixed width: "0x000021:" is no row of "0x0020:"
    last = chain.rows[-1]
    if value is None or value <= last.offset or value > MAX_FRAME:
        return False
    step = value - last.offset
    if step > chain.width and (step % chain.width or step - chain.width > MAX_GAP
                               or len(last.anchor.strict) < chain.width):  # rows lost after a whole row only
        return False
    # a packet's header between them opens another packet (whose first row is lost)
    index = bisect.bisect_right(breaks, last.anchor.start)
    return not (index < len(breaks) and breaks[index] < anchor.start)


# --- the link layer and the IP header ------------------------------------------------------------

_LINK_NAMES = {"EN10MB": LINK_ETHERNET, "RAW": LINK_RAW, "IPV4": LINK_RAW, "IPV6": LINK_RAW, "NULL": LINK_NULL,
               "LOOP": LINK_LOOP, "LINUX_SLL": LINK_SLL, "LINUX_SLL2": LINK_SLL2}
_LINK_ORDER = (LINK_RAW, LINK_ETHERNET, LINK_SLL, LINK_SLL2, LINK_NULL, LINK_LOOP)
_V6_NEXT = frozenset({0, 6, 17, 43, 44, 50, 51, 58, 59, 60})


def _checksum_ok(data: bytes) -> bool:
    import dpkt

    return dpkt.in_cksum(data) == 0


def _ipv4_strength(data: bytes, at: int) -> int:
    """3: an IPv4 header whose checksum verifies; 1: shaped like one; 0: not one."""
    if len(data) < at + 20 or data[at] >> 4 != 4 or data[at] & 15 < 5:
        return 0
    ihl = (data[at] & 15) * 4
    total = int.from_bytes(data[at + 2:at + 4], "big")
    if total < ihl or len(data) < at + ihl:
        return 0
    return 3 if _checksum_ok(data[at:at + ihl]) else 1


def _ipv6_strength(data: bytes, at: int) -> int:
    """2: an IPv6 header whose payload length is exactly the bytes after it; 1: shaped like one."""
    if len(data) < at + 40 or data[at] >> 4 != 6 or data[at + 6] not in _V6_NEXT:
        return 0
    wanted = 40 + int.from_bytes(data[at + 4:at + 6], "big")
    have = len(data) - at
    if have == wanted:
        return 2
    return 1 if have < wanted or have - wanted <= 46 else 0


def _candidates(data: bytes):
    """(link type, where the IP header starts, family) for every link layer the bytes could start with."""
    yield LINK_RAW, 0, data[0] >> 4 if data else 0
    offset = 12
    while len(data) >= offset + 2 and data[offset:offset + 2] in (b"\x81\x00", b"\x88\xa8"):
        offset += 4
    ethertype = data[offset:offset + 2]
    if ethertype in (b"\x08\x00", b"\x86\xdd"):
        yield LINK_ETHERNET, offset + 2, 4 if ethertype == b"\x08\x00" else 6
    for linktype, at, start in ((LINK_SLL, 14, 16), (LINK_SLL2, 0, 20)):  # a protocol, or a VLAN tag and one
        protocol = data[at:at + 2]
        if protocol == b"\x81\x00":
            protocol, start = data[start + 2:start + 4], start + 4
        if protocol in (b"\x08\x00", b"\x86\xdd"):
            yield linktype, start, 4 if protocol == b"\x08\x00" else 6
    if len(data) >= 4:
        for linktype, family in ((LINK_NULL, int.from_bytes(data[:4], "little")),
                                 (LINK_LOOP, int.from_bytes(data[:4], "big"))):
            if family == 2:
                yield linktype, 4, 4
            elif family in (10, 24, 28, 30):
                yield linktype, 4, 6


@dataclass(frozen=True)
class _Link:
    linktype: int
    ip_at: int
    family: int
    strength: int


def _find_ip(data: bytes, hint: int | None) -> _Link | None:
    best = None
    for linktype, at, family in _candidates(data):
        strength = _ipv4_strength(data, at) if family == 4 else _ipv6_strength(data, at) if family == 6 else 0
        if not strength:
            continue
        rank = (strength, linktype == hint, -_LINK_ORDER.index(linktype))
        if best is None or rank > best[0]:
            best = (rank, _Link(linktype, at, family, strength))
    return best[1] if best else None


def _ip_length(data: bytes, link: _Link) -> int:
    """The IP packet's length as its header gives it."""
    at = link.ip_at
    if link.family == 4:
        return int.from_bytes(data[at + 2:at + 4], "big")
    return 40 + int.from_bytes(data[at + 4:at + 6], "big")


def _addresses(data: bytes, link: _Link) -> tuple[str, str]:
    at = link.ip_at
    if link.family == 4:
        return str(ipaddress.IPv4Address(data[at + 12:at + 16])), str(ipaddress.IPv4Address(data[at + 16:at + 20]))
    return str(ipaddress.IPv6Address(data[at + 8:at + 24])), str(ipaddress.IPv6Address(data[at + 24:at + 40]))


def _checksums(packet: bytes, family: int) -> tuple[bool | None, bool | None, int | None]:
    """(IPv4 header checksum verifies, transport checksum verifies, transport protocol); None where
    it cannot be checked (a cut packet, a fragment, UDP without a checksum, another protocol)."""
    if family == 4:
        ihl = (packet[0] & 15) * 4
        header_ok = _checksum_ok(packet[:ihl])
        total = int.from_bytes(packet[2:4], "big")
        protocol = packet[9]
        if len(packet) < total or int.from_bytes(packet[6:8], "big") & 0x3FFF:
            return header_ok, None, protocol
        segment = packet[ihl:total]
        pseudo = packet[12:20] + bytes([0, protocol]) + len(segment).to_bytes(2, "big")
    else:
        header_ok, protocol = None, packet[6]
        total = 40 + int.from_bytes(packet[4:6], "big")
        if len(packet) < total:
            return None, None, protocol
        segment = packet[40:total]
        pseudo = packet[8:40] + len(segment).to_bytes(4, "big") + bytes([0, 0, 0, protocol])
    if protocol == 1:
        return header_ok, _checksum_ok(segment) if len(segment) >= 4 else None, protocol
    if protocol in (6, 58) or protocol == 17 and (family == 6 or segment[6:8] != b"\0\0"):
        minimum = {6: 20, 17: 8, 58: 4}[protocol]
        return header_ok, _checksum_ok(pseudo + segment) if len(segment) >= minimum else None, protocol
    return header_ok, None, protocol


# --- header lines --------------------------------------------------------------------------------

_HEADER_ADDRESSES = re.compile(
    r"(?P<src>[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7})(?:\.[0-9]{1,5})?"
    r"\s+(?:>|→|->)\s+"
    r"(?P<dst>[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7})(?:\.[0-9]{1,5})?"
    r"(?::|\s)", re.ASCII)
_TCP_FLAGS = re.compile(r"\s*Flags\s+\[([SFPRUWE.]{1,8}|none)\]", re.ASCII)
_FRAME_LENGTH = re.compile(r"ethertype\s[^,]{1,40},\s+length\s+([0-9]{1,6})|([0-9]{1,6})\s+bytes\s+on\s+wire",
                           re.ASCII)
_CUT_MARK = re.compile(r"\[\|[a-z0-9_-]{1,20}\]|truncated-ip|packet exceeded snapshot", re.ASCII)
_CHATTER = re.compile(
    r"(?:reading\s+from\s+file|listening\s+on)\s[^\n]{0,300}?,\s+link-type\s+(?P<link>[A-Za-z0-9_]{1,20})"
    r"(?:\s+\([^)]{0,60}\))?(?:,\s+(?:snapshot\s+length|capture\s+size)\s+(?P<snaplen>[0-9]{1,9})(?:\s+bytes)?)?"
    r"|tcpdump:\s+verbose\s+output\s+suppressed,\s+use\s+-v[^\n]{0,60}"
    r"|[0-9]{1,12}\s+packets?\s+(?:captured|received\s+by\s+filter|dropped\s+by\s+kernel)"
    r"|Running\s+as\s+user\s+\"[^\"\n]{0,64}\"\s+and\s+group\s+\"[^\"\n]{0,64}\"\.\s+This\s+could\s+be\s+dangerous\.",
    re.ASCII)


@dataclass(frozen=True)
class _Header:
    mark: _Mark
    end: int  # where the header's text ends: its line and the indented lines after it, or its rows
    src: str | None
    dst: str | None
    frame_length: int | None
    cut_mark: bool
    tcp_flags: frozenset | None = None  # tcpdump's "Flags [S.]": {"S", "."}


def _header(flat: str, mark: _Mark, rows_start: int) -> _Header:
    """What a packet's header says: its addresses, its frame length (-e; tshark -V), tcpdump's cut mark."""
    end = flat.find("\n", mark.end, rows_start)
    end = rows_start if end < 0 else end
    while end < rows_start:  # tcpdump's continuation lines (-v, decoded payload) are indented
        following = end + 1
        if following >= len(flat) or flat[following] not in " \t":
            break
        nxt = flat.find("\n", following, rows_start)
        end = rows_start if nxt < 0 else nxt
    text = flat[mark.end:min(rows_start, mark.end + 4000)]
    src = dst = flags = None
    for addresses in _HEADER_ADDRESSES.finditer(text):  # the first pair that are IP addresses (not MACs)
        src, dst = _address_or_none(addresses.group("src")), _address_or_none(addresses.group("dst"))
        if src is not None and dst is not None:
            flags = _TCP_FLAGS.match(text, addresses.end())  # "A.1 > B.2: Flags [S.]"
            break
        src = dst = None
    frame = _FRAME_LENGTH.search(text)
    frame_length = int(frame.group(1) or frame.group(2)) if frame else None
    tcp_flags = None if flags is None else frozenset() if flags.group(1) == "none" else frozenset(flags.group(1))
    return _Header(mark, end, src, dst, frame_length, bool(_CUT_MARK.search(text)), tcp_flags)


def _address_or_none(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


# --- the result ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One packet read from the text."""

    number: int  # 1, 2, ... in the order of the text
    t: float  # seconds since 1970 (for times of day: on ASSUMED_DATE)
    linktype: int  # pcap LINKTYPE_* of `data`
    data: bytes  # as read; zeros where rows were missing (`lost`)
    wire_len: int  # the length on the wire (more than len(data) when cut short)
    line: int  # the line of its first row
    last_line: int  # the line of its last row
    timed: bool  # False: no header line gave its time; it was placed between its neighbours
    lost: tuple[tuple[int, int], ...] = ()  # byte ranges [start, end) whose rows were missing (zeros)
    ip_checksum: bool | None = None  # the IPv4 header checksum verifies (None: IPv6, or not IP)
    l4_checksum: bool | None = None  # TCP/UDP/ICMP checksum verifies (None: not checkable)
    protocol: int | None = None
    src: str | None = None
    cut_mark: bool = False  # tcpdump printed its "[|tcp]" mark: the snap length cut it
    mixed: tuple[int, ...] = ()  # offsets of rows that came after the remains of other rows (lines lost?)
    trailer: int = 0  # bytes after the IP packet: Ethernet padding, the frame check sequence, a trailer

    @property
    def cut(self) -> bool:
        return len(self.data) < self.wire_len


@dataclass(frozen=True)
class Reading:
    """Everything read from one text: the frames and what to say about them."""

    frames: tuple[Frame, ...]
    lines: int
    formats: tuple[str, ...]
    clock: str  # what the times are, in words
    midnights: int  # how many times the time of day went past midnight
    snaplen: int | None  # from tcpdump's "snapshot length" line, when the text has it
    not_understood: tuple[int, ...]  # line numbers
    lost: tuple[str, ...]  # what the text shows was lost: header lines without rows, stray rows, non-IP blocks
    link_note: str = ""
    steps_back: tuple[tuple[int, float], ...] = ()  # (packet number, seconds) where the times go back


    def summary(self) -> list[str]:
        """The report, in lines for people."""
        return _summary(self)


# --- reading -------------------------------------------------------------------------------------


def parse(text: str, assume_date: date = ASSUMED_DATE) -> Reading:
    """Read the packets in `text` (see the module's docstring for how)."""
    written = _lines(text)
    flat = _clean(text)
    line_starts = [0] + [m.end() for m in re.finditer("\n", flat)]

    def line_of(position: int) -> int:
        return bisect.bisect_right(line_starts, position)

    times = list(_TIME.finditer(flat))
    time_starts = [m.start() for m in times]
    anchors = [a for a in _anchors(flat) if not _overlaps(a, time_starts)]
    anchor_starts = [a.start for a in anchors]
    marks = _marks(flat, times, anchor_starts)
    # where a row's hex digits must end: a header, or a row in tcpdump's or xxd's style; a bare offset
    # is no bound (a group before an odd last byte looks like one), its row's reading settles that
    limits = [a.start for a in anchors if a.kind != "bare"]
    bounds = set(limits) | {m.start for m in marks}
    mark_starts = [m.start for m in marks]
    for anchor in anchors:
        index = bisect.bisect_right(limits, anchor.start)
        _strict_groups(flat, anchor, bounds, limits[index] if index < len(limits) else len(flat))
    # a packet's header, or what is left of one ("192.0.2.10.50727 > 203.0.113.80.80:" without its
    # time; tcpdump's colon, not prose's "A > B"), is where a chain cannot go on: the rows after it
    # are another packet's
    breaks = sorted({m.start for m in marks if m.summary}
                    | {m.start() for m in _HEADER_ADDRESSES.finditer(flat) if m.group().endswith(":")})
    chains, strays = _chains(anchors, breaks)

    understood: list[tuple[int, int]] = []
    lost: list[tuple[int, str]] = []  # (where, what)
    hint, snaplen = None, None
    for m in _CHATTER.finditer(flat):
        understood.append((m.start(), m.end()))
        if m.group("link"):
            hint = _LINK_NAMES.get(m.group("link").upper(), hint)
        if m.group("snaplen"):
            snaplen = int(m.group("snaplen"))

    claimed: set[int] = set()  # header lines of blocks not taken (an ARP packet's, say): not orphans

    def orphan_headers(found: list[_Mark]) -> None:
        for orphan in found:
            if orphan.summary and orphan.start not in claimed:
                lost.append((orphan.start, f"line {line_of(orphan.start)}: a packet's header line whose hex rows "
                                           f"are missing"))

    row_or_header_starts = bounds | set(anchor_starts)
    built = []  # (chain, header, _Built)
    previous_end = 0
    for chain in chains:
        first = bisect.bisect_left(mark_starts, previous_end)
        last = bisect.bisect_left(mark_starts, chain.start)
        header = None
        if last > first:
            mark = marks[last - 1]
            index = bisect.bisect_right(anchor_starts, mark.end)  # its text ends where rows begin, any rows
            header = _header(flat, mark, min(chain.start, anchor_starts[index] if index < len(anchor_starts)
                                             else chain.start))
        result = _bytes_of((flat, written), chain, header, hint, row_or_header_starts)
        if header is not None and result.link is not None:
            if _names_others(header, result):  # the header of a packet whose rows are lost: not this one's
                orphan_headers(marks[first:last])
                header = None
            else:
                understood.append((header.mark.start, header.end))
                orphan_headers(marks[first:last - 1])
        if result.past_end:
            lost.append((result.past_end[0], f"{_line_range(line_of(result.past_end[0]), line_of(result.past_end[1]))}"
                                             f": hex rows past the end of the packet above them (a packet whose "
                                             f"first row is missing)"))
        if result.link is None:  # its header line, if any, stays for a packet after it, and is no orphan
            if header is not None:
                claimed.add(header.mark.start)
            if len(result.data) + len(chain.rows[-1].anchor.strict) >= 20:  # less is a few words: not understood
                lost.append((chain.start, f"{_line_range(line_of(chain.start), line_of(result.end))}: "
                                          f"{result.why}, not taken"))
            continue
        previous_end = result.end
        understood.extend(result.spans)
        built.append((chain, header, result))
    orphan_headers(marks[bisect.bisect_left(mark_starts, previous_end):])
    lost += _stray_statements(strays, chains, line_of)

    times, clock, midnights = _times([h.mark if h else None for _c, h, _r in built], assume_date)
    frames = []
    for number, ((chain, header, result), (t, timed)) in enumerate(zip(built, times), 1):
        data, link = bytes(result.data), result.link
        ip_ok, l4_ok, protocol = _checksums(data[link.ip_at:], link.family)
        wire = link.ip_at + _ip_length(data, link)
        if header and header.frame_length and link.linktype != LINK_RAW:
            wire = max(wire, header.frame_length)
        frames.append(Frame(number, t, link.linktype, data, max(wire, len(data)), line_of(chain.start),
                            line_of(result.end), timed,
                            tuple(result.ranges), ip_ok, l4_ok, protocol, _addresses(data, link)[0],
                            bool(header and header.cut_mark), tuple(result.mixed), result.trailer))
    kinds = tuple(dict.fromkeys(FORMATS[chain.kind] for chain, _h, _r in built))
    lines = flat.count("\n") + (0 if flat.endswith("\n") else 1)
    steps_back = tuple((b.number, a.t - b.t) for a, b in zip(frames, frames[1:])
                       if a.timed and b.timed and b.t < a.t - STEP_BACK)
    return Reading(tuple(frames), lines, kinds, clock, midnights, snaplen,
                   _not_understood(flat, understood, line_of), tuple(what for _at, what in sorted(lost)),
                   _link_note(frames), steps_back)


def _stray_statements(strays: list[_Anchor], chains: list[_Chain], line_of) -> list[tuple[int, str]]:
    """Runs of stray rows, in tcpdump's or xxd's style or in the style of a chain that was read (a
    hex-looking word of prose followed by two hex digits is not a row)."""
    styles = {(c.kind, c.digits) for c in chains}
    rows = [a for a in strays if len(a.strict) >= 8 and
            (a.kind != "bare" or any(kind == "bare" and len(a.digits) >= digits for kind, digits in styles))]
    statements, run = [], []
    chain_starts = sorted(c.start for c in chains)
    for anchor in rows + [None]:
        if run and (anchor is None or bisect.bisect_left(chain_starts, run[-1].start)
                    != bisect.bisect_left(chain_starts, anchor.start)):
            lines = _line_range(line_of(run[0].start), line_of(run[-1].stop))
            statements.append((run[0].start, f"{lines}: hex rows (offset 0x{run[0].value(len(run[0].digits)):04x}"
                                             f"{'...' if len(run) > 1 else ''}) of a packet whose first row is "
                                             f"missing, not taken"))
            run = []
        if anchor is not None:
            run.append(anchor)
    return statements


@dataclass
class _Built:
    """A chain's bytes, or why it holds no packet."""

    data: bytearray
    ranges: list  # [(start, end)] of bytes whose rows were missing (zeros)
    link: _Link | None
    end: int  # where its rows end in the text
    spans: list  # its rows and ASCII columns in the text
    why: str = ""
    past_end: tuple[int, int] | None = None  # rows after the packet's end: (start, end) in the text
    mixed: list = field(default_factory=list)  # offsets of rows that follow the remains of other rows
    trailer: int = 0  # bytes after the IP packet


_HEADERS_WITHIN = 20 + 60 + 20  # the farthest a TCP header can end: SLL2, a full IPv4 header, TCP


def _bytes_of(texts: tuple[str, str], chain: _Chain, header: _Header | None, hint: int | None,
              bounds: set[int]) -> _Built:
    """The bytes of a chain: each row's count from the next row's offset, the last row's from the IP
    header; missing rows (and rows read only in part) become zeros, and their ranges are kept."""
    flat = texts[0]
    data, ranges, spans, mixed = bytearray(), [], [], []
    rows = chain.rows
    for n, row in enumerate(rows[:-1]):
        following = rows[n + 1]
        step = following.offset - row.offset
        count = min(step, chain.width)
        got, end = _row_bytes(flat, row.anchor, following.start, count)
        if len(got) < count:
            ranges.append((row.offset, row.offset + count))
            got = bytes(count)
        else:
            after = _ascii_end(texts, end, got, following.start)
            spans.append((row.start, after))
            if _debris(flat, after, following.start):
                mixed.append(following.offset)
        if step > count:
            ranges.append((row.offset + count, following.offset))
            got += bytes(step - count)
        data += got
    last = rows[-1]
    provisional = bytes(data) + last.anchor.strict[:chain.width]
    link = _find_ip(provisional, hint)
    if link is None or not _header_agrees(provisional, link, header):
        if ranges and ranges[0][0] < _HEADERS_WITHIN:
            why = "a packet whose IP or TCP header is among the missing rows"
        elif link is None:
            why = "hex rows that hold no IP packet"
        else:
            why = "an IPv4 header whose checksum fails, and no header line naming its addresses"
        return _Built(data, ranges, None, last.anchor.stop, spans, why)
    ip_end = wanted = link.ip_at + _ip_length(provisional, link)
    rows_end = rows[-1].offset + min(chain.width, len(rows[-1].anchor.strict))
    if ip_end < rows_end <= ip_end + MAX_TRAILER and not any(b > ip_end for _a, b in ranges):
        wanted = rows_end  # Ethernet padding, the frame check sequence, a trailer: bytes after the packet
    past_end = None
    kept = [row for row in rows if row.offset < wanted]
    if len(kept) < len(rows):  # rows past the packet's end: a later packet's, whose first row is lost
        past_end = (rows[len(kept)].anchor.start, rows[-1].anchor.stop)
        del data[wanted:]
        ranges = [(a, min(b, wanted)) for a, b in ranges if a < wanted]
        last = kept[-1]
        del data[last.offset:]
        ranges = [(a, min(b, last.offset)) for a, b in ranges if a < last.offset]
    count = max(0, min(chain.width, wanted - last.offset))
    short = ip_end - last.offset
    if 0 < short < count and not _trailer_ends_row(texts, last.anchor, count, short, bounds):
        count = short  # hex-looking prose after the packet's last bytes, or their ASCII column: no trailer
    got, end = _row_bytes(flat, last.anchor, len(flat), count, loose=False)
    if len(got) < count:
        got, end = _glued_tail(flat, last.anchor, got, end, count)
    data += got
    spans.append((last.start, _ascii_end(texts, end, got, len(flat))))
    ranges = _merged(ranges)
    header_end = link.ip_at + (40 if link.family == 6 else (data[link.ip_at] & 15) * 4) + 20
    if len(data) < link.ip_at + 20 or any(a < header_end for a, _b in ranges):
        return _Built(data, ranges, None, max(end, last.anchor.stop), spans,
                      "a packet whose IP or TCP header is among the missing rows")
    return _Built(data, ranges, link, max(end, last.anchor.stop), spans, past_end=past_end, mixed=mixed,
                  trailer=max(0, len(data) - ip_end))


def _trailer_ends_row(texts: tuple[str, str], anchor: _Anchor, count: int, short: int, bounds: set[int]) -> bool:
    """The row's `count` bytes (the packet's `short` last ones and a trailer) end as tcpdump ends a
    row: on the same line, with their ASCII column, or where the next header or row begins. Not when
    the packet's own bytes have an ASCII column that reads as the trailer (tcpdump -X prints "FA"
    for 46 41), nor at the end of the text (a word of prose that looks like hex is as likely)."""
    flat = texts[0]
    whole, end = _row_bytes(flat, anchor, len(flat), count, loose=False)
    own, own_end = _row_bytes(flat, anchor, len(flat), short, loose=False)
    if "\n" in flat[own_end:end]:  # tcpdump prints a row on one line: the next line is something else
        return False
    if _ascii_end(texts, end, whole, len(flat)) != end:
        return True
    if _ascii_end(texts, own_end, own, len(flat)) != own_end:
        return False
    while end < len(flat) and flat[end] in " \t\n":
        end += 1
    return end in bounds


def _glued_tail(flat: str, anchor: _Anchor, got: bytes, end: int, count: int) -> tuple[bytes, int]:
    """The last row's missing bytes from the one word after its groups, when that word starts with
    them and runs on (prose glued to the hex when its line break was lost: "0307Note"): the bytes
    the IP header asks for, never a word that is only hex (an ASCII column, or the text after a cut)."""
    start = anchor.stop if anchor.groups else anchor.end
    while start < len(flat) and flat[start] in " \t\n":
        start += 1
    need = 2 * (count - len(got))
    digits = flat[start:start + need]
    if len(digits) == need and all(c in _HEX for c in digits) and start + need < len(flat) \
            and flat[start + need] not in " \t\n":
        return got + bytes.fromhex(digits), start + need
    return got, end


_GROUP_RUN = re.compile(r"(?<!\S)((?:[0-9a-fA-F]{4}|[0-9a-fA-F]{2})(?:[ \t\n]+(?:[0-9a-fA-F]{4}|[0-9a-fA-F]{2})){1,40})"
                        r"(?:[ \t\n]+(\S{1,16}))?", re.ASCII)


def _debris(flat: str, start: int, end: int) -> bool:
    """Between two rows, the remains of another row: hex groups followed by their own ASCII column,
    or six groups or more in a row (prose has hex-looking words, not runs of them). A chain that
    goes on past them may be two packets' rows joined where lines were lost."""
    for run in _GROUP_RUN.finditer(flat, start, end):
        groups = run.group(1).split()
        if len(groups) >= 6:
            return True
        column = run.group(2)
        if column:
            row = bytes.fromhex("".join(groups))
            if any(column.endswith("".join(t[b] for b in row).replace(" ", "")) and len(row) >= 2
                   for t in (_PRINTABLE_TCPDUMP, _PRINTABLE_WIRESHARK)):
                return True
    return False


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _row_bytes(flat: str, anchor: _Anchor, limit: int, count: int, loose: bool = True) -> tuple[bytes, int]:
    """`count` bytes of a row: its whole groups or, where they fall short and `loose`, pairs of hex
    digits across blanks (a line broken inside a group). Returns fewer bytes when neither has them."""
    strict = anchor.strict
    if len(strict) >= count or not loose:
        taken, total = anchor.end, 0
        for _start, end, group in anchor.groups:
            if total >= count:
                break
            total += len(group)
            taken = end
        return strict[:count], taken
    got, end = _loose_bytes(flat, anchor.end, limit, count)
    return (got, end) if got else (strict, anchor.stop)


_PRINTABLE_TCPDUMP = "".join(chr(b) if 0x21 <= b <= 0x7E else "." for b in range(256))
_PRINTABLE_WIRESHARK = "".join(chr(b) if 0x20 <= b <= 0x7E else "." for b in range(256))


def _ascii_end(texts: tuple[str, str], position: int, row: bytes, limit: int) -> int:
    """Past the row's ASCII column in the cleaned text or as written (markup in a payload), or
    `position` unchanged."""
    for flat in texts:
        end = _ascii_end_in(flat, position, row, limit)
        if end != position:
            return end
    return position


def _ascii_end_in(flat: str, position: int, row: bytes, limit: int) -> int:
    """Past the row's ASCII column (tcpdump -X: no blanks; Wireshark, hexdump -C: blanks, `|`), when
    what follows the hex is exactly the bytes rendered; else `position` unchanged."""
    if not row:
        return position
    # A `|` before the first character is hexdump -C's border, unless the row's first byte is
    # itself 0x7c (tcpdump -X has no border): both readings are tried.
    for table, border in ((_PRINTABLE_TCPDUMP, True), (_PRINTABLE_WIRESHARK, True), (_PRINTABLE_TCPDUMP, False)):
        expected = "".join(table[b] for b in row).replace(" ", "")
        at, matched = position, 0
        while at < limit and matched < len(expected):
            char = flat[at]
            if char in " \t\n" or border and char == "|" and matched in (0, len(expected)):
                at += 1
                continue
            if char != expected[matched]:
                break
            matched += 1
            at += 1
        if matched == len(expected):
            return at + (1 if at < limit and flat[at] == "|" else 0)
    return position


def _names_others(header: _Header, result: _Built) -> bool:
    """The header line names other addresses, or other TCP flags, than the bytes below it."""
    data, link = bytes(result.data), result.link
    if header.src is not None and header.dst is not None and _addresses(data, link) != (header.src, header.dst):
        return True
    return header.tcp_flags is not None and _tcp_flags(data, link) not in (None, header.tcp_flags)


_TCPDUMP_FLAG_LETTERS = ((0x02, "S"), (0x01, "F"), (0x08, "P"), (0x04, "R"), (0x20, "U"), (0x40, "E"), (0x80, "W"),
                         (0x10, "."))


def _tcp_flags(data: bytes, link: _Link) -> frozenset | None:
    """The TCP flags of an IPv4 packet as tcpdump letters them; None when not TCP or not at hand."""
    at = link.ip_at
    if link.family != 4 or data[at + 9] != 6:
        return None
    flags_at = at + (data[at] & 15) * 4 + 13
    if len(data) <= flags_at:
        return None
    return frozenset(letter for bit, letter in _TCPDUMP_FLAG_LETTERS if data[flags_at] & bit)


def _header_agrees(data: bytes, link: _Link, header: _Header | None) -> bool:
    """A checksummed IPv4 header (or an exact IPv6 length) needs no witness; a weaker one needs a
    header line that names the same addresses."""
    if link.strength >= 2:
        return True
    if header is None or header.src is None or header.dst is None:
        return False
    return _addresses(data, link) == (header.src, header.dst)


def _times(marks: list[_Mark | None], assume_date: date) -> tuple[list[tuple[float, bool]], str, int]:
    """Each packet's time and whether the text gave it; the clock, in words; midnights passed."""
    base = datetime(assume_date.year, assume_date.month, assume_date.day, tzinfo=timezone.utc).timestamp()
    kinds = {m.kind for m in marks if m}
    known: list[float | None] = []
    midnights, day, previous = 0, 0, None
    deltas = kinds == {"tod"} and _is_delta([m.seconds for m in marks if m])
    total = 0.0
    for mark in marks:
        if mark is None:
            known.append(None)
            continue
        if mark.kind == "tod" and deltas:
            total += mark.seconds
            known.append(base + total)
        elif mark.kind == "tod":
            if previous is not None and mark.seconds < previous - 43200:
                day += 1
                midnights += 1
            elif previous is not None and mark.seconds > previous + 43200:
                day -= 1
            previous = mark.seconds
            known.append(base + day * 86400 + mark.seconds)
        elif mark.kind == "rel":
            known.append(base + mark.seconds)
        else:
            known.append(mark.seconds)
    first = next((m.seconds for m in marks if m), None)
    clock = _clock_words(kinds, deltas, assume_date, midnights, first)
    return _fill_gaps(known), clock, midnights


def _is_delta(seconds: list[float]) -> bool:
    """tcpdump -ttt (each time since the previous packet) starts at zero and goes back and forth;
    -ttttt (since the first) starts at zero and only grows, as a time of day does."""
    return bool(seconds) and seconds[0] == 0.0 and any(b < a for a, b in zip(seconds, seconds[1:]))


def _clock_words(kinds: set, deltas: bool, assume_date: date, midnights: int, first: float | None) -> str:
    if not kinds:
        return f"the text has no times: packets are placed {NO_TIME_STEP * 1000:g} ms apart, so timing tells nothing"
    if deltas:
        return f"tcpdump -ttt times (since the previous packet), counted from {assume_date} 00:00 UTC (assumed)"
    if kinds == {"tod"} and first == 0.0:
        return f"tcpdump -ttttt times (since the first packet), counted from {assume_date} 00:00 UTC (assumed)"
    if kinds == {"tod"}:
        words = f"times of day only (tcpdump's default): the date is not in the text, {assume_date} (UTC) is assumed"
        if midnights:
            words += f"; the times pass midnight {midnights} time(s), each taken as the next day"
        return words
    if kinds == {"rel"}:
        return f"seconds since the first packet (tshark's summary lines), counted from {assume_date} (assumed)"
    if kinds == {"epoch"}:
        return "seconds since 1970 (tcpdump -tt, tshark's Epoch Time)"
    if kinds == {"date"}:
        return "dates and times (tcpdump -tttt), taken as UTC"
    return "mixed time formats: " + ", ".join(sorted(kinds))


def _fill_gaps(known: list[float | None]) -> list[tuple[float, bool]]:
    """A packet without a time goes evenly between the packets around it that have one."""
    if all(t is None for t in known):
        return [(n * NO_TIME_STEP, False) for n in range(len(known))]
    before: list[int | None] = []
    last = None
    for n, t in enumerate(known):
        last = n if t is not None else last
        before.append(last)
    after: list[int | None] = [None] * len(known)
    following = None
    for n in range(len(known) - 1, -1, -1):
        following = n if known[n] is not None else following
        after[n] = following
    result = []
    for n, t in enumerate(known):
        b, a = before[n], after[n]
        if t is not None:
            result.append((t, True))
        elif b is None:
            result.append((known[a] - (a - n) * NO_TIME_STEP, False))
        elif a is None:
            result.append((known[b] + (n - b) * NO_TIME_STEP, False))
        else:
            result.append((known[b] + (n - b) / (a - b) * (known[a] - known[b]), False))
    return result


def _not_understood(flat: str, understood: list[tuple[int, int]], line_of) -> tuple[int, ...]:
    """Lines with text outside every header, row, ASCII column and line of tcpdump's chatter."""
    lines = set()
    position = 0
    for start, end in sorted(understood) + [(len(flat), len(flat))]:
        if start > position:
            for word in re.finditer(r"\S+", flat[position:start]):
                lines.add(line_of(position + word.start()))
        position = max(position, end)
    return tuple(sorted(lines))


def _line_range(first: int, last: int) -> str:
    return f"line {first}" if first == last else f"lines {first}-{last}"


def _link_note(frames: list[Frame]) -> str:
    names = {LINK_RAW: "no link header (the bytes start at the IP header)",
             LINK_ETHERNET: "an Ethernet header before the IP header",
             LINK_SLL: "a Linux cooked (SLL) header", LINK_SLL2: "a Linux cooked (SLL2) header",
             LINK_NULL: "a BSD loopback header", LINK_LOOP: "an OpenBSD loopback header"}
    kinds = list(dict.fromkeys(f.linktype for f in frames))
    return "; ".join(names[k] for k in kinds)


# --- the report ----------------------------------------------------------------------------------


def _numbers(values: list[int], most: int = 12) -> str:
    """1, 2, 3, 7 -> "1-3, 7" (at most `most` pieces, then how many more)."""
    pieces, start = [], None
    for n, value in enumerate(values):
        if start is None:
            start = value
        if n + 1 == len(values) or values[n + 1] != value + 1:
            pieces.append(str(start) if start == value else f"{start}-{value}")
            start = None
    more = f" and {len(pieces) - most} more" if len(pieces) > most else ""
    return ", ".join(pieces[:most]) + more


def _summary(reading: Reading) -> list[str]:
    frames = reading.frames
    lines = [f"{len(frames)} packet(s) read from {' and '.join(reading.formats)}; "
             f"{reading.link_note or 'no link header'}",
             f"times: {reading.clock}"]
    untimed = [f.number for f in frames if not f.timed]
    if untimed and len(untimed) < len(frames):
        lines.append(f"no header line gave the time of packet(s) {_numbers(untimed)}: "
                     f"placed between their neighbours")
    if reading.steps_back:
        where = ", ".join(f"packet {n} ({seconds:.3f} s)" for n, seconds in reading.steps_back[:6])
        lines.append(f"the times go back at {where}: two captures pasted one after the other? (give each end "
                     f"its own file: probe analyze CLIENT SERVER)")
    ip = [f for f in frames if f.ip_checksum is not None]
    l4 = [f for f in frames if f.l4_checksum is not None]
    words = []
    if ip:
        words.append(f"{sum(f.ip_checksum for f in ip)}/{len(ip)} IPv4 headers")
    if l4:
        words.append(f"{sum(f.l4_checksum for f in l4)}/{len(l4)} TCP/UDP/ICMP checksums")
    if words:
        lines.append("checksums: " + ", ".join(words) + " verify" + _checksum_note(frames))
    trailed = [f for f in frames if f.trailer]
    if trailed:
        lines.append(f"packet(s) {_numbers([f.number for f in trailed])}: "
                     f"{_span(sorted({f.trailer for f in trailed}))} byte(s) after the IP packet "
                     f"(Ethernet padding, the frame check sequence or a trailer), kept in --write-pcap")
    cut = [f for f in frames if f.cut]
    for why in dict.fromkeys(_cut_cause(f, reading, cut) for f in cut):
        which = [f for f in cut if _cut_cause(f, reading, cut) == why]
        kept = sorted({len(f.data) for f in which})
        lines.append(f"cut short ({why}): packet(s) {_numbers([f.number for f in which])}, "
                     f"{_span(kept)} byte(s) kept of {_span(sorted({f.wire_len for f in which}))}")
    for f in frames:
        if f.mixed:
            lines.append(f"packet {f.number} (lines {f.line}-{f.last_line}): before its row(s) at "
                         f"{', '.join(f'0x{o:04x}' for o in f.mixed)} are the remains of other rows: lines may be "
                         f"missing there, and its bytes may be two packets'")
        if f.lost:
            spans = ", ".join(f"0x{a:04x}-0x{b - 1:04x}" for a, b in f.lost)
            lines.append(f"packet {f.number} (line {f.line}): bytes {spans} are missing from the text "
                         f"(zeros in their place)")
    lines += [f"lost: {statement}" for statement in reading.lost[:20]]
    if len(reading.lost) > 20:
        lines.append(f"lost: and {len(reading.lost) - 20} more")
    if reading.not_understood:
        lines.append(f"not understood: line(s) {_numbers(list(reading.not_understood))} "
                     f"of {reading.lines}")
    return lines


def _checksum_note(frames: tuple[Frame, ...]) -> str:
    wrong = [f for f in frames if f.ip_checksum is False or f.l4_checksum is False]
    if not wrong:
        return ""
    sources = {f.src for f in wrong}
    note = f" (wrong: packet(s) {_numbers([f.number for f in wrong])}"
    if len(sources) == 1 and all(f.ip_checksum is not False for f in wrong):
        note += f", all sent by {sources.pop()}: usual for the capturing host's own packets (checksum offload)"
    elif any(f.lost for f in wrong):
        note += ", some with bytes missing from the text"
    else:
        note += ": bytes misread, or damaged on the way"
    return note + ")"


def _cut_cause(frame: Frame, reading: Reading, cut: list[Frame]) -> str:
    """The snap length when tcpdump marked the cut, its snapshot length line says so, or several packets
    stop at the same length; lines missing from the text when the packet stops short of that length."""
    if frame.cut_mark or reading.snaplen == len(frame.data) or \
            sum(1 for f in cut if len(f.data) == len(frame.data)) > 1:
        return "the snap length"
    if reading.snaplen and len(frame.data) < reading.snaplen:
        return "lines missing from the text"
    return "lines missing from the text, or the snap length"


def _span(values: list[int]) -> str:
    return str(values[0]) if len(values) == 1 else f"{values[0]} to {values[-1]}"


# --- files ---------------------------------------------------------------------------------------


def read(path: str, assume_date: date = ASSUMED_DATE) -> Reading:
    """Read a text capture file (at most MAX_TEXT_BYTES); ProbeError when it holds no packet."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_TEXT_BYTES + 1)
    except OSError as error:
        raise ProbeError(f"cannot read {path}: {error.strerror}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise ProbeError(f"{path} is text of more than {MAX_TEXT_BYTES >> 20} MiB: too much to read as a pasted "
                         f"capture (convert it with text2pcap, then analyse the pcap)")
    reading = parse(decode(data), assume_date)
    if not reading.frames:
        raise ProbeError(f"{path} is not a pcap or pcapng file, and no packet could be read from it as text: "
                         f"{_nothing_found(reading)}")
    return reading


def _nothing_found(reading: Reading) -> str:
    if reading.lost:
        return f"{reading.lost[0]} ({len(reading.lost)} such place(s))"
    return (f"none of its {reading.lines} line(s) holds hex rows (an offset, then hex bytes, as tcpdump -x or "
            f"Wireshark's hex dump prints them)")


_CACHE: dict = {}


def read_cached(path: str) -> Reading:
    """`read`, once per file version: the command reports what was read, then analyses the same packets."""
    import os

    try:
        status = os.stat(path)
        key = (os.path.realpath(path), status.st_size, status.st_mtime_ns)
    except OSError:
        return read(path)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = read(path)
    return _CACHE[key]


def is_text_file(path: str) -> bool:
    """The file's first bytes are text (a pcap or pcapng file's never are: their headers hold NULs)."""
    try:
        with open(path, "rb") as handle:
            return looks_like_text(handle.read(HEAD_BYTES))
    except OSError:
        return False


def ip_packets(path: str, note=None):
    """(time, IP packet) for every frame of a text capture, as `pcapfile.ip_packets` streams a pcap;
    what was read goes to `note` (the reader's warnings), one sentence at a time."""
    from probe.files.pcap import ip_payload

    reading = read_cached(path)
    if note is not None:
        for n, line in enumerate(reading.summary()):
            note(f"{path} is text: {line}" if n == 0 else f"{path}: {line}")
    for frame in reading.frames:
        packet = ip_payload(frame.linktype, frame.data)
        if packet is not None:
            yield frame.t, packet
