"""Where the TCP answer comes from, against where the server's address is: pure reasoning.

Theory of operation. Two TTL sweeps toward the same address are compared (the idea of
tracebox, IMC 2013, and of traceroute -T against traceroute -I):
- TCP: SYNs with TTL 1, 2, ... The first TTL that draws a TCP answer (SYN-ACK or RST) is
  where something speaks TCP for the server's address and port.
- ICMP echo: the first TTL that draws an echo reply is where the address itself is.
If the TCP answer shows up at a smaller TTL than the address, the TCP answer came from a
device in front of the server: a firewall resetting SYNs, a transparent proxy shaking hands.
A box acting in a router's forwarding path only sees packets that passed that router's TTL
check, so its answer first shows one TTL later than its hop; the TTL its own packet arrives
with (distance = initial TTL - TTL + 1) settles which: the hop is the smaller of the two when
they differ by one.

Known limits: an address that does not answer ping (no conclusion, said so); a box that
intercepts ICMP echo too (then both sweeps agree and nothing is claimed); load balancers
answering echo themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from probe.engine.baseline import hop_distance, initial_ttl


@dataclass(frozen=True)
class HopReply:
    """What one TTL-limited probe drew: "time-exceeded", "tcp", "echo-reply", "unreachable" or "none"."""

    ttl: int
    kind: str
    source: str | None = None
    reply_ttl: int | None = None
    flags: str = ""
    rtt_ms: float | None = None


@dataclass(frozen=True)
class Location:
    tcp_answer_at: int | None  # first probe TTL that drew a TCP answer
    address_at: int | None  # first probe TTL that drew an echo reply from the address
    in_front: bool  # the TCP answer comes from a device in front of the address
    hop: int | None
    evidence: tuple[str, ...]
    answer: HopReply | None = None  # the sweep's first TCP answer (its flags, the TTL it arrived with)


def locate(tcp_sweep: list[HopReply], echo_sweep: list[HopReply], server: str) -> Location:
    tcp = next((r for r in tcp_sweep if r.kind == "tcp"), None)
    echo = next((r for r in echo_sweep if r.kind == "echo-reply" and r.source == server), None)
    evidence = []
    if tcp is None:
        return Location(None, echo.ttl if echo else None, False, None, ("no TCP answer in the TTL sweep",))
    evidence.append(f"a SYN with TTL {tcp.ttl} drew {tcp.flags} (arriving with TTL {tcp.reply_ttl})")
    passed = [r for r in tcp_sweep if r.kind == "time-exceeded" and r.ttl < tcp.ttl]
    if passed:
        evidence.append(f"TTL {passed[-1].ttl} expired at router {passed[-1].source}")
    if echo is None:
        evidence.append(f"{server} did not answer ICMP echo, so its own distance is unknown")
        return Location(tcp.ttl, None, False, None, tuple(evidence), tcp)
    evidence.append(f"{server} itself answers ICMP echo only from TTL {echo.ttl}")
    if tcp.ttl >= echo.ttl:
        # the last hop before the server: a forwarding-path box there answers at the same TTL as
        # the address itself; only the TTL its answer arrives with (beside the echo reply's) tells.
        # Only for a reset: a SYN-ACK from there is as likely the server's own SYN proxy (scenario
        # 13), which hands the connection on to the server, and the exchange judges that better.
        # A first answer past the echo's TTL, every TTL between silent, is the same box whose
        # probes at the echo's TTL were lost (the sweep already sent each silent TTL twice): the
        # TTL a probe first draws an answer at is an upper bound, the TTLs answers arrive with are
        # measurements, so those decide. A time-exceeded in between is a router there: no claim.
        lost_only = all(r.kind == "none" for r in tcp_sweep if echo.ttl <= r.ttl < tcp.ttl)
        nearer = ("R" in tcp.flags and tcp.reply_ttl is not None and echo.reply_ttl is not None
                  and lost_only
                  and initial_ttl(tcp.reply_ttl) == initial_ttl(echo.reply_ttl)
                  and hop_distance(tcp.reply_ttl) == echo.ttl - 1 < hop_distance(echo.reply_ttl))
        if not nearer:
            return Location(tcp.ttl, echo.ttl, False, None, tuple(evidence), tcp)
        hop = echo.ttl - 1
        if tcp.ttl > echo.ttl:
            evidence.append(f"the SYNs with TTL {echo.ttl} to {tcp.ttl - 1} drew nothing, even sent again")
        evidence.append(f"but its answer arrives with TTL {tcp.reply_ttl} against the echo reply's "
                        f"{echo.reply_ttl}: it was sent from hop {hop}, in the forwarding path of the last "
                        f"router before the server")
        return Location(tcp.ttl, echo.ttl, True, hop, tuple(evidence), tcp)
    hop = tcp.ttl
    if tcp.reply_ttl is not None and hop_distance(tcp.reply_ttl) == tcp.ttl - 1:
        hop = tcp.ttl - 1
        evidence.append(f"its answer's TTL puts the sender at hop {hop}: a box in the forwarding path of "
                        f"that router (it only sees packets that survived the router's TTL check)")
    return Location(tcp.ttl, echo.ttl, True, hop, tuple(evidence), tcp)
