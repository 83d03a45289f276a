"""Two ends of the same traffic: pair the flows, line up the clocks, find what one end received
that the other never sent.

Theory of operation. Each capture is analysed on its own first (`probe.files.flows`), which also
says on which end each flow was captured. A client-side flow and a server-side flow are the same
connection when their 4-tuples are equal, or, through NAT, when the client's initial sequence
number is the same (NATs rewrite addresses and ports, rarely sequence numbers), or else when the
client's first bytes of data are.

A packet is identified across the two captures by what a middlebox cannot change without being
seen: which way it goes, its TCP flags, its sequence and acknowledgement numbers relative to the
initial ones each end chose (so a NAT that shifts sequence numbers is followed), its length and
the start of its payload. Retransmissions are identical, so each identity is counted.

Clock offset: for packets seen at both ends, t_server - t_client is the offset plus the one-way
delay toward the server, and t_client - t_server the one-way delay toward the client minus the
offset; with the smallest of each (the least-queued packets) and symmetric delays, the offset is
half their difference (as NTP does it).

A packet that arrives at one end in the other end's name, while the other end's capture was
running and does not hold it, was not sent by that end: it is forged, whatever its headers say.
A packet one end sent that never shows at the other (while that capture was running) was lost
or swallowed on the way.

Memory. A capture may hold a million flows, so neither file's results are held: each judged flow
is pickled to a temporary file as it finishes (`SpooledResults`) and only its `FlowKey` (start,
vantage, 4-tuple, client ISN, a digest of the first data) stays in memory. Flows are paired from
the keys (`pair_keys`, indexed, so pairing costs a lookup a flow); then the pairs are loaded one
at a time, twice: once for the clock estimate (running minima), once to compare and render.
"""

from __future__ import annotations

import hashlib
import pickle
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from probe.files.flows import FlowFilter, FlowResult, Totals, analyze_stream
from probe.engine.two_ended import Missing, judge_two_ends
from probe.record import PacketRecord
from probe.seq import seq_diff


@dataclass
class Pair:
    client_side: FlowResult
    server_side: FlowResult
    matched_by: str
    offset: float | None = None  # seconds: server clock minus client clock
    one_way: float | None = None  # seconds, the mean of the two smallest one-way delays
    missing: list[Missing] = field(default_factory=list)
    matched: list[tuple[int, int]] = field(default_factory=list)  # (client index, server index): one packet, both ends


def _isns(result: FlowResult) -> tuple[int | None, int | None]:
    flow, packets = result.flow, result.packets
    client = next((p.seq for p in packets if flow.sent_by_client(p) and "S" in p.flags), None)
    server = next((p.seq for p in packets if flow.toward_client(p) and "S" in p.flags and "A" in p.flags), None)
    return client, server


def _first_data(result: FlowResult) -> bytes | None:
    flow = result.flow
    return next((p.payload[:256] for p in result.packets if flow.sent_by_client(p) and p.length), None)


@dataclass(frozen=True)
class FlowKey:
    """What pairing needs of one judged flow: kept in memory while the flow waits on disk."""

    start: float  # the time of its first packet (the order flows are reported in)
    vantage: str  # "client" or "server"
    ends: tuple[str, int, str, int]  # client, client port, server, server port
    client_isn: int | None
    first_data: bytes | None  # a digest of the client's first bytes of data, if it sent any


def flow_key(result: FlowResult) -> FlowKey:
    f, data = result.flow, _first_data(result)
    return FlowKey(result.packets[0].t if result.packets else 0.0, f.vantage,
                   (f.client, f.client_port, f.server, f.server_port), _isns(result)[0],
                   hashlib.blake2b(data, digest_size=16).digest() if data else None)


_MATCHED_BY = ("addresses and ports", "the client's initial sequence number (through NAT)",
               "the client's first bytes of data (through NAT)")


def pair_keys(client_keys: list[FlowKey], server_keys: list[FlowKey]) -> list[tuple[int, int, str]]:
    """Pair client-side flows with server-side flows, by position in each list: by 4-tuple, else
    client ISN, else first data; each client flow in turn takes the first server flow not yet
    taken that matches (so the order of both lists matters, as it would in a plain scan)."""
    indexes: tuple[dict, dict, dict] = ({}, {}, {})
    for j, key in enumerate(server_keys):
        for index, value in zip(indexes, (key.ends, key.client_isn, key.first_data)):
            if value is not None:
                index.setdefault(value, deque()).append(j)
    taken: set[int] = set()
    pairs = []
    for i, key in enumerate(client_keys):
        for index, value, matched_by in zip(indexes, (key.ends, key.client_isn, key.first_data), _MATCHED_BY):
            queue = index.get(value) if value is not None else None
            while queue and queue[0] in taken:
                queue.popleft()
            if queue:
                taken.add(queue[0])
                pairs.append((i, queue.popleft(), matched_by))
                break
    return pairs


def pair_flows(client_results: list[FlowResult], server_results: list[FlowResult]) -> list[Pair]:
    """Pair client-side flows with server-side flows held in memory (see `pair_keys`)."""
    return [Pair(client_results[i], server_results[j], matched_by) for i, j, matched_by in
            pair_keys([flow_key(r) for r in client_results], [flow_key(r) for r in server_results])]


class SpooledResults:
    """The judged flows of one capture, pickled to a temporary file as they finish; in memory only
    their keys. After `finish`, `keys[n]` and `load(n)` go in the order the flows started."""

    def __init__(self):
        self.file = tempfile.TemporaryFile()
        self.keys: list[FlowKey] = []
        self._where: list[tuple[int, int]] = []  # (offset, length) in the file, beside `keys`

    def add(self, result: FlowResult) -> None:
        data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        self.keys.append(flow_key(result))
        self._where.append((self.file.tell(), len(data)))
        self.file.write(data)

    def finish(self) -> None:
        order = sorted(range(len(self.keys)), key=lambda n: self.keys[n].start)  # stable: ties as they finished
        self.keys = [self.keys[n] for n in order]
        self._where = [self._where[n] for n in order]
        self.file.flush()

    def load(self, n: int) -> FlowResult:
        offset, length = self._where[n]
        self.file.seek(offset)
        return pickle.loads(self.file.read(length))

    def __len__(self) -> int:
        return len(self.keys)


def spool_capture(path: str, wanted: FlowFilter | None) -> tuple[SpooledResults, Totals]:
    """Judge every flow of a capture file onto disk (`SpooledResults`)."""
    spool = SpooledResults()
    totals = analyze_stream(path, wanted, spool.add)
    spool.finish()
    return spool, totals


def load_pairs(client: SpooledResults, server: SpooledResults, matches: list[tuple[int, int, str]]) -> Iterator[Pair]:
    """The pairs `pair_keys` found, loaded one at a time."""
    for i, j, matched_by in matches:
        yield Pair(client.load(i), server.load(j), matched_by)


def _identity(packet: PacketRecord, result: FlowResult, isns) -> tuple | None:
    flow = result.flow
    if packet.proto != "tcp":
        return None
    from_client = flow.sent_by_client(packet)
    own, other = (isns[0], isns[1]) if from_client else (isns[1], isns[0])
    seq = seq_diff(packet.seq, own) if own is not None else packet.seq
    ack = (seq_diff(packet.ack, other) if other is not None else packet.ack) if "A" in packet.flags else None
    return (from_client, packet.flags.rstrip("EC"), seq, ack, packet.length, packet.payload[:64])


def _sides(pair: Pair):
    return (("client", pair.client_side), ("server", pair.server_side))


def _timelines(pair: Pair) -> dict[str, dict[tuple, list[tuple[float, int]]]]:
    """For each end, every packet identity with the (time, index) of each copy seen there."""
    lines: dict[str, dict[tuple, list[tuple[float, int]]]] = {}
    for side, result in _sides(pair):
        isns = _isns(result)
        lines[side] = {}
        for index, packet in enumerate(result.packets):
            identity = _identity(packet, result, isns)
            if identity is not None:
                lines[side].setdefault(identity, []).append((packet.t, index))
    return lines


def estimate_clock(pairs: Iterable[Pair]) -> tuple[float | None, float | None]:
    """(server clock minus client clock, mean one-way delay), in seconds, from the packets seen
    once at each end (a retransmitted one could be paired with the wrong copy). One pass, keeping
    only the smallest delay each way, so `pairs` may be loaded one at a time."""
    up: float | None = None  # the smallest t_server - t_client toward the server
    down: float | None = None  # the smallest t_client - t_server toward the client
    for pair in pairs:
        lines = _timelines(pair)
        for identity, copies in lines["client"].items():
            other = lines["server"].get(identity)
            if len(copies) == 1 and other is not None and len(other) == 1:
                delta = other[0][0] - copies[0][0]
                if identity[0]:
                    up = delta if up is None else min(up, delta)
                else:
                    down = -delta if down is None else min(down, -delta)
    if up is not None and down is not None:
        return (up - down) / 2, (up + down) / 2
    if up is not None or down is not None:
        return (up if up is not None else -down), None
    return None, None


def compare(pair: Pair, offset: float | None, one_way: float | None = None) -> Pair:
    """Find the packets one end saw that the other never did. Each copy received is matched with
    the latest unmatched copy sent no later than it arrived (clocks lined up by `offset`), so a
    lost first copy and a retransmission that got through are told apart."""
    pair.offset, pair.one_way = offset, one_way
    shift = offset or 0.0
    slack = 0.002  # seconds: clock estimate error allowed when matching
    lines = _timelines(pair)
    results = dict(_sides(pair))
    spans = {side: (r.packets[0].t, r.packets[-1].t) for side, r in results.items()}
    pair.missing, pair.matched = [], []
    identities = set(lines["client"]) | set(lines["server"])
    for identity in identities:
        sender = "client" if identity[0] else "server"
        receiver = "server" if sender == "client" else "client"
        to_client_clock = {"client": 0.0, "server": -shift}
        sent = sorted((t + to_client_clock[sender], i) for t, i in lines[sender].get(identity, []))
        received = sorted((t + to_client_clock[receiver], i) for t, i in lines[receiver].get(identity, []))
        used: set[int] = set()
        matched: list[int] = []  # indexes (at the receiver) of copies matched with a sent one
        for t_received, index in received:
            match = next((k for k in range(len(sent) - 1, -1, -1)
                          if k not in used and sent[k][0] <= t_received + slack), None)
            here = results[receiver].packets[index]
            if match is None and any((results[receiver].packets[i].ip_id, results[receiver].packets[i].ttl)
                                     == (here.ip_id, here.ttl) for i in matched):
                continue  # the same packet delivered twice (a duplicating path), not a forgery
            if match is None:
                if _while_running(t_received, spans[sender], to_client_clock[sender]):
                    pair.missing.append(_describe(receiver, index, results[receiver].packets[index], False,
                                                  identity[0]))
            else:
                used.add(match)
                matched.append(index)
                ends = (sent[match][1], index) if sender == "client" else (index, sent[match][1])
                pair.matched.append(ends)
        for k, (t_sent, index) in enumerate(sent):
            if k not in used and _while_running(t_sent, spans[receiver], to_client_clock[receiver]):
                pair.missing.append(_describe(sender, index, results[sender].packets[index], True, identity[0]))
    pair.missing.sort(key=lambda m: (m.seen_at, m.index))
    pair.matched.sort()
    return pair


def _while_running(t_client_clock: float, span: tuple[float, float], to_client_clock: float) -> bool:
    """Whether the other capture was running at that moment (half a second of slack each way)."""
    return span[0] + to_client_clock - 0.5 <= t_client_clock <= span[1] + to_client_clock + 0.5


def _describe(side: str, index: int, packet: PacketRecord, sent_here: bool, from_client: bool) -> Missing:
    other = "server" if side == "client" else "client"
    what = ("a reset" if "R" in packet.flags else f"{packet.length} bytes of data" if packet.length
            else f"a {packet.flags} segment")
    if sent_here:
        sentence = (f"#{index + 1} ({packet.flags}, {packet.length} bytes) sent by the {side} never reached the "
                    f"{other}: lost or swallowed on the way.")
        return Missing(side, index, packet, "never-arrived", sentence)
    sender = "client" if from_client else "server"
    sentence = (f"#{index + 1}: the {side} received {what} in the {sender}'s name (TTL {packet.ttl}, IP-ID "
                f"{packet.ip_id}) that the {sender} never sent: it is forged.")
    return Missing(side, index, packet, "forged", sentence)


def with_proof(pair: Pair) -> tuple[FlowResult, FlowResult, str, str | None, str]:
    """Both sides' results with the forged packets blamed, and the pair's verdict, direction and
    explanation, as the engine judges two ends (`probe.engine.two_ended`)."""
    client, server = pair.client_side, pair.server_side
    judged = judge_two_ends(client.analysis, server.analysis, pair.missing, client.flow.client, server.flow.client)
    return (replace(client, analysis=replace(client.analysis, attributions=judged.client_attributions)),
            replace(server, analysis=replace(server.analysis, attributions=judged.server_attributions)),
            judged.verdict, judged.direction, judged.explanation)
