"""`--json` of an ordinary flow written without the engine (`probe/files/_flowjson.pyx`) against the
engine's path (`render.flows.flow_json_text(analyzed_flow_json(flows.judge(flow)))`): the same bytes,
over every golden capture, every real capture of ../shared/realworld, the shapes of
`bench/analyze_shapes.py` (small), and property-generated exchanges whose packets carry drawn TCP
options, payload bytes (escapes, HTTP and TLS starts), TOS, IP-IDs and snap lengths. And the whole
command: `probe analyze --json` writes the same document as with `PROBE_PURE=1`, the reference,
where every flow goes through the engine."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from probe.files import flows as az
from probe.record import TCP_FLAG_LETTERS
from probe.render.flows import analyzed_flow_json, analyzed_flow_text, flow_json_text
from tests.properties.exchanges import forged_exchanges, genuine_exchanges, property_settings
from tests.unit.test_fastscan import TWO_ENDED, shape
from tests.unit.test_ordinary import GOLDEN, REALWORLD, ROOT

try:
    from probe.files import _fastscan, _flowjson
except ImportError:  # pragma: no cover - reported by test_the_extension_is_built
    _fastscan = _flowjson = None

needs_fast = pytest.mark.skipif(_flowjson is None, reason="probe.files._flowjson is not built")


def test_the_extension_is_built():
    assert _flowjson is not None, "probe/files/_flowjson.pyx is not built: run `pip install .` (needs gcc)"


def engine_json(open_flow) -> bytes:
    return flow_json_text(analyzed_flow_json(az.judge(open_flow))).encode()


def judged_alike(open_flow) -> None:
    """A flow the engine judged: its packets written by the compiled writer (`_flowjson.packets_text`,
    ICMP and odd values handed back to `packet_json`) as by `packet_json` and `json.dumps`."""
    result = az.judge(open_flow)
    assert analyzed_flow_text(result, _flowjson.packets_text) == flow_json_text(analyzed_flow_json(result)), \
        f"{open_flow.client}:{open_flow.client_port}"


def compare(flows) -> tuple[int, int]:
    """Every flow the pre-judgement holds ordinary, both ways: (written without the engine, declined).
    Every flow, ordinary or not, also as the engine judged it (`judged_alike`)."""
    assert az.writes_ordinary_json()
    written = declined = 0
    for open_flow in flows:
        judged_alike(open_flow)
        if open_flow.ordinary is None or not open_flow.ordinary.holds():
            continue
        [fast] = az.texts_of_recipes([az.ordinary_recipe(open_flow)])
        if type(fast) is not bytes:  # left to the engine: judged from the recipe as from the flow
            assert fast.analysis == az.judge(open_flow).analysis
            declined += 1
            continue
        assert fast == engine_json(open_flow), f"{open_flow.client}:{open_flow.client_port}"
        written += 1
    return written, declined


def file_flows(path: Path) -> list:
    """The flows of a capture as `probe analyze --json` reads them (the compiled table, bytes kept)."""
    table = _fastscan.FastFlowTable()
    table.keep_bytes = True
    return list(_fastscan.flows_of_file(str(path), table, []))


@needs_fast
@pytest.mark.parametrize("path", GOLDEN + TWO_ENDED, ids=[str(p.relative_to(ROOT / "tests" / "golden"))
                                                         for p in GOLDEN + TWO_ENDED])
def test_golden_captures_written_alike(path):
    compare(file_flows(path))


@needs_fast
@pytest.mark.parametrize("server_seat", [False, True])
def test_judged_packets_of_every_kind_written_alike(server_seat):
    """IPv4 and IPv6 segments, an ICMP error (handed back), option values of every type `_jsonable`
    takes and one it does not (a list: handed back), non-ASCII evidence, a payload cut by a snap
    length, a time too far from the first for the short form (handed back), and from either seat."""
    from probe.engine.model import Analysis, Attribution, Flow
    from probe.engine.vantage import Vantage
    from probe.record import PacketRecord, Quoted

    client, server = ("192.0.2.10", "198.51.100.80")
    flow = Flow(client, 40000, server, 80, "server" if server_seat else "client")
    packets = [
        PacketRecord(1.5, client, server, "tcp", 64, 7, True, 0, 60, "S", 40000, 80, 1, 0, 64240,
                     (("MSS", 1460), ("SAckOK", True), ("Timestamp", (1, 2)), ("NOP", None), ("opt99", b"\x00\xff"),
                      ("SAck", ((1, 2), (3, 4))))),
        PacketRecord(1.55, server, client, "tcp", 58, 0, False, 0xb8, 60, "SA", 80, 40000, 9, 2, 65535,
                     (("odd", [1, 2]),)),
        PacketRecord(1.6, client, server, "tcp", 64, 8, True, 0, 90, "PA", 40000, 80, 2, 10, 502, (),
                     b'GET /\xe9"\\\x7f HTTP/1.1\r\nHost: x\r\n' + bytes(range(40)), cut=12),
        PacketRecord(1.65, "203.0.113.1", client, "icmp", 250, 1, False, 0, 56, icmp_type=11, icmp_code=0,
                     quoted=Quoted(client, server, 6, 1, 8, 0, 90, 40000, 80, 2)),
        PacketRecord(2e9, server, client, "tcp", 58, 3, True, 0, 40, "R", 80, 40000, 10, 0, 0),
        PacketRecord(1.7, "2001:db8::1", "2001:db8::2", "tcp", 60, 0, True, 0, 0, "A", 80, 40000, 5, 6, 100,
                     version=6, flow_label=0xabcde),
    ]
    attributions = tuple(Attribution(origin, confidence, evidence) for origin, confidence, evidence in [
        ("self", "high", ()), ("server", "high", ("TTL 58 (about hop 6) \u2014 as expected", "round trip 50.0 ms")),
        ("self", "high", []), ("middlebox", "medium", ("time exceeded",)), ("middlebox", "low", ("a \"reset\"",)),
        ("unknown", "low", ())])
    analysis = Analysis("middlebox-reset", "to-client", 2, 50.0, attributions, "explained", None, ())
    result = az.FlowResult(flow, packets, analysis, Vantage(flow.vantage, "evidence"), 0)
    written = analyzed_flow_text(result, _flowjson.packets_text)
    assert written == flow_json_text(analyzed_flow_json(result))
    assert '"flow_label": 703710' in written and '"icmp_type": 11' in written and '\\u00e9' in written


@needs_fast
def test_a_clean_exchange_is_written_without_the_engine():
    """Else the tests here would pass with a renderer that always leaves the flow to the engine."""
    assert compare(file_flows(ROOT / "tests" / "golden" / "captures" / "01-clean.pcap")) == (1, 0)


@needs_fast
@pytest.mark.skipif(not REALWORLD, reason="../shared/realworld is not there")
@pytest.mark.parametrize("path", REALWORLD, ids=[p.name for p in REALWORLD])
def test_real_captures_written_alike(path):
    compare(file_flows(path))


@needs_fast
@pytest.mark.parametrize("name", ["short", "long", "mix", "old"])
def test_benchmark_shapes_written_alike(tmp_path_factory, name):
    """Every ordinary flow of the measured shapes is written without the engine, as the engine writes it."""
    written, declined = compare(file_flows(shape(tmp_path_factory, name, 20_000 if name == "long" else 4_000)))
    assert written > 0 and declined == 0


def both_ways(path: Path, workers: str, to_file: Path | None = None) -> list[tuple[int, bytes, bytes]]:
    """`probe analyze --json PATH`, compiled (most flows without the engine) and pure (every flow through
    the engine): exit status, stdout (or, with `to_file`, the document written there by `-o`), stderr."""
    outputs = []
    for pure in ("0", "1"):
        env = {**os.environ, "PROBE_PURE": pure, "PROBE_WORKERS": workers, "PYTHONPATH": str(ROOT)}
        output = [] if to_file is None else ["-o", str(to_file)]
        done = subprocess.run([sys.executable, "-m", "probe", "analyze", "--json", *output, str(path)], cwd=ROOT,
                              env=env, capture_output=True, timeout=300)
        document = done.stdout if to_file is None else to_file.read_bytes()
        outputs.append((done.returncode, document, done.stderr))
    return outputs


@needs_fast
@pytest.mark.parametrize("name", ["short", "long", "mix"])
def test_the_command_writes_the_reference_document(tmp_path_factory, name):
    """With workers (they write the ordinary flows' texts): the same bytes, the same exit status."""
    outputs = both_ways(shape(tmp_path_factory, name, 20_000 if name == "long" else 6_000), "2")
    assert outputs[0] == outputs[1]
    assert outputs[0][1].count(b'"verdict": "clean"') > 0


@needs_fast
def test_the_command_writes_the_reference_document_to_a_file(tmp_path_factory, tmp_path):
    """`-o FILE`: the document's head waits in the file's buffer while the writers write to the file
    itself; it must go first (`_write_joined` flushes it), and the end after them."""
    outputs = both_ways(shape(tmp_path_factory, "mix", 6_000), "2", tmp_path / "document.json")
    assert outputs[0] == outputs[1]
    assert outputs[0][1].startswith(b'{"schema": ') and outputs[0][1].count(b'"verdict": "clean"') > 0


CAPTURES = sorted((ROOT / "tests" / "golden" / "captures").glob("*.pcap")) + [
    p for p in REALWORLD if p.suffix == ".pcapng"]


@needs_fast
@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_the_command_writes_the_reference_document_of_each_capture(path):
    """The lab's recordings and the real pcapng captures (read by the pure reader, kept as bytes)."""
    outputs = both_ways(path, "0")
    assert outputs[0] == outputs[1]


# --- generated exchanges, their packets dressed with drawn bytes -----------------------------------

OPTION = st.one_of(
    st.just(b"\x01"), st.just(b"\x00"), st.builds(lambda mss: b"\x02\x04" + struct.pack("!H", mss), st.integers(0, 65535)),
    st.builds(lambda shift: b"\x03\x03" + bytes([shift]), st.integers(0, 255)), st.just(b"\x04\x02"),
    st.builds(lambda a, b: b"\x08\x0a" + struct.pack("!II", a, b), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(lambda blocks: bytes([5, 2 + 8 * len(blocks)]) + b"".join(struct.pack("!II", *b) for b in blocks),
              st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=3)),
    st.binary(min_size=1, max_size=6))  # unknown kinds, bad lengths, a malformed tail

PAYLOAD_STARTS = st.sampled_from([
    b"", b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\n", b"GET /a\rb\r\n", b"HEAD /\r",
    b"GET /" + b"a" * 54 + b"\r\n", b"GET /" + b"a" * 55 + b"\r\n", b"GET /" + b"a" * 56 + b"\n", b"POST /" + b"b" * 70,
    b"PUT /\xe9\x00\"\\\r\n", b"GET", b"\x16\x03\x01\x00\x05", b"\x17\x03\x03\x00\x10", b"\x15\x03\x03\x00\x02\x02\x28",
    b'"\\\x00\x7f\xff\t\x08\x0c'])


@st.composite
def dressing(draw, count: int) -> list[tuple[bytes, bytes, int, int | None]]:
    """Per packet: TCP options (padded to whole words), payload bytes, TOS, bytes a snap length keeps or None."""
    dressed = []
    for _ in range(count):
        options = b"".join(draw(st.lists(OPTION, max_size=4)))[:40]
        options += b"\x00" * (-len(options) % 4)
        filler = draw(PAYLOAD_STARTS) + draw(st.binary(max_size=80))
        dressed.append((options, filler, draw(st.sampled_from([0, 0, 0x10, 0xb8])),
                        draw(st.one_of(st.none(), st.integers(0, 120)))))
    return dressed


def dressed_bytes(record, options: bytes, filler: bytes, tos: int, snap: int | None) -> bytes:
    """A TCP record as an IPv4 packet with `options`, its payload's bytes replaced by `filler`'s (its
    length kept), and cut to `snap` bytes (its IP length kept, as `tcpdump -s` does)."""
    flags = sum(1 << TCP_FLAG_LETTERS.index(letter) for letter in record.flags)
    payload = (filler * (record.length // max(len(filler), 1) + 1))[:record.length] if filler else \
        bytes(record.length)
    tcp = struct.pack("!HHIIBBHHH", record.sport, record.dport, record.seq, record.ack, (5 + len(options) // 4) << 4,
                      flags, record.win, 0, 0) + options + payload
    packet = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(tcp), record.ip_id, 0x4000 if record.df else 0,
                         record.ttl, 6, 0, bytes(map(int, record.src.split("."))),
                         bytes(map(int, record.dst.split(".")))) + tcp
    return packet if snap is None else packet[:max(snap, 40 + len(options))]


def check_dressed(packets, dressing_of) -> None:
    """The TCP packets of an exchange, dressed, through the compiled table, then both ways."""
    table = _fastscan.FastFlowTable()
    table.keep_bytes = True
    flows = []
    for record, dress in zip([p for p in packets if p.proto == "tcp"], dressing_of):
        flows += table.feed(record.t, dressed_bytes(record, *dress))
    compare(flows + table.drain())


@needs_fast
@given(st.data())
@property_settings(300)
def test_genuine_exchanges_written_alike(data):
    exchange = data.draw(genuine_exchanges())
    check_dressed(exchange.packets, data.draw(dressing(len(exchange.packets))))


@needs_fast
@given(st.data())
@property_settings(100)
def test_exchanges_with_a_forged_reset_written_alike(data):
    exchange = data.draw(forged_exchanges())
    check_dressed(exchange.packets, data.draw(dressing(len(exchange.packets))))


CLIENT, SERVER = "192.0.2.10", "198.51.100.80"


@st.composite
def ordinary_exchanges(draw):
    """Exchanges of the shape the pre-judgement holds ordinary, their numbers drawn freely: times from
    1970 on, any round trip, sequence numbers that wrap, the server's IP-IDs (zero, counting in
    steps small or large, Linux's zero then a count, random), several request and answer segments
    answered sooner or later than most of a round trip, the client's ACKs, either end's FIN."""
    from probe.record import PacketRecord

    t = draw(st.one_of(st.just(0.0), st.integers(0, 2**31).map(float))) + draw(st.integers(0, 999_999)) / 1e6
    rtt = draw(st.floats(0.0003, 0.4))
    ours_ttl = draw(st.sampled_from([64, 128, 255]))
    server_ttl = draw(st.integers(2, 254).filter(lambda ttl: ttl not in (32, 64, 128)))
    sport, dport = draw(st.integers(1024, 65535)), draw(st.sampled_from([80, 443, 8080]))
    isn, irs = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))
    df = draw(st.booleans())
    habit = draw(st.sampled_from(["zero", "counter", "linux", "random"]))
    server_id = draw(st.integers(0, 65535))
    our_id = draw(st.integers(0, 65535))
    packets = []

    def ours(at, flags, seq, ack, length=0):
        nonlocal our_id
        our_id = (our_id + 1) % 65536
        packets.append(PacketRecord(at, CLIENT, SERVER, "tcp", ours_ttl, our_id, True, 0, 0, flags=flags, sport=sport,
                                    dport=dport, seq=seq % 2**32, ack=ack % 2**32, win=502, payload=bytes(length)))

    def theirs(at, flags, seq, ack, length=0):
        nonlocal server_id
        if habit == "zero" or habit == "linux" and flags == "SA":
            ip_id = 0
        elif habit == "random":
            ip_id = draw(st.integers(1, 65535))
        else:
            server_id = (server_id + draw(st.sampled_from([1, 1, 2, 70, 3000]))) % 65536
            ip_id = server_id
        packets.append(PacketRecord(at, SERVER, CLIENT, "tcp", server_ttl, ip_id, df, 0, 0, flags=flags, sport=dport,
                                    dport=sport, seq=seq % 2**32, ack=ack % 2**32, win=65160,
                                    payload=bytes(length)))

    ours(t, "S", isn, 0)
    t += rtt
    theirs(t, "SA", irs, isn + 1)
    ours(t + draw(st.floats(0, rtt / 4)), "A", isn + 1, irs + 1)
    ours_end, their_end = isn + 1, irs + 1
    for _ in range(draw(st.integers(1, 3))):  # the request, in segments
        length = draw(st.integers(1, 1400))
        t += draw(st.floats(0, rtt / 8))
        ours(t, "PA", ours_end, their_end, length)
        ours_end += length
    for n in range(draw(st.integers(1, 8))):  # the answer, its segments acknowledged now and then
        t += rtt * draw(st.floats(0.5001, 3.0)) if n == 0 else draw(st.floats(0, rtt))
        length = draw(st.integers(1, 1448))
        theirs(t, draw(st.sampled_from(["A", "PA"])), their_end, ours_end, length)
        their_end += length
        if draw(st.booleans()):
            t += draw(st.floats(0, rtt / 8))
            ours(t, "A", ours_end, their_end)
    ending = draw(st.sampled_from(["open", "ours", "theirs", "both"]))
    if ending in ("ours", "both"):
        t += draw(st.floats(0, rtt / 8))
        ours(t, "FA", ours_end, their_end)
        ours_end += 1
    if ending in ("theirs", "both"):
        t += rtt * draw(st.floats(0.5001, 2.0))
        theirs(t, "FA", their_end, ours_end)
        their_end += 1
        t += draw(st.floats(0, rtt / 8))
        ours(t, "A", ours_end, their_end)
    return packets


@needs_fast
@given(st.data())
@property_settings(400)
def test_ordinary_exchanges_written_alike(data):
    packets = data.draw(ordinary_exchanges())
    check_dressed(packets, data.draw(dressing(len(packets))))


@needs_fast
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
                 st.integers(-10**7, 10**7).map(lambda k: k / 8), st.integers(-10**6, 10**6).map(lambda k: k / 1000),
                 st.integers(0, 10**9).map(lambda k: k * 0.001 * 1000)))
@property_settings(2000)
def test_numbers_written_as_python_writes_them(value):
    """Times and round trips: `.1f` and `repr(round(x, 3))`, ties (exact in binary: k/8) and huge values too."""
    assert _flowjson.decimal_text(value, 1, False) == f"{value:.1f}"
    if abs(value) < 1e9:
        assert _flowjson.decimal_text(value, 3, True) == repr(round(value, 3))


@needs_fast
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("stored", [False, True], ids=["texts-read", "texts-copied-where-they-are"])
def test_recipes_written_in_start_order_by_writers_taking_turns(tmp_path_factory, tmp_path, monkeypatch, workers,
                                                                stored):
    """`probe analyze --json`'s way: ordinary flows kept as recipes (`flows.ordinary_recipe`) in the
    spool beside the engine's texts, and written at the end (`analyze._write_joined`), by forked
    writers taking turns, in parts small enough that texts, recipes and parts interleave (and with
    the engine's longer texts copied from where they are, `_Spool.Stored`): the document's flows
    are the engine's texts of every flow, in start order (ties as they finished)."""
    from probe.commands import analyze

    path = shape(tmp_path_factory, "mix", 6_000)
    reference = []  # every flow through the engine, as `PROBE_PURE=1` would
    az.analyze_stream(str(path), None, reference.append)
    expected = b",\n".join(flow_json_text(analyzed_flow_json(result)).encode()
                           for result in sorted(reference, key=lambda result: result.start))

    monkeypatch.setattr(analyze, "PART_TEXTS", 5)
    if stored:
        monkeypatch.setattr(analyze._Spool, "WINDOW", 1 << 14)  # texts of 4 kB and more: copied where they are
        monkeypatch.setattr(analyze._Spool, "BEHIND", 1 << 12)
    spool, recipes = analyze._Spool(), []
    az.analyze_stream(str(path), None,
                      lambda result: spool.add(result.start, flow_json_text(analyzed_flow_json(result))),
                      workers=workers, on_summary=lambda summary: recipes.append(summary) or
                      spool.add_recipe(summary.start, summary.recipe), recipes=spool.put)
    document = tmp_path / "document"
    with open(document, "w", encoding="utf-8") as handle:
        writers = analyze._Writers.start(handle, workers, spool)
        assert (writers is None) == (workers == 0)
        try:
            analyze._write_joined(spool, handle, writers)
        finally:
            if writers is not None:
                writers.close()
    assert len(recipes) > len(reference) // 2  # most flows were recipes
    assert document.read_bytes() == expected


@needs_fast
def test_a_writer_that_fails_passes_its_turn_on(tmp_path_factory, tmp_path, monkeypatch):
    """A part whose texts cannot be made: the error reaches the reader, and the writers after it
    still take their turns (none waits for it forever); the parts before it are written."""
    from probe.commands import analyze

    path = shape(tmp_path_factory, "short", 2_000)
    monkeypatch.setattr(analyze, "PART_TEXTS", 3)
    spool = analyze._Spool()
    az.analyze_stream(str(path), None, lambda result: spool.add(result.start, "{}"),
                      on_summary=lambda summary: spool.add_recipe(summary.start, summary.recipe), recipes=spool.put)
    made = analyze._texts_of_recipes
    calls = []

    def failing(spool_file, places):
        calls.append(1)
        if len(calls) == 4:  # the fourth part each writer makes
            raise RuntimeError("made to fail")
        return made(spool_file, places)

    monkeypatch.setattr(analyze, "_texts_of_recipes", failing)
    document = tmp_path / "document"
    with open(document, "w", encoding="utf-8") as handle:
        writers = analyze._Writers.start(handle, 2, spool)
        try:
            with pytest.raises(RuntimeError, match="made to fail"):
                analyze._write_joined(spool, handle, writers)
        finally:
            writers.close()
    assert document.stat().st_size > 0


@needs_fast
def test_writers_die_with_a_killed_reader(tmp_path_factory):
    """`probe analyze --json` killed outright (SIGKILL: no handler runs) leaves no process behind: its
    writers (forked at the start, idle while it reads) and the engine's workers, each waiting on
    its pool's queue, are killed by the kernel with it (`flows.die_with_parent`)."""
    import signal
    import time

    path = shape(tmp_path_factory, "short", 200_000)
    env = {**os.environ, "PROBE_WORKERS": "2", "PYTHONPATH": str(ROOT)}
    reader = subprocess.Popen([sys.executable, "-m", "probe", "analyze", "--json", str(path)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children() -> set[int]:
        found = set()
        for task in os.listdir(f"/proc/{reader.pid}/task"):
            with open(f"/proc/{reader.pid}/task/{task}/children") as handle:
                found |= {int(pid) for pid in handle.read().split()}
        return found

    try:
        deadline, forked = time.monotonic() + 60, set()
        while len(forked) < 4 and reader.poll() is None and time.monotonic() < deadline:
            forked |= children()  # the two writers, then the engine's two workers
            time.sleep(0.01)
        assert len(forked) >= 4, "the reader never had its writers and workers"
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") for pid in forked) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in forked if os.path.exists(f"/proc/{pid}")]
    for pid in left:  # not to leave them running if this fails
        os.kill(pid, signal.SIGKILL)
    assert not left
