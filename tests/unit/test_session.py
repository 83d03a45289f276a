"""The batch I/O loop (probe.network.admission) over the fake network of fakenet.py."""

from __future__ import annotations

import errno

import pytest

from probe.engine import analyze_flow
from probe.protocol.craft import StructCrafter
from probe.network.single import CheckOptions
from probe.record import parse_ip
from probe.network.admission import Session, SessionOptions, TokenBucket
from probe.protocol.tcp import Segment, Settings

from .fakenet import CLIENT, DEAD_HOST_ERROR_AFTER, RTT, FailingSender, FakeNet, FakePort, icmp_quoting, target


def run(net: FakeNet, targets, **options):
    check = CheckOptions(settings=Settings(syn_retries=1), max_time=options.pop("max_time", 30.0))
    session = Session(SessionOptions(check, **options), net.network())
    return session, list(session.run(targets))


@pytest.fixture
def net():
    return FakeNet()


def test_each_exchange_gets_its_own_packets_and_verdict(net):
    targets = [(i, target(f"203.0.113.{80 + i % 5}", (80, 81, 82)[i % 3])) for i in range(30)]
    session, done = run(net, targets, concurrency=7, rate=10_000)
    assert sorted(f.tag for f in done) == list(range(30))
    verdicts = {}
    for finished in done:
        m = finished.measurement
        assert m.packets and all(m.flow.belongs(p) for p in m.packets)
        assert {p.dport for p in m.packets if m.flow.sent_by_client(p)} == {m.target.port}
        verdicts.setdefault(m.target.port, set()).add(analyze_flow(m.packets, m.flow).verdict)
    assert verdicts == {80: {"clean"}, 81: {"server-reset"}, 82: {"no-answer"}}
    # every flow was in the guard's set before its first packet, and each exactly once
    assert len(net.flows_guarded) == len(set(net.flows_guarded)) == 30
    assert session.peak_in_flight == 7
    assert sorted(net.watched[-1]) == [f"203.0.113.{80 + i}" for i in range(5)]


def test_every_packet_sent_is_in_exactly_one_measurement(net):
    targets = [(i, target("203.0.113.80", 80)) for i in range(12)]
    _, done = run(net, targets, concurrency=5, rate=10_000)
    recorded = [p for f in done for p in f.measurement.packets if f.measurement.flow.sent_by_client(p)]
    assert len(recorded) == len(net.sent)
    assert len({(p.sport, p.seq, p.flags, p.ip_id) for p in recorded}) == len(net.sent)


def test_clean_exchange_lingers_as_probe_check_does(net):
    _, [finished] = run(net, [(0, target("203.0.113.80", 80))], concurrency=1, rate=10_000)
    packets = finished.measurement.packets
    assert [p.flags for p in packets] == ["S", "SA", "A", "PA", "FPA", "FA", "A"]
    assert finished.measurement.progress.closed_politely
    # started at 1000.0; three round trips of exchange, then max(0.5 s, 3 RTT) of listening
    assert net.now == pytest.approx(1000.0 + 3 * RTT + 0.5, abs=0.01)


def test_an_unfinished_exchange_is_closed_with_resets_as_probe_check_does(net):
    _, [finished] = run(net, [(0, target("203.0.113.80", 83))], concurrency=1, rate=10_000)
    flow, packets = finished.measurement.flow, finished.measurement.packets
    sent = [p.flags for p in packets if flow.sent_by_client(p)]
    # SYN, ACK, the request and its three retransmissions, then a reset at the two sequence
    # numbers the server may expect (all of the request, or none of it)
    assert sent == ["S", "A", "PA", "PA", "PA", "PA", "R", "R"]
    resets = [p for p in packets if p.flags == "R"]
    request = next(p for p in packets if p.flags == "PA")
    assert {r.seq for r in resets} == {packets[0].seq + 1, packets[0].seq + 1 + request.length}
    assert analyze_flow(packets, flow).verdict == "dropped"


def test_icmp_quoting_a_flow_goes_to_that_flow(net):
    # the third flow's request draws an ICMP error; its port is known once the flow starts
    targets = [(i, target("203.0.113.80", 80)) for i in range(4)]
    original = net.on_sent

    def on_sent(raw):
        record = parse_ip(raw, net.now)
        if record.flags == "S" and len(net.icmp_for) == 0 and len([s for s in net.sent if s.flags == "S"]) == 2:
            net.icmp_for = {f"{record.src}:{record.sport}"}
        original(raw)

    net.on_sent = on_sent
    _, done = run(net, targets, concurrency=4, rate=10_000)
    with_icmp = [f for f in done if any(p.proto == "icmp" for p in f.measurement.packets)]
    assert len(with_icmp) == 1
    m = with_icmp[0].measurement
    assert f"{m.flow.client}:{m.flow.client_port}" in net.icmp_for
    assert analyze_flow(m.packets, m.flow).verdict == "unreachable"


def test_a_dead_host_ends_the_exchange_at_the_routers_error(net):
    # the last router's "host unreachable" 15 ms after the SYN ends the attempt, as connect()
    # fails at once; then only the linger (0.5 s: no round trip is known), no SYN timeouts
    net.dead = {"203.0.113.99"}
    _, [finished] = run(net, [(0, target("203.0.113.99", 80))], concurrency=1, rate=10_000)
    m = finished.measurement
    assert [(p.proto, p.flags, p.icmp_code) for p in m.packets] == [("tcp", "S", None), ("icmp", "", 1)]
    assert m.progress.icmp_error == (3, 1) and m.progress.syn_sent == 1
    assert net.now == pytest.approx(1000.0 + DEAD_HOST_ERROR_AFTER + 0.5, abs=0.01)


def test_a_synack_behind_a_forged_unreachable_is_reset_at_the_close(net):
    # the error ended the attempt, but the server answered: it must not be left half-open
    net.forged_unreachable = {"203.0.113.80"}
    _, [finished] = run(net, [(0, target("203.0.113.80", 80))], concurrency=1, rate=10_000)
    m = finished.measurement
    assert [p.flags or p.proto for p in m.packets] == ["S", "icmp", "SA", "R"]
    syn, reset = m.packets[0], m.packets[-1]
    assert reset.seq == syn.seq + 1 and [p.flags for p in net.sent] == ["S", "R"]


def test_rate_limit_paces_the_starts(net):
    targets = [(i, target("203.0.113.80", 82)) for i in range(20)]  # one SYN each, then silence
    run(net, targets, concurrency=20, rate=10.0, max_time=0.5)
    syns = sorted(p.t for p in net.sent if p.flags == "S" and p.seq is not None)
    first_syns = syns[:20]
    # a burst of rate/10 = 1 packet, then 10 a second: 20 SYN in about 2 s, never faster
    assert first_syns[-1] - first_syns[0] >= 1.5


def test_targets_without_an_address_are_reported_not_probed(net):
    _, done = run(net, [(0, "cannot resolve nowhere.example"), (1, target("203.0.113.80", 81))],
                  concurrency=2, rate=10_000)
    by_tag = {f.tag: f for f in done}
    assert by_tag[0].measurement is None and "cannot resolve" in by_tag[0].error
    assert by_tag[1].measurement is not None


def test_token_bucket():
    bucket = TokenBucket(rate=100, burst=10, now=0.0)
    for _ in range(10):
        assert bucket.ready()
        bucket.take()
    assert not bucket.ready()
    assert bucket.wait() == pytest.approx(0.01)
    bucket.take(5)  # an exchange in flight never waits: debt
    bucket.refill(0.05)
    assert not bucket.ready()
    bucket.refill(0.065)
    assert bucket.ready()
    bucket.refill(100.0)
    assert bucket.tokens == 10


# -- the shared capture's filter ------------------------------------------------------------------

def _addresses(count: int) -> list[str]:
    return [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(count)]


def _attachable(program: bytes) -> bool:
    """The kernel's own check of a classic BPF program (any socket takes one, no privilege)."""
    import ctypes
    import socket
    import struct

    from probe.network.wire import SO_ATTACH_FILTER

    buf = ctypes.create_string_buffer(program)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                           struct.pack("HL", len(program) // 8, ctypes.addressof(buf)))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("count, per_address", [(1, True), (200, True), (1021, True), (1022, False),
                                                (10_000, False)])
def test_fleet_filter_stays_within_classic_bpf(count, per_address):
    from probe.network.wire import BPF_MAX_INSTRUCTIONS, _bpf_addresses, _bpf_tcp_icmp, fleet_filter

    program = fleet_filter(_addresses(count))
    assert len(program) // 8 <= BPF_MAX_INSTRUCTIONS
    assert program == (_bpf_addresses(sorted(set(_addresses(count)))) if per_address else _bpf_tcp_icmp())
    assert _attachable(program)
    assert not _attachable(_bpf_addresses(_addresses(1022)))  # what the fallback is for


def _run_bpf(program: bytes, packet: bytes, ethertype: int = 0x0800) -> int:
    """A classic BPF interpreter for the six instructions the filters use."""
    import struct

    ins = [struct.unpack("HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    pc, a = 0, 0
    for _ in range(len(ins)):
        code, jt, jf, k = ins[pc]
        if code == 0x20:  # ld word: the ancillary protocol, or 4 bytes of the packet
            a = ethertype if k == 0xFFFFF000 else struct.unpack("!I", packet[k:k + 4])[0]
        elif code == 0x30:
            a = packet[k]
        elif code == 0x15:
            pc += jt if a == k else jf
        elif code == 0x35:
            pc += jt if a >= k else jf
        elif code == 0x05:
            pc += k
        elif code == 0x06:
            return k
        pc += 1
    raise AssertionError("fell off the program")


@pytest.mark.parametrize("count", [3, 1021, 1022])
def test_fleet_filter_takes_exactly_the_targets_and_icmp(count):
    from probe.network.wire import fleet_filter

    addresses = _addresses(count)
    program = fleet_filter(addresses)
    crafter = StructCrafter(addresses[-1], 80, "192.0.2.10", 40000, 0)
    reply = crafter.build(Segment("SA", 1, 2, 100))
    sent = StructCrafter("192.0.2.10", 40000, addresses[0], 80, 0).build(Segment("S", 1, 0, 100))
    stranger = StructCrafter("192.0.2.10", 40000, "198.51.100.99", 80, 0).build(Segment("S", 1, 0, 100))
    icmp = icmp_quoting(sent)
    assert _run_bpf(program, reply) and _run_bpf(program, sent) and _run_bpf(program, icmp)
    assert not _run_bpf(program, reply, ethertype=0x86DD)
    assert bool(_run_bpf(program, stranger)) == (count > 1021)  # past the limit, userspace sorts it out


@pytest.mark.parametrize("count, v4", [(1, 1), (100, 1), (127, 1), (128, 1), (100, 200), (90, 300)])
def test_fleet_filter_takes_ipv6_targets_their_icmpv6_errors_and_ipv4_beside_them(count, v4):
    """Mixed families: IPv6 packets to or from a target, ICMPv6 errors and echo replies (RFC
    4443 2.1: types below 128 are errors), the IPv4 targets as before; not a stranger, not
    neighbour discovery (past its budget, 127 IPv6 addresses alone, the filter takes all TCP and ICMP(v6))."""
    from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6ND_NS, ICMPv6TimeExceeded, IPv6

    from probe.network.wire import BPF_MAX_INSTRUCTIONS, fleet_filter

    v6 = [f"2001:db8:{i:x}::80" for i in range(count)]
    program = fleet_filter(v6 + ["203.0.113.80"] + _addresses(v4 - 1))
    assert len(program) // 8 <= BPF_MAX_INSTRUCTIONS and _attachable(program)
    sent = StructCrafter("2001:db8::10", 40000, v6[-1], 80, 0).build(Segment("S", 1, 0, 100))
    reply = StructCrafter(v6[0], 80, "2001:db8::10", 40000, 0).build(Segment("SA", 1, 2, 100))
    stranger = StructCrafter("2001:db8::10", 40000, "2001:db8:ffff::99", 80, 0).build(Segment("S", 1, 0, 100))
    router = IPv6(src="2001:db8::1", dst="2001:db8::10")
    for packet in (sent, reply, bytes(router / ICMPv6TimeExceeded() / sent), bytes(router / ICMPv6EchoReply())):
        assert _run_bpf(program, packet, ethertype=0x86DD)
    assert _run_bpf(program, StructCrafter("192.0.2.10", 40000, "203.0.113.80", 80, 0).build(Segment("S", 1, 0, 9)))
    assert bool(_run_bpf(program, stranger, ethertype=0x86DD)) == (32 * count + 4 * v4 + 18 > 4096)
    assert not _run_bpf(program, bytes(router / ICMPv6ND_NS(tgt="2001:db8::10")), ethertype=0x86DD)
    assert not _run_bpf(program, sent, ethertype=0x0806)


def run_with_sender(net: FakeNet, targets, sender, **options):
    check = CheckOptions(settings=Settings(syn_retries=1), max_time=30.0)
    session = Session(SessionOptions(check, **options), net.network(sender))
    return session, list(session.run(targets))


@pytest.mark.parametrize("error", [OSError(errno.ENOBUFS, "No buffer space available"),
                                   OSError(errno.EAGAIN, "Resource temporarily unavailable")])
def test_a_transient_send_error_on_a_closing_reset_does_not_abort_the_batch(net, error):
    targets = [(i, target("203.0.113.80", 83)) for i in range(4)]  # each ends with closing resets
    _, done = run_with_sender(net, targets, FailingSender(net, 1, error, flags="R"), concurrency=4, rate=10_000)
    assert sorted(f.tag for f in done) == [0, 1, 2, 3]
    assert all(analyze_flow(f.measurement.packets, f.measurement.flow).verdict == "dropped" for f in done)


def test_resets_sent_before_a_send_error_are_still_recorded(net):
    """The first reset leaves, the second is refused: the pcap must still hold the first."""
    from probe.errors import ProbeError

    sender = FailingSender(net, 2, ProbeError("sending was refused by a local firewall rule"), flags="R")
    _, [finished] = run_with_sender(net, [(0, target("203.0.113.80", 83))], sender, concurrency=1, rate=10_000)
    flow, packets = finished.measurement.flow, finished.measurement.packets
    recorded_resets = [p for p in packets if flow.sent_by_client(p) and p.flags == "R"]
    wire_resets = [p for p in net.sent if p.flags == "R"]
    assert len(wire_resets) == 1 and len(recorded_resets) == 1
    recorded = [p for p in packets if flow.sent_by_client(p)]
    assert len(recorded) == len(net.sent)
