"""Published fingerprints of real injectors, as data.

Each entry is what a named source measured of one device's forged packets in the server's name
(toward the client): flags, window, IP-ID range, DF, a fixed TTL, a payload, how many come at once.
`matches` turns a packet that fits an entry into a `Signal` naming the device and the source. A
fingerprint is evidence, never proof: it is weighed with the other signals (weight 2 at most, so a
match alone never blames), because a genuine stack can share any one field by chance. The physics
(`heuristics.too_early` and its kin) needs no fingerprint at all; these only help when a device is
good at looking like the server, and they name it when it is recognised.

To add a device: one `Fingerprint` below, with the source that measured it and the look-alike it
could be confused with; `tests/unit/test_signatures.py` must show it firing on a hand-made
sequence of that shape and not on a genuine stack's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from probe.record import PacketRecord


@dataclass(frozen=True)
class Fingerprint:
    device: str
    source: str
    flags: str  # the TCP flags exactly, e.g. "R" or "RA"
    window: int | None = None
    ip_ids: tuple[int, int] | None = None  # an inclusive range
    df: bool | None = None
    ttl: int | None = None  # a fixed TTL as the packets arrive
    payload: bytes | None = None
    burst: int = 1  # how many packets of this shape arrive together
    identical: bool = False  # the burst's packets are copies (same seq, IP-ID, TTL, window)
    counting: bool = False  # the burst's windows count up by one
    weight: int = 2
    look_alike: str = ""


FINGERPRINTS = (
    Fingerprint(
        "GFW (type I)", "Wu, Zohaib et al., 'A Wall Behind A Wall', IEEE S&P 2025, table of fingerprints; "
        "Wang et al., IMC 2017, section 2.1", flags="R", ip_ids=(0, 0), df=False,
        look_alike="a stack that resets with IP-ID 0 and without DF (Linux resets with IP-ID 0 but sets DF)"),
    Fingerprint(
        "GFW (type II)", "Wu, Zohaib et al., IEEE S&P 2025: three duplicate and identical RST/ACKs, DF set",
        flags="RA", df=True, burst=3, identical=True,
        look_alike="none known: a stack numbers every packet it sends, and TCP never repeats a reset"),
    Fingerprint(
        "GFW (type III)", "Wu, Zohaib et al., IEEE S&P 2025: RST/ACK, IP-ID 0x9916-0x9933, no DF, TTL 248",
        flags="RA", ip_ids=(0x9916, 0x9933), df=False, ttl=248,
        look_alike="a router-like stack (initial TTL 255) 7 hops away whose counter is in that range"),
    Fingerprint(
        "Henan firewall", "Wu, Zohaib et al., IEEE S&P 2025: RST/ACK carrying the 10 bytes 01..09 00, IP-ID 1, "
        "no DF", flags="RA", payload=bytes(range(1, 10)) + b"\x00", ip_ids=(1, 1), df=False,
        look_alike="none known: a reset rarely carries data (RFC 9293 allows it)"),
    Fingerprint(
        "GFW (port-443 block, 2023-2025)", "net4people/bbs#285 and #511 (GFW Report): three RST/ACKs whose "
        "windows (and TTLs) count up by one", flags="RA", burst=3, counting=True,
        look_alike="none known: a stack's window does not step by one between resets sent together"),
    Fingerprint(
        "Airtel (India)", "Tripwire, lhmerino/censorship-detection pkg/detector/signature.go: WIN signature, "
        "a reset with window 16", flags="R", window=16, weight=1,
        look_alike="a stack whose receive window happens to be 16 bytes when it resets"),
    Fingerprint(
        "Airtel (India)", "Tripwire, pkg/detector/signature.go: WIN signature (RST/ACK form)", flags="RA", window=16,
        weight=1, look_alike="a stack whose receive window happens to be 16 bytes when it resets"),
)


def _fits(fingerprint: Fingerprint, packet: PacketRecord) -> bool:
    if packet.flags != fingerprint.flags or packet.version != 4 and fingerprint.ip_ids is not None:
        return False
    if fingerprint.window is not None and packet.win != fingerprint.window:
        return False
    if fingerprint.ip_ids is not None and not fingerprint.ip_ids[0] <= packet.ip_id <= fingerprint.ip_ids[1]:
        return False
    if fingerprint.df is not None and packet.df != fingerprint.df:
        return False
    if fingerprint.ttl is not None and packet.ttl != fingerprint.ttl:
        return False
    return fingerprint.payload is None or packet.payload == fingerprint.payload


def _burst_fits(fingerprint: Fingerprint, burst: list[PacketRecord]) -> bool:
    shaped = [p for p in burst if _fits(fingerprint, p)]
    if len(shaped) < fingerprint.burst:
        return False
    if fingerprint.identical:
        return len({(p.seq, p.ack, p.ip_id, p.ttl, p.win) for p in shaped}) == 1 and shaped[0].ip_id != 0
    if fingerprint.counting:
        windows = sorted(p.win for p in shaped)
        return any(windows[i + 2] - windows[i] == 2 and len(set(windows[i:i + 3])) == 3
                   for i in range(len(windows) - 2))
    return True


def matches(packet: PacketRecord, nearby: Callable[[], list[PacketRecord]]) -> list[tuple[Fingerprint, str]]:
    """The fingerprints that `packet` (in the server's name) fits, with `nearby()` the packets in
    the server's name that arrived with it (for the fingerprints of bursts), each with a sentence."""
    found = []
    for fingerprint in FINGERPRINTS:
        if _fits(fingerprint, packet) and (fingerprint.burst == 1 or _burst_fits(fingerprint, nearby())):
            found.append((fingerprint, f"fits the published fingerprint of {fingerprint.device} ({fingerprint.source})"))
    return found
