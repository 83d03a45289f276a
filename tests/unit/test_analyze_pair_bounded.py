"""Two-ended `probe analyze` in bounded memory prints what the old in-memory path printed.

`in_memory_two_ended` below is that path as it was before the flows were spooled to disk (both
files' results in lists, a plain scan to pair them, every delay kept for the clock estimate): the
reference the spooled path must match byte for byte, on the lab's recorded pairs one by one and on
all of them merged into one busy pair of captures (one server capture left out, so that a flow
goes unpaired).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import dpkt
import pytest

from probe.files.flows import FlowFilter, analyze_file
from probe.files.pair import (FlowKey, Pair, _first_data, _isns, _timelines, compare, pair_keys,
                              spool_capture, with_proof)
from probe.render.flows import analyzed_flow_json, paired_flow_json
from probe.render.advice import next_step
from probe.render.colour import PLAIN
from probe.commands.analyze import _Outputs, _analyze_two
from probe.outcome import worst as worst_exit_code
from probe.commands.common import exit_code_for
from probe.errors import ProbeError
from probe.files.pcap import ip_packets
from probe.render.report import SCHEMA, packet_table

HERE = Path(__file__).resolve().parent.parent / "golden" / "two-ended"
SCENARIOS = sorted(p.name[:-len(".live.json")] for p in HERE.glob("*.live.json"))


# --- the reference: the in-memory path as it was ---------------------------------------------------


def scan_pairs(client_results, server_results) -> list[Pair]:
    pairs, taken = [], set()
    for mine in client_results:
        f = mine.flow
        candidates = [(i, other) for i, other in enumerate(server_results) if i not in taken]
        found = None
        for i, other in candidates:
            o = other.flow
            if (o.client, o.client_port, o.server, o.server_port) == (f.client, f.client_port, f.server, f.server_port):
                found = (i, other, "addresses and ports")
                break
        if found is None and _isns(mine)[0] is not None:
            found = next(((i, other, "the client's initial sequence number (through NAT)") for i, other in candidates
                          if _isns(other)[0] == _isns(mine)[0]), None)
        if found is None and _first_data(mine):
            found = next(((i, other, "the client's first bytes of data (through NAT)") for i, other in candidates
                          if _first_data(other) == _first_data(mine)), None)
        if found is not None:
            taken.add(found[0])
            pairs.append(Pair(mine, found[1], found[2]))
    return pairs


def listed_clock(pairs):
    toward_server, toward_client = [], []
    for pair in pairs:
        lines = _timelines(pair)
        for identity, copies in lines["client"].items():
            other = lines["server"].get(identity)
            if len(copies) == 1 and other is not None and len(other) == 1:
                delta = other[0][0] - copies[0][0]
                (toward_server if identity[0] else toward_client).append(delta)
    if toward_server and toward_client:
        up, down = min(toward_server), min(-d for d in toward_client)
        return (up - down) / 2, (up + down) / 2
    if toward_server or toward_client:
        return (min(toward_server) if toward_server else -min(-d for d in toward_client)), None
    return None, None


def in_memory_two_ended(first: str, second: str, json_output: bool, verbose: bool) -> tuple[str, int]:
    loaded = {}
    for path in (first, second):
        results, _totals = analyze_file(path)
        if not results:
            raise ProbeError(path)
        loaded[path] = results
    by_side = {path: sum(1 if r.flow.vantage == "client" else -1 for r in results) for path, results in loaded.items()}
    client_file = max(by_side, key=lambda path: by_side[path])
    server_file = second if client_file == first else first
    if client_file == server_file or by_side[client_file] <= 0 <= by_side[server_file] and \
            by_side[client_file] == by_side[server_file]:
        client_file, server_file = first, second
    pairs = scan_pairs(loaded[client_file], loaded[server_file])
    offset, one_way = listed_clock(pairs)
    pairs = [compare(pair, offset, one_way) for pair in pairs]
    assert pairs
    codes, flows, texts = [], [], []
    for pair in pairs:
        client_side, server_side, verdict, direction, explanation = with_proof(pair)
        codes.append(exit_code_for(verdict, client_side.analysis.hop))
        flows.append(paired_flow_json(pair, client_side, server_side, verdict, direction, explanation))
        offset = "unknown" if pair.offset is None else f"{pair.offset * 1000:+.1f} ms"
        lines = [f"{client_side.flow.client}:{client_side.flow.client_port} -> {client_side.flow.server}:"
                 f"{client_side.flow.server_port}, paired by {pair.matched_by}; server clock {offset}",
                 f"at the client ({client_file}):", packet_table(client_side.packets, client_side.flow,
                                                                 client_side.analysis, verbose=verbose),
                 f"at the server ({server_file}):", packet_table(server_side.packets, server_side.flow,
                                                                 server_side.analysis, verbose=verbose)]
        lines += [f"FORGED: {m.sentence}" for m in pair.missing if m.kind == "forged"]
        lines += [f"NEVER ARRIVED: {m.sentence}" for m in pair.missing if m.kind == "never-arrived"]
        lines.append(f"verdict: {verdict}  direction: {direction or '-'}")
        step = next_step(verdict, direction, client_side.analysis.hop, command="analyze")
        lines += [step] if step else []
        if verbose or verdict != "clean" or pair.missing:
            texts.append("\n".join(lines))
        else:
            texts.append(lines[0] + f"\nverdict: {verdict}")
    paired = {id(p.client_side) for p in pairs}
    alone = [analyzed_flow_json(r) for r in loaded[client_file] if id(r) not in paired]
    if json_output:
        out = json.dumps({"schema": SCHEMA, "command": "analyze", "files": {"client": client_file,
                                                                          "server": server_file},
                          "flows": flows, "unpaired": alone}, indent=2) + "\n"
    else:
        out = "\n\n".join(texts) + "\n"
    return out, worst_exit_code(codes)


# --- the comparisons ---------------------------------------------------------------------------------


def spooled_two_ended(first: str, second: str, json_output: bool, verbose: bool, capsys) -> tuple[str, int]:
    capsys.readouterr()
    code = _analyze_two(first, second, FlowFilter(), _Outputs.open(json_output, verbose, False, None, None, PLAIN))
    return capsys.readouterr().out, code


def merged(paths: list[Path], out: Path) -> str:
    """The packets of several captures in one, in time order (raw IP)."""
    packets = sorted((t, packet) for path in paths for t, packet in ip_packets(str(path)))
    with open(out, "wb") as handle:
        writer = dpkt.pcap.Writer(handle, linktype=101, nano=True)
        for t, packet in packets:
            writer.writepkt(packet, ts=t)
    return str(out)


MODES = [(True, False), (False, False), (False, True)]  # --json, the table, --verbose


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n != "04-firewall-reset"])
@pytest.mark.parametrize("json_output, verbose", MODES)
def test_each_recorded_pair_prints_what_the_in_memory_path_did(name, json_output, verbose, capsys):
    files = (str(HERE / f"{name}.server.pcap"), str(HERE / f"{name}.pcap"))
    assert spooled_two_ended(*files, json_output, verbose, capsys) == in_memory_two_ended(*files, json_output, verbose)


@pytest.mark.parametrize("json_output, verbose", MODES)
def test_all_recorded_pairs_merged_print_what_the_in_memory_path_did(tmp_path, json_output, verbose, capsys):
    client = merged([HERE / f"{name}.pcap" for name in SCENARIOS], tmp_path / "client.pcap")
    server = merged([HERE / f"{name}.server.pcap" for name in SCENARIOS if name != "01-clean"],
                    tmp_path / "server.pcap")
    for files in ((client, server), (server, client)):
        got = spooled_two_ended(*files, json_output, verbose, capsys)
        assert got == in_memory_two_ended(*files, json_output, verbose)
    if json_output:
        document = json.loads(got[0])
        assert len(document["flows"]) >= 12 and document["unpaired"]  # 01-clean's have no server side
        assert {flow["paired_by"] for flow in document["flows"]} >= {
            "addresses and ports", "the client's first bytes of data (through NAT)"}


def test_no_flow_in_a_file_is_one_clear_error():
    with pytest.raises(ProbeError, match="holds no TCP packets"):
        _analyze_two(str(HERE / "04-firewall-reset.server.pcap"), str(HERE / "04-firewall-reset.pcap"),
                     FlowFilter(), _Outputs.open(True, False, False, None, None, PLAIN))


def test_spooled_results_come_back_whole_in_start_order():
    spool, totals = spool_capture(str(HERE / "06-field-report.pcap"), None)
    results, _totals = analyze_file(str(HERE / "06-field-report.pcap"))
    assert [spool.load(n) for n in range(len(spool))] == results and totals.flows == len(results)


def test_pair_keys_is_the_plain_scan_with_an_index():
    """Each client flow takes the first server flow not yet taken that matches by 4-tuple, else by
    ISN, else by first data: the same choice as a scan of every server flow in turn."""
    rng = random.Random(6)

    def key() -> FlowKey:
        return FlowKey(0.0, "client", ("10.0.0.1", rng.randint(1, 4), "10.0.0.2", 80),
                       rng.choice([None, 1, 2, 3]), rng.choice([None, b"a", b"b"]))

    def scan(client_keys, server_keys):
        taken, pairs = set(), []
        for i, mine in enumerate(client_keys):
            for field, how in (("ends", 0), ("client_isn", 1), ("first_data", 2)):
                value = getattr(mine, field)
                j = next((j for j, other in enumerate(server_keys) if j not in taken and value is not None
                          and getattr(other, field) == value), None)
                if j is not None:
                    taken.add(j)
                    pairs.append((i, j, how))
                    break
        return pairs

    for _ in range(300):
        client_keys = [key() for _ in range(rng.randint(0, 8))]
        server_keys = [key() for _ in range(rng.randint(0, 8))]
        got = [(i, j, how) for i, j, how in pair_keys(client_keys, server_keys)]
        expected = scan(client_keys, server_keys)
        assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in expected]
        assert [how for _, _, how in got] == [("addresses and ports", "the client's initial sequence number "
                                               "(through NAT)", "the client's first bytes of data (through NAT)")[h]
                                              for _, _, h in expected]
