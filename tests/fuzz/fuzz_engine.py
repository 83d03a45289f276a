"""Fuzz target (atheris, libFuzzer): bytes -> packets -> `parse_ip` -> flows -> the engine.

An input is a capture in a compact form: records of [2-byte length][2-byte time step in 10 us]
[that many bytes of IPv4 packet]; a short tail is one more packet. The seed corpus is the lab's
golden captures in that form (`seed_corpus`), so the fuzzer starts from real exchanges with
real resets, bursts, ICMP and retransmissions, and mutates from there.

What must hold for every input: `parse_ip` returns a record or None; the engine gives every flow
a verdict and every packet an origin, the probe's own packets "self". Anything else (an
exception, a hang past libFuzzer's -timeout) is a finding.

    python3 tests/fuzz/fuzz_engine.py -max_total_time=60 CORPUS_DIR   # CORPUS_DIR from seed_corpus()
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repository, when run as a script

try:
    import atheris
except ImportError:  # the hypothesis fallback in test_fuzz.py imports `one_input` only
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["probe"]):
        from probe.engine import analyze_flow
        from probe.engine.model import ORIGINS, VERDICTS, Flow
        from probe.files.flows import FlowTable, judge, stream_flows
        from probe.record import PacketRecord, parse_ip
else:
    from probe.engine import analyze_flow
    from probe.engine.model import ORIGINS, VERDICTS, Flow
    from probe.files.flows import FlowTable, judge, stream_flows
    from probe.record import PacketRecord, parse_ip

STEP = 1e-5  # seconds per unit of the time step
MAX_PACKETS = 200


def packets_of(data: bytes) -> list[tuple[float, bytes]]:
    """The (time, bytes) packets an input stands for."""
    packets, t, i = [], 1_700_000_000.0, 0
    while i < len(data) and len(packets) < MAX_PACKETS:
        if i + 4 > len(data):
            packets.append((t, data[i:]))
            break
        length, step = struct.unpack_from("!HH", data, i)
        t += step * STEP
        packets.append((t, data[i + 4:i + 4 + length]))
        i += 4 + length
    return packets


def encode(packets: list[tuple[float, bytes]]) -> bytes:
    """The input that stands for these packets (times rounded to the step, gaps capped at 0.65 s)."""
    out, previous = [], packets[0][0] if packets else 0.0
    for t, raw in packets:
        step = min(max(int(round((t - previous) / STEP)), 0), 0xFFFF)
        previous += step * STEP
        out.append(struct.pack("!HH", len(raw), step) + raw)
    return b"".join(out)


def one_input(data: bytes) -> None:
    packets = packets_of(data)
    records = []
    for t, raw in packets:
        record = parse_ip(raw, t)
        assert record is None or isinstance(record, PacketRecord)
        if record is not None:
            records.append(record)
    # every flow `probe analyze`'s table takes, judged as `probe analyze` judges it
    judged = [judge(open_flow) for open_flow in stream_flows(packets, FlowTable(None))][:8]
    flows = [(result.flow, result.packets, result.analysis) for result in judged]
    syn = next((r for r in records if r.proto == "tcp" and r.flags == "S"), None)
    if syn is not None:  # the flow the first SYN opens, judged over the whole capture (as `probe check` does)
        flow = Flow(syn.src, syn.sport, syn.dst, syn.dport)
        flows.append((flow, records, analyze_flow(records, flow)))
    for flow, packets, analysis in flows:
        assert analysis.verdict in VERDICTS, analysis.verdict
        assert len(analysis.attributions) == len(packets)
        for packet, attribution in zip(packets, analysis.attributions):
            assert attribution.origin in ORIGINS
            # at the client's seat its own packets are "self"; at the server's, a segment in the
            # client's name may be forged toward the server, so nothing is promised about them
            assert flow.vantage == "server" or attribution.origin == "self" or not flow.sent_by_client(packet)


def seed_corpus(directory: Path) -> int:
    """Write one input per golden capture into `directory`; returns how many."""
    from probe.files.pcap import ip_packets

    captures = sorted((HERE.parent / "golden" / "captures").glob("*.pcap"))
    for capture in captures:
        (directory / capture.stem).write_bytes(encode(list(ip_packets(str(capture)))))
    return len(captures)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
