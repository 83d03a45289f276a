"""`probe analyze`: a capture file in, one judged flow at a time out, in bounded memory.

Theory of operation. The file is streamed (`pcapfile.ip_packets`). A TCP flow is taken under
analysis when its first SYN (no ACK) passes and it matches the user's filters; the side that
sent that SYN is the client. From then on, and only for flows under analysis, packets become the
live probe's own records (`record.parse_ip`); every other packet costs a dict lookup on bytes of
its header and nothing more. ICMP errors join the flow they quote.

A flow is over when TCP says so: at a reset, or when both FINs have been acknowledged (a FIN
nobody acknowledges is retransmitted, and the reset an end sends when it gives up on it is the
flow's last word, often many seconds later). It leaves the table, and is judged by the engine,
`LINGER` seconds (capture time) after that (late packets there are exactly the injected ones),
`IDLE` seconds after its last packet, when a new handshake reuses its addresses and ports, or at
the end of the file. A closed flow whose packets keep coming stays open for them: an end that
missed the close (a reset forged toward the other end) retransmits with a timeout that doubles
each time (RFC 6298), and those retransmissions are the best evidence of who really closed. So
each packet after the close lets the flow wait twice the silence before it (at least `LINGER`,
at most `LATE_MAX`), and never more than `IDLE` after the close. The keys of the last
`FINISHED_KEYS` judged flows are remembered, so that a packet coming later still is counted as a
late packet of a finished flow, not as one whose handshake is not in the file.

Memory is therefore what the open flows hold: each keeps all its packets (the compiled table,
`probe/files/_fastscan.pyx`, keeps those of a classic pcap by their place in the file, and reads them
back only for the engine), so the engine judges what the live probe would have recorded, up to
`KEEP_ALL` (10,000) packets; past that, only those that
open, close or reset, come after a FIN, or whose TTL differs from the previous packet of the same
side, so that one endless transfer cannot hold a whole file in memory. The engine's cost grows as n
log n with a flow's length (`engine.baseline.FlowTables`): the cap is for memory, not time. Bulk
data past it is counted (`elided`), not kept: a forged data segment that deep into a transfer, and
copying the server's TTL, is not seen.

Where the capture was taken (`vantage`) decides which packets the host itself sent: its own
packets leave with an initial TTL (64, 128, 255), the far end's arrive with less. When both
or neither do, timing decides: on the client the SYN-ACK comes one round trip after the SYN and
the ACK at once; on the server the other way round. The two intervals are compared with each
other, not with a fixed time, so that a LAN (43 µs against 140 µs) tells as well as a continent;
only the timestamps' own resolution sets a floor (`side_by_timing`).

A server-side capture sees the other half of the story, so after the engine has judged the
flow, `server_side_findings` looks at the packets in the client's name that the engine takes
as genuine (the engine was written from the client's seat) -- see its docstring.
"""

from __future__ import annotations

import gc
import os
import pickle
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from probe.engine import Analysis, Attribution, Flow, analyze_flow
from probe.engine.vantage import (TICK_SAMPLE, VANTAGE_FLOOR_TICKS, VANTAGE_RATIO, Vantage,  # noqa: F401 (re-exported)
                                  find_vantage, judge_from_server, server_side_findings, side_by_timing,
                                  timestamp_tick)
from probe.files.ordinary import CLEAN, Ordinary
from probe.record import (ICMP6_ERROR_TYPES, ICMP_ERROR_TYPES, TCP_FLAG_LETTERS, PacketRecord, address_text,
                          ipv6_transport, parse_ip)
from probe.seq import seq_diff

LINGER = 2.0  # seconds of capture time a closed flow stays open for late (injected) packets
LATE_MAX = 60.0  # the longest silence a closed flow waits through (RFC 6298: the RTO may be capped at 60 s)
FINISHED_KEYS = 65_536  # judged flows whose keys are remembered, to count their late packets as such
IDLE = 120.0  # seconds without a packet after which a flow is judged as it stands
KEEP_ALL = 10_000  # packets of a flow kept in full; later only SYN, FIN and RST segments and TTL changes
SWEEP_EVERY = 1.0  # seconds of capture time between two looks for finished flows

_SYN, _ACK, _RST, _FIN = 0x02, 0x10, 0x04, 0x01


_KEPT = struct.Struct("=dI")  # before each packet an open flow keeps: its time and its length


@dataclass
class OpenFlow:
    """A flow under analysis: who is who, its packets so far, and how it stands.

    The packets are kept as they came (time, bytes) and become records only if the flow goes to
    the engine (`records`); how the flow stands is read from their headers as they come."""

    client: str
    client_port: int
    server: str
    server_port: int
    client_isn: int
    raw: bytearray = field(default_factory=bytearray)  # each kept packet: _KEPT (time, length), then its bytes
    count: int = 0  # packets kept
    last_t: float = 0.0
    closed_at: float | None = None
    wait: float = LINGER  # the silence after its last packet at which a closed flow is over
    fin_ends: dict = field(default_factory=dict)  # "client"/"server" -> the sequence number just past its FIN
    fins_acked: set = field(default_factory=set)  # the sides whose FIN the other side acknowledged
    elided: int = 0  # bulk packets counted but not kept
    last_ttl: dict = field(default_factory=dict)  # source address -> TTL of its last packet
    ordinary: Ordinary | None = None  # the pre-judgement (`probe.files.ordinary`), from the first packet on
    client_end: bytes = b""  # the client's address and port as its packets carry them

    @property
    def records(self) -> list[PacketRecord]:
        """The kept packets as the engine's records, in the order they came."""
        return records_of(self.raw)

    def detach(self) -> tuple:
        """What a worker process needs to judge the flow (`Judges`; `_judge_batch` revives it)."""
        return self.client, self.client_port, self.server, self.server_port, bytes(self.raw), self.elided, None

    def elide(self, t: float, source: bytes, ttl: int, flags: int) -> bool:
        """Past KEEP_ALL packets, skip (and count) plain segments that arrive as the last one from
        the same side did: SYN, FIN and RST segments, any change of TTL, and everything after a FIN
        (the ACKs that end the flow) are always kept."""
        if self.count < KEEP_ALL or flags & (_SYN | _RST | _FIN) or self.last_ttl.get(source) != ttl \
                or self.fin_ends:  # once closing, every ACK counts
            self.last_ttl[source] = ttl
            return False
        self.last_t = t
        self.elided += 1
        return True

    def _keep(self, t: float, packet: bytes) -> None:
        if self.closed_at is not None:  # a late packet: the next may come after twice this silence
            self.wait = min(LATE_MAX, max(self.wait, 2 * (t - self.last_t)))
        self.last_t = t
        self.raw += _KEPT.pack(t, len(packet))
        self.raw += packet
        self.count += 1

    def add_other(self, t: float, packet: bytes) -> None:
        """Keep a packet that is not a complete TCP segment of the flow (an ICMP error quoting it, a
        cut-short TCP header): it goes to the engine, so the flow is not ordinary."""
        self._keep(t, packet)
        if self.ordinary is not None:
            self.ordinary.still = False
        else:
            self.ordinary = _NOT_ORDINARY

    def add_tcp(self, t: float, packet: bytes, l4: int, from_client: bool, ttl: int, flags: int) -> None:
        """Keep one IPv4 TCP segment of the flow (header complete, `l4` its offset) and follow the
        close and the pre-judgement from its header. (The hot path: `_keep` and `_follow_close`
        are written out here.)"""
        ip_len = (packet[2] << 8) | packet[3]
        end = min(len(packet), ip_len) if ip_len >= l4 else len(packet)
        offset = (packet[l4 + 12] >> 4) << 2
        if offset < 20 or offset > end - l4:
            return self.add_other(t, packet)  # `record.parse_ip` makes it an "other" record
        length = end - l4 - offset + (ip_len - end if ip_len > end else 0)  # captured, and cut off by a snaplen
        seq, ack = _SEQ_ACK.unpack_from(packet, l4 + 4)
        if self.closed_at is not None:  # a late packet: the next may come after twice this silence
            self.wait = min(LATE_MAX, max(self.wait, 2 * (t - self.last_t)))
        self.last_t = t
        raw = self.raw
        raw += _KEPT.pack(t, len(packet))
        raw += packet
        self.count += 1
        ordinary = self.ordinary
        if ordinary is None:
            self.ordinary = Ordinary(t, ttl, flags, seq, (packet[4] << 8) | packet[5], 4) if from_client \
                else _NOT_ORDINARY
        elif ordinary.still:
            if from_client:
                ordinary.ours(t, ttl, flags, seq, length, (packet[4] << 8) | packet[5])
            else:
                ordinary.theirs(t, ttl, packet[6] & 0x40, flags, seq, ack, length, (packet[4] << 8) | packet[5])
        if flags & (_RST | _FIN) or self.fin_ends:
            self._follow_close(t, from_client, flags, seq, ack, length)

    def add_record(self, t: float, packet: bytes, record: PacketRecord) -> None:
        """Keep a packet already made into a record (IPv6): it goes to the engine."""
        if record.proto != "tcp":
            return self.add_other(t, packet)
        self._keep(t, packet)
        self.ordinary = _NOT_ORDINARY
        self._follow_close(t, record.src == self.client and record.sport == self.client_port,
                           _flag_bits(record.flags), record.seq, record.ack, record.length)

    def _follow_close(self, t: float, from_client: bool, flags: int, seq: int, ack: int, length: int) -> None:
        """A reset closes the flow; so do both FINs acknowledged (nothing to follow before a FIN)."""
        if flags & _RST:
            self.closed_at = self.closed_at or t
            return
        side, other = ("client", "server") if from_client else ("server", "client")
        if flags & _FIN:
            self.fin_ends[side] = (seq + length + bool(flags & _SYN) + 1) % 2**32  # `baseline.seq_end`
        if other in self.fin_ends and flags & _ACK and seq_diff(ack, self.fin_ends[other]) >= 0:
            self.fins_acked.add(other)
            if len(self.fins_acked) == 2:
                self.closed_at = self.closed_at or t


def records_of(raw: bytearray) -> list[PacketRecord]:
    """A flow's kept packets (`OpenFlow.raw`) as the engine's records, in the order they came."""
    records, position = [], 0
    while position < len(raw):
        t, length = _KEPT.unpack_from(raw, position)
        position += _KEPT.size
        records.append(parse_ip(bytes(raw[position:position + length]), t))
        position += length
    return records


def _flag_bits(letters: str) -> int:
    return sum(1 << TCP_FLAG_LETTERS.index(letter) for letter in letters)


def _not_ordinary() -> Ordinary:
    ordinary = Ordinary(0.0, 0, 0, 0, 0, 4)
    ordinary.still = False
    return ordinary


_NOT_ORDINARY = _not_ordinary()  # shared: once false, an `Ordinary` is never asked anything but `still`
_SEQ_ACK = struct.Struct("!II")


@dataclass(frozen=True)
class FlowFilter:
    """`--host` and `--flow`: which flows to analyse (all when both are empty).

    A flow passes when one of its ends is one of `hosts` (if any are given) and it matches one of
    `flows` (if any): each of those is one or two endpoints (address, port or None), all of
    which must be ends of the flow."""

    hosts: tuple[str, ...] = ()
    flows: tuple[tuple[tuple[str, int | None], ...], ...] = ()

    def wants(self, client: str, client_port: int, server: str, server_port: int) -> bool:
        if self.hosts and client not in self.hosts and server not in self.hosts:
            return False
        ends = ((client, client_port), (server, server_port))
        return not self.flows or any(
            all(any(a == address and (port is None or p == port) for a, p in ends) for address, port in spec)
            for spec in self.flows)


@dataclass(frozen=True)
class FlowResult:
    """One judged flow: the engine's analysis of its records, seen from where it was captured. A
    flow summarised by the pre-judgement (`summarised`) has no records and no attributions: its
    `count` packets, from the first at `first_t`, are all their senders' own. A flow judged in a
    worker whose `prepared` rendering is there comes back without them too (`count`, `first_t`)."""

    flow: Flow
    packets: list[PacketRecord]
    analysis: Analysis
    vantage: Vantage
    elided: int = 0
    summarised: bool = False
    count: int = 0
    first_t: float = 0.0
    prepared: object = field(default=None, compare=False)  # what `analyze_stream`'s `prepare` made of it

    @property
    def start(self) -> float:
        """When the flow's first packet passed."""
        return self.packets[0].t if self.packets else self.first_t

    @property
    def packet_count(self) -> int:
        """The flow's packets, those elided included."""
        return (len(self.packets) if self.packets else self.count) + self.elided


class Summary:
    """An ordinary flow (`probe.files.ordinary`) as the flows table and the exit code need it, handed to
    `analyze_stream`'s `on_summary` in place of a `FlowResult`: `judge(flow, summarise=True)`
    would say `clean`, no direction, captured at the client, with every packet its sender's own,
    and the table shows no more than that. Making a whole `FlowResult` (its `Flow`, `Analysis`,
    `Vantage` and sentences) for each of a million ordinary flows cost more than reading them."""

    __slots__ = ("start", "client", "client_port", "server", "server_port", "packet_count", "recipe")
    verdict, direction, vantage = "clean", None, "client"

    def __init__(self, start: float, client: str, client_port: int, server: str, server_port: int,
                 packet_count: int):
        self.start, self.client, self.client_port = start, client, client_port
        self.server, self.server_port, self.packet_count = server, server_port, packet_count
        self.recipe = None  # with `recipes`: what they gave back for its `ordinary_recipe` (where they put it)

    @classmethod
    def of(cls, open_flow) -> "Summary | None":
        """The summary of a finished flow the pre-judgement holds ordinary to its end, else None."""
        ordinary = open_flow.ordinary
        if ordinary is None or not ordinary.holds():
            return None
        return cls(ordinary.syn_t, open_flow.client, open_flow.client_port, open_flow.server, open_flow.server_port,
                   open_flow.count + open_flow.elided)


@dataclass
class Totals:
    """What the reader saw besides the flows it judged."""

    packets: int = 0
    ipv6_packets: int = 0
    tcp_packets: int = 0
    without_handshake: int = 0  # TCP packets of connections whose SYN is not in the file
    late: int = 0  # TCP packets of flows already judged (they came after the flow was over)
    filtered_out: int = 0  # TCP packets of flows the filters excluded
    flows: int = 0
    warnings: list[str] = field(default_factory=list)  # what the reader had to say about the file (damage)


def _flow_key(source: bytes, destination: bytes) -> bytes:
    """One key for both directions of a flow, from its two ends (address bytes + port bytes)."""
    return source + destination if source < destination else destination + source


def _quoted_key(quote: bytes) -> bytes | None:
    """The flow key of the TCP packet an ICMP or ICMPv6 error quotes (IPv4 or IPv6, extension
    headers skipped), or None when the quote is not TCP or too short to hold both ports."""
    if quote[:1] and quote[0] >> 4 == 6:
        found = ipv6_transport(quote)
        if found is None or found[0] != 6 or len(quote) < found[1] + 4:
            return None
        l4, source, destination = found[1], quote[8:24], quote[24:40]
    else:
        l4 = (quote[0] & 0x0F) << 2 if quote else 0
        if l4 < 20 or len(quote) < l4 + 4 or quote[0] >> 4 != 4 or quote[9] != 6:
            return None
        source, destination = quote[12:16], quote[16:20]
    return _flow_key(source + quote[l4:l4 + 2], destination + quote[l4 + 2:l4 + 4])


class FlowTable:
    """The streaming part: feed packets in capture order, get finished flows back."""

    def __init__(self, wanted: FlowFilter | None = None):
        self.wanted = wanted or FlowFilter()
        self.open: dict[bytes, OpenFlow] = {}
        self.totals = Totals()
        self._unwanted: set[bytes] = set()  # keys the filters refused (bounded: cleared as the table sweeps)
        # keys of the last FINISHED_KEYS judged flows, oldest first (an OrderedDict: a plain dict's
        # oldest key, deleted again and again, costs a scan over the holes the deletions left)
        self._finished: OrderedDict[bytes, None] = OrderedDict()
        self._next_sweep: float | None = None

    def feed(self, t: float, packet: bytes) -> list[OpenFlow]:
        """Take one IPv4 or IPv6 packet; return the flows that are finished as of its time."""
        self.totals.packets += 1
        finished: list[OpenFlow] = []
        if self._next_sweep is None or t >= self._next_sweep:
            self._next_sweep = t + SWEEP_EVERY
            finished = self.sweep(t)
        version = packet[0] >> 4 if packet else 0
        if version == 4:
            if len(packet) < 20 or packet[6] & 0x1F or packet[7]:
                return finished  # cut short, or a later fragment
            proto, l4, ttl = packet[9], (packet[0] & 0x0F) << 2, packet[8]
            source_address, destination_address = packet[12:16], packet[16:20]
            icmp, icmp_errors = 1, ICMP_ERROR_TYPES
        elif version == 6:
            self.totals.ipv6_packets += 1
            found = ipv6_transport(packet)
            if found is None:
                return finished  # cut short, a later fragment, or a hostile chain of extension headers
            (proto, l4), ttl = found, packet[7]
            source_address, destination_address = packet[8:24], packet[24:40]
            icmp, icmp_errors = 58, ICMP6_ERROR_TYPES
        else:
            return finished
        if proto == 6:
            if len(packet) < l4 + 14:
                return finished
            self.totals.tcp_packets += 1
            source_end = source_address + packet[l4:l4 + 2]
            key = _flow_key(source_end, destination_address + packet[l4 + 2:l4 + 4])
            flow = self.open.get(key)
            flags = packet[l4 + 13]
            if flags & (_SYN | _ACK | _RST) == _SYN:
                isn = int.from_bytes(packet[l4 + 4:l4 + 8], "big")
                if flow is not None and (flow.closed_at is not None or t - flow.last_t > IDLE) \
                        and isn != flow.client_isn:
                    finished.append(self._finish(key))  # a new connection on the same ports
                    flow = None
                if flow is None:
                    flow = self._start(key, source_address, destination_address, packet[l4:l4 + 4], isn)
            if flow is None:
                if key in self._unwanted:
                    self.totals.filtered_out += 1
                elif key in self._finished:
                    self.totals.late += 1
                else:
                    self.totals.without_handshake += 1
                return finished
            if flow.count < KEEP_ALL:  # `OpenFlow.elide`'s common case, written out
                flow.last_ttl[source_address] = ttl
            elif flow.elide(t, source_address, ttl, flags):
                return finished
            if version == 4:
                if l4 >= 20:  # else no record at all (`record.parse_ip`)
                    flow.add_tcp(t, packet, l4, source_end == flow.client_end, ttl, flags)
            else:
                record = parse_ip(packet, t)
                if record is not None:
                    flow.add_record(t, packet, record)
        elif proto == icmp and len(packet) >= l4 + 8 and packet[l4] in icmp_errors:
            key = _quoted_key(packet[l4 + 8:])
            flow = self.open.get(key) if key is not None else None
            if flow is not None:
                record = parse_ip(packet, t)
                if record is not None and record.quoted is not None:
                    flow.add_other(t, packet)
        return finished

    def _start(self, key: bytes, source: bytes, destination: bytes, ports: bytes, isn: int) -> OpenFlow | None:
        client, server = address_text(source), address_text(destination)
        client_port, server_port = int.from_bytes(ports[:2], "big"), int.from_bytes(ports[2:4], "big")
        if not self.wanted.wants(client, client_port, server, server_port):
            self._unwanted.add(key)
            return None
        self.totals.flows += 1
        flow = OpenFlow(client, client_port, server, server_port, isn, client_end=source + ports[:2])
        self.open[key] = flow
        return flow

    def sweep(self, now: float) -> list[OpenFlow]:
        """Take out the flows that are over as of capture time `now`."""
        done = [key for key, flow in self.open.items()
                if now - flow.last_t > (IDLE if flow.closed_at is None else flow.wait)
                or (flow.closed_at is not None and now - flow.closed_at > IDLE)]
        if len(self._unwanted) > 100_000:
            self._unwanted.clear()  # only statistics depend on it
        return [self._finish(key) for key in done]

    def _finish(self, key: bytes) -> OpenFlow:
        """Take one flow out of the table, remembering its key (only statistics depend on it)."""
        self._finished.pop(key, None)
        self._finished[key] = None
        if len(self._finished) > FINISHED_KEYS:
            self._finished.popitem(last=False)
        return self.open.pop(key)

    def drain(self) -> list[OpenFlow]:
        """The flows still open at the end of the file, in the order they started."""
        flows = list(self.open.values())
        self.open.clear()
        return flows


def stream_flows(packets: Iterable[tuple[float, bytes]], table: FlowTable) -> Iterator[OpenFlow]:
    """Every flow under analysis, each as soon as it is over (so not necessarily in start order)."""
    for t, packet in packets:
        finished = table.feed(t, packet)
        if finished:
            yield from finished
    yield from table.drain()


# --- the whole file -------------------------------------------------------------------------------


def judge(open_flow: OpenFlow, summarise: bool = False) -> FlowResult:
    """Run the engine over one finished flow, from where the capture was taken; with `summarise`,
    a flow the pre-judgement finds ordinary (`probe.files.ordinary`) is summarised without it."""
    flow = Flow(open_flow.client, open_flow.client_port, open_flow.server, open_flow.server_port)
    if summarise and open_flow.ordinary is not None:
        found = open_flow.ordinary.verdict()
        if found is not None:
            evidence, rtt_ms, note = found
            notes = (note,) if note else ()
            analysis = Analysis("clean", None, None, rtt_ms, (), " ".join((CLEAN,) + notes), None, notes)
            return FlowResult(flow, [], analysis, Vantage("client", evidence),  # Flow's vantage is "client"
                              open_flow.elided, True, open_flow.count, open_flow.ordinary.syn_t)
    records = open_flow.records
    vantage = find_vantage(records, flow)
    flow = replace(flow, vantage=vantage.side)
    analysis = analyze_flow(records, flow)
    if vantage.side == "server":
        analysis = judge_from_server(records, flow, analysis)
        # from the server's seat the engine's "self" (the sender) is the client
        analysis = replace(analysis, attributions=tuple(
            Attribution("client", a.confidence, a.evidence) if a.origin == "self" else a
            for a in analysis.attributions))
    return FlowResult(flow, records, analysis, vantage, open_flow.elided)


def writes_ordinary_json() -> bool:
    """Whether an ordinary flow's `--json` text can be written without the engine (`texts_of_recipes`
    by `probe/files/_flowjson.pyx`): not when the compiled reader is not in use (`fast_path`), as the
    pure code is the reference, and every flow of it goes through the engine."""
    return _compiled_json("flow_json") is not None


def ordinary_recipe(open_flow) -> bytes:
    """What an ordinary flow's `--json` text is written from later (`texts_of_recipes`), in whatever
    process: the flow as `detach` gives it and its pre-judgement's `verdict()`, pickled (a kilobyte
    for a short flow, a quarter of its text)."""
    return pickle.dumps((open_flow.detach(), open_flow.ordinary.verdict()), pickle.HIGHEST_PROTOCOL)


def texts_of_recipes(recipes: Iterable[bytes]) -> "list[bytes | FlowResult]":
    """Ordinary flows' `--json` texts from their `ordinary_recipe`s, written without the engine
    (`_flowjson.flow_json`); for a flow that writer leaves to the engine (or when it is not in use,
    `writes_ordinary_json`), the engine's result (`judge`), for the caller to write as it writes
    every judged flow."""
    flow_json, loads, texts = _compiled_json("flow_json"), pickle.loads, []
    for recipe in recipes:
        detached, (evidence, rtt_ms, note) = loads(recipe)
        client, client_port, server, server_port, raw, elided, _source = detached
        text = None if flow_json is None else flow_json(raw, client, client_port, server, server_port, elided,
                                                         evidence, rtt_ms,
                                                         f"{CLEAN} {note}" if note else CLEAN)  # `judge`'s explanation
        texts.append(text if text is not None else judge(revive(detached)))
    return texts


def revive(detached: tuple):
    """A flow from `detach` (in another process, or later): for `judge`, not for the flow table."""
    client, client_port, server, server_port, raw, elided, source = detached
    if source is None:
        return OpenFlow(client, client_port, server, server_port, 0, raw=bytearray(raw), elided=elided)
    return fast_path().revive(client, client_port, server, server_port, raw, elided, source)


def judged_packets_writer():
    """The compiled writer of a judged flow's packets in `--json` (`_flowjson.packets_text`, for
    `render.flows.analyzed_flow_text`), or None when the compiled code is not in use (`fast_path`)."""
    return _compiled_json("packets_text")


def _compiled_json(name: str):
    """`probe.files._flowjson`'s function `name`, or None: not built, or the pure code asked for
    (`fast_path`: the reference the tests compare against)."""
    if fast_path() is None:
        return None
    try:
        from probe.files import _flowjson
    except ImportError:
        return None
    return getattr(_flowjson, name)


def analyze_stream(path: str, wanted: FlowFilter | None, on_result: Callable[[FlowResult], None],
                   summarise: bool = False, progress: Callable[[int, int], None] | None = None,
                   workers: int = 0, prepare: Callable[[FlowResult], object] | None = None,
                   on_summary: Callable[[Summary], None] | None = None,
                   recipes: Callable[[bytes], object] | None = None) -> Totals:
    """Judge every flow of a capture file, handing each to `on_result` as soon as it is over
    (nothing is kept here: memory is what the open flows hold). `summarise`: ordinary flows skip the
    engine (`judge`); `progress(bytes read, file size)` is called as the file is read. `workers`:
    processes that run the engine beside the reader (`Judges`); `prepare(result)`, when given, is
    run in the worker that judged a flow and its answer, unless None, kept in `result.prepared` (the
    caller's rendering, done in parallel too), the packets and attributions then left behind.
    `on_summary`, when given with `summarise`, takes each ordinary flow as a `Summary` instead of
    `on_result` (in the same place of the order). With `recipes` (when `writes_ordinary_json`), it
    does so without `summarise` too: what each ordinary flow's `--json` text is written from
    (`ordinary_recipe`, for `texts_of_recipes`) is handed to `recipes` as soon as the flow is over,
    and what that gives back (where it put it) is the summary's `recipe`; the engine judges every
    other flow."""
    fast = fast_path()
    if fast is not None:
        table = fast.FastFlowTable(wanted)
        table.keep_bytes = recipes is not None  # the compiled writer reads the packets' bytes
        flows = fast.flows_of_file(path, table, table.totals.warnings, progress)
    else:
        from probe.files.pcap import ip_packets

        table = FlowTable(wanted)
        flows = stream_flows(ip_packets(path, table.totals.warnings, progress), table)
    with _fewer_collections(), Judges(on_result, summarise, workers, prepare,
                                      on_summary if summarise or recipes else None, recipes) as judges:
        for open_flow in flows:
            judges.add(open_flow)
    return table.totals


_WORKER_PREPARE: list = [None]  # `prepare` for the worker processes (inherited by fork, not pickled)


def _judge_batch(batch: list[tuple]) -> list[FlowResult]:
    """In a worker: judge flows sent as `detach` gives them (the compiled table's with the file they
    were read from: their packets are read back from it here)."""
    results = []
    for detached in batch:
        result = judge(revive(detached))
        prepare = _WORKER_PREPARE[0]
        prepared = None if prepare is None else prepare(result)
        if prepared is not None:  # what the caller needs of the packets is in `prepared`: not sent back
            result = replace(result, packets=[], count=len(result.packets), first_t=result.start, prepared=prepared,
                             analysis=replace(result.analysis, attributions=()))
        results.append(result)
    return results


def write_all(descriptor: int, pieces: list) -> None:
    """Write `pieces` (bytes-like) in order, in as few system calls as the kernel takes them (at most
    1024 pieces each)."""
    import os

    while pieces:
        written, done = os.writev(descriptor, pieces[:1024]), 0
        while done < len(pieces) and written >= len(pieces[done]):
            written -= len(pieces[done])
            done += 1
        pieces = pieces[done:]
        if written:
            pieces[0] = pieces[0][written:]


class Judges:
    """Judge finished flows and hand the results on in the order the flows finished, as `judge`
    one by one would. With `workers`, a flow that needs the engine is sent (its kept bytes, in
    batches) to a pool of forked processes while the reader goes on; an ordinary flow is
    summarised here at once (with `recipes`, its `ordinary_recipe` handed to `recipes` at once, and
    what that gives back in the summary: its `--json` text is written later, `texts_of_recipes`),
    and waits in line behind the flows sent before it. At most `IN_FLIGHT` batches per worker are
    out at a time, so memory stays bounded whatever the pace."""

    BATCH_PACKETS = 4_000  # a batch is sent when its flows hold this many packets (or BATCH_FLOWS flows)
    BATCH_FLOWS = 256
    IN_FLIGHT = 3
    HAND_ON_EVERY = 64  # flows added between two looks at the head of the line (each look asks a future)

    def __init__(self, on_result: Callable[[FlowResult], None], summarise: bool, workers: int,
                 prepare: Callable[[FlowResult], object] | None, on_summary: Callable[[Summary], None] | None = None,
                 recipes: Callable[[bytes], object] | None = None):
        self.on_result, self.summarise, self.workers, self.prepare = on_result, summarise, workers, prepare
        self.on_summary, self.recipes = on_summary, recipes
        self.pool = None
        self.line: list = []  # in finishing order: a FlowResult or Summary, or ([its batch's future], index)
        self.head = 0
        self.batch: list[tuple] = []
        self.sent: list = []  # the future of the batch being filled, once it is sent
        self.batch_packets = 0
        self.in_flight: list = []
        self.added = 0

    def __enter__(self) -> "Judges":
        if self.workers > 0:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            _WORKER_PREPARE[0] = self.prepare
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                            initializer=die_with_parent, initargs=(os.getpid(),))
            self.pool.submit(int).result()  # fork the workers now, while this process holds little
        return self

    def __exit__(self, kind, _value, _traceback) -> None:
        try:
            if kind is None and self.pool is not None:
                self._send()
                self._hand_on(wait=True)
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
            _WORKER_PREPARE[0] = None

    def add(self, open_flow) -> None:
        summary = Summary.of(open_flow) if self.on_summary is not None else None
        if summary is not None and self.recipes is not None:
            summary.recipe = self.recipes(ordinary_recipe(open_flow))
        if self.pool is None:
            if summary is not None:
                return self.on_summary(summary)
            return self.on_result(judge(open_flow, self.summarise))
        if summary is not None:
            self.line.append(summary)
        elif self.summarise and open_flow.ordinary is not None and open_flow.ordinary.holds():
            self.line.append(judge(open_flow, True))  # `prepare` is for the engine's flows
        else:
            self.line.append((self.sent, len(self.batch)))  # its batch's future (once sent), its place
            self.batch.append(open_flow.detach())
            self.batch_packets += open_flow.count
            if self.batch_packets >= self.BATCH_PACKETS or len(self.batch) >= self.BATCH_FLOWS:
                self._send()
        self.added += 1
        if not self.added % self.HAND_ON_EVERY:
            self._hand_on(wait=False)

    def _send(self) -> None:
        if not self.batch:
            return
        future = self.pool.submit(_judge_batch, self.batch)
        self.in_flight.append(future)
        self.sent.append(future)
        self.batch, self.sent, self.batch_packets = [], [], 0
        self.in_flight = [future for future in self.in_flight if not future.done()]
        while len(self.in_flight) > self.IN_FLIGHT * self.workers:
            self.in_flight.pop(0).result()  # wait for the oldest: the reader is ahead enough

    def _hand_on(self, wait: bool) -> None:
        """Hand on every result at the head of the line that is ready (with `wait`, all of them)."""
        line = self.line
        while self.head < len(line):
            item = line[self.head]
            if type(item) is tuple:
                sent, index = item
                if not sent:
                    break  # in the batch not yet sent
                if len(sent) == 1:  # its batch's results, asked of the future once
                    if not wait and not sent[0].done():
                        break
                    sent.append(sent[0].result())
                item = sent[1][index]
            line[self.head] = None
            self.head += 1
            if type(item) is Summary:
                self.on_summary(item)
            else:
                self.on_result(item)
        if self.head > 4096 and self.head * 2 > len(line):
            del line[:self.head]
            self.head = 0


def die_with_parent(parent: int) -> None:
    """In a forked worker (a pool's `initializer`): be killed by the kernel when the process that
    forked it dies (Linux's parent death signal), as a SIGKILL leaves no one to tell a worker idle
    on its queue that nothing more will come. `parent`: that process's id, to catch it dying first."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: left as the pool leaves its processes
        return
    if os.getppid() != parent:
        os._exit(1)


def fast_path():
    """The compiled flow table and pcap reader (`probe.files._fastscan`), or None: not built (no C
    compiler when installed), or `PROBE_PURE=1` in the environment (the pure code, the reference)."""
    import os

    if os.environ.get("PROBE_PURE") == "1":
        return None
    try:
        from probe.files import _fastscan
    except ImportError:
        return None
    return _fastscan


@contextmanager
def _fewer_collections():
    """Python's cyclic garbage collector runs after every 700 new container objects and walks all
    the young ones; a big capture makes millions (the flows, their tables, the caller's rows), and
    none of them form cycles that need it. Run it 70 times less often while the file is read (10% of
    the CPU time of a million short flows, `bench/analyze_shapes.py`)."""
    first, second, third = gc.get_threshold()
    gc.set_threshold(max(first, 50_000), second, third)
    try:
        yield
    finally:
        gc.set_threshold(first, second, third)


def analyze_file(path: str, wanted: FlowFilter | None = None) -> tuple[list[FlowResult], Totals]:
    """Every judged flow of a (small) capture, in the order the flows started."""
    results: list[FlowResult] = []
    totals = analyze_stream(path, wanted, results.append)
    results.sort(key=lambda r: r.start)
    return results, totals
