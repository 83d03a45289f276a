"""`probe check` against the lab's real servers: verdicts and exit codes, the probe/1 JSON
document, the pcap file, and a polite close that leaves nothing half-open on the server."""

from __future__ import annotations

import os
import re
import subprocess
from decimal import Decimal

import pytest
from e2ekit import (DELAY_MS, ProbeRun, guard_tables, probe_args, run_probe, server_tcp_states,
                    wait_for)

from netns.lab import ABORT_PORT, BIG_SIZE, CLOSED_PORT, HTTP_PORT

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]

TOP_FIELDS = {"schema", "command", "target", "verdict", "direction", "hop", "rtt_ms", "packets",
              "explanation"}
TARGET_FIELDS = {"url", "host", "address", "port"}
TCP_PACKET_FIELDS = {"n", "dir", "t_ms", "proto", "src", "dst", "ttl", "ip_id", "df", "flags",
                     "seq", "ack", "win", "len", "origin", "evidence"}
ORIGINS = {"self", "server", "path", "middlebox", "unknown"}
CLEAN_EXIT, TARGET_FAILED_EXIT = 0, 4
SETTLED_STATES = {"TIME-WAIT"}  # or no socket at all
CLOSE_TIMEOUT = 3.0  # seconds the server may take to settle after the probe exits


def received(document: dict) -> list[dict]:
    return [p for p in document["packets"] if p["dir"] == "received"]


def sent(document: dict) -> list[dict]:
    return [p for p in document["packets"] if p["dir"] == "sent"]


@pytest.fixture(scope="module")
def head_run(lab, tmp_path_factory):
    """The default request (HEAD /) to nginx, with a pcap beside the JSON."""
    pcap = tmp_path_factory.mktemp("head") / "head.pcap"
    run = run_probe(lab, probe_args(lab.server_addr, HTTP_PORT, "/", "--pcap", str(pcap)))
    return run, pcap


@pytest.fixture(scope="module")
def big_run(lab, tmp_path_factory):
    """GET /big: 100 KiB over many segments, with a pcap beside the JSON."""
    pcap = tmp_path_factory.mktemp("big") / "big.pcap"
    run = run_probe(lab, probe_args(lab.server_addr, HTTP_PORT, "/big", "--method", "GET",
                                    "--pcap", str(pcap)))
    return run, pcap


@pytest.fixture(params=["head", "big"])
def clean_run(request) -> tuple[ProbeRun, object]:
    return request.getfixturevalue(f"{request.param}_run")


def assert_contract_document(run: ProbeRun, lab, port: int, path: str) -> dict:
    """The probe/1 fields the contract names, with the types it implies."""
    document = run.document
    assert TOP_FIELDS <= document.keys(), run.describe()
    assert document["schema"] == "probe/1"
    assert document["command"] == "check"
    assert set(document["target"]) >= TARGET_FIELDS
    authority = "www.example.com" if port == 80 else f"www.example.com:{port}"
    assert document["target"] == {"url": f"http://{authority}{path}", "host": "www.example.com",
                                  "address": lab.server_addr, "port": port, "family": "ipv4"}
    assert isinstance(document["explanation"], str) and document["explanation"].strip()
    packets = document["packets"]
    assert packets, run.describe()
    assert [p["n"] for p in packets] == list(range(1, len(packets) + 1))
    assert packets[0]["t_ms"] == 0.0
    for packet in packets:
        assert packet["proto"] == "tcp", packet  # no ICMP on a healthy path
        assert TCP_PACKET_FIELDS <= packet.keys(), packet
        assert packet["dir"] in ("sent", "received")
        assert packet["origin"] in ORIGINS
        assert isinstance(packet["evidence"], list)
        assert all(isinstance(sentence, str) for sentence in packet["evidence"])
        assert isinstance(packet["df"], bool)
        assert isinstance(packet["t_ms"], (int, float)) and packet["t_ms"] >= 0
        for key in ("ttl", "ip_id", "seq", "ack", "win", "len"):
            assert isinstance(packet[key], int) and packet[key] >= 0, (key, packet)
        assert re.fullmatch("[FSRPAUEC]+", packet["flags"]), packet
        ends = {(packet["src"], packet.get("sport")), (packet["dst"], packet.get("dport"))}
        assert (lab.server_addr, port) in ends, packet  # only the probe's own flow
        assert (packet["dir"] == "sent") == (packet["src"] == lab.client_addr), packet
        assert (packet["origin"] == "self") == (packet["dir"] == "sent"), packet
    return document


def test_head_to_nginx_is_clean_and_the_document_follows_the_contract(lab, head_run):
    run, _ = head_run
    assert run.returncode == CLEAN_EXIT, run.describe()
    document = assert_contract_document(run, lab, HTTP_PORT, "/")
    assert (document["verdict"], document["direction"], document["hop"]) == ("clean", None, None)
    assert all(p["origin"] == "server" for p in received(document)), run.describe()


def test_first_packet_is_our_syn_and_the_synack_comes_from_the_server(lab, head_run):
    document = head_run[0].document
    first = document["packets"][0]
    assert (first["dir"], first["flags"], first["origin"]) == ("sent", "S", "self")
    assert (first["src"], first["dst"], first["dport"]) == (lab.client_addr, lab.server_addr, HTTP_PORT)
    synacks = [p for p in document["packets"] if p["flags"] == "SA"]
    assert len(synacks) == 1, document["packets"]
    synack = synacks[0]
    assert (synack["dir"], synack["origin"], synack["src"]) == ("received", "server", lab.server_addr)
    assert synack["ack"] == (first["seq"] + 1) % 2**32


def test_rtt_is_the_handshake_round_trip_from_kernel_timestamps(head_run):
    document = head_run[0].document
    synack = next(p for p in document["packets"] if p["flags"] == "SA")
    assert document["rtt_ms"] == pytest.approx(synack["t_ms"] - document["packets"][0]["t_ms"],
                                               abs=0.01)
    # the lab's delay line holds each packet at least DELAY_MS / 2 each way; allow what its
    # own test allows on top (a busy 2-core machine schedules the delay line late)
    assert DELAY_MS <= document["rtt_ms"] <= DELAY_MS + max(5.0, 0.2 * DELAY_MS), document["rtt_ms"]


def test_our_side_closes_politely(clean_run):
    """A FIN from us, and the server's ACK of exactly that FIN."""
    document = clean_run[0].document
    our_fins = [p for p in sent(document) if "F" in p["flags"]]
    assert our_fins, document["packets"]
    fin = our_fins[-1]
    fin_acked = (fin["seq"] + fin["len"] + 1) % 2**32
    assert [p for p in received(document)
            if p["n"] > fin["n"] and "A" in p["flags"] and p["ack"] == fin_acked], \
        f"no ACK of our FIN (seq {fin['seq']}) from the server: {document['packets']}"
    assert not [p for p in document["packets"] if "R" in p["flags"]]


def test_get_big_reads_the_whole_body_and_is_clean(lab, big_run):
    run, _ = big_run
    assert run.returncode == CLEAN_EXIT, run.describe()
    document = assert_contract_document(run, lab, HTTP_PORT, "/big")
    assert document["verdict"] == "clean"
    payload = sum(p["len"] for p in received(document))
    assert payload >= BIG_SIZE, f"only {payload} bytes of payload received"
    server_fin = [p for p in received(document) if "F" in p["flags"]]
    assert server_fin, "the server never finished the response"


@pytest.mark.parametrize("port", [CLOSED_PORT, ABORT_PORT], ids=["closed-port", "app-abort"])
def test_a_reset_from_the_server_itself_is_server_reset(lab, port):
    run = run_probe(lab, probe_args(lab.server_addr, port))
    assert run.returncode == TARGET_FAILED_EXIT, run.describe()
    document = assert_contract_document(run, lab, port, "/")
    assert (document["verdict"], document["direction"], document["hop"]) == \
        ("server-reset", None, None), run.describe()
    assert not [p for p in document["packets"] if p["origin"] == "middlebox"], run.describe()
    resets = [p for p in received(document) if "R" in p["flags"]]
    assert resets and all(p["origin"] == "server" for p in resets), run.describe()
    assert guard_tables(lab) == []


_TCPDUMP_LINE = re.compile(r"^(\d+)\.(\d{9}) IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > "
                           r"(\d+\.\d+\.\d+\.\d+)\.(\d+): ")


def test_pcap_is_read_by_tcpdump_with_the_json_packets_and_times(clean_run):
    run, pcap = clean_run
    document = run.document
    result = subprocess.run(["tcpdump", "-r", str(pcap), "-nn", "-tt",
                             "--time-stamp-precision=nano"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == len(document["packets"]), (result.stdout, result.stderr)
    stamps = []
    for line, packet in zip(lines, document["packets"]):
        match = _TCPDUMP_LINE.match(line)
        assert match, line
        seconds, nanoseconds, src, sport, dst, dport = match.groups()
        assert (src, int(sport), dst, int(dport)) == \
            (packet["src"], packet["sport"], packet["dst"], packet["dport"]), (line, packet)
        stamps.append(Decimal(seconds) + Decimal(nanoseconds) / Decimal(10**9))
    for stamp, packet in zip(stamps, document["packets"]):
        # t_ms is rounded to the microsecond; the pcap keeps nanoseconds
        assert float((stamp - stamps[0]) * 1000) == pytest.approx(packet["t_ms"], abs=0.002), \
            (packet["n"], stamp - stamps[0], packet["t_ms"])


def test_no_half_open_connection_is_left_on_the_server(lab, clean_run):
    run, _ = clean_run
    client = run.document["client"]
    assert client["address"] == lab.client_addr

    def states():
        return server_tcp_states(lab, client["address"], client["port"])

    wait_for(lambda: set(states()) <= SETTLED_STATES, CLOSE_TIMEOUT,
             f"the server's socket toward port {client['port']} is in TIME-WAIT or gone "
             f"(now: {states()})")


def test_source_port_and_interface_are_the_exchanges(lab):
    """--source-port: every packet of ours leaves from that port; -i: through that interface
    (the lab client's only one, c0), and an interface this host lacks is one line, exit 2."""
    run = run_probe(lab, probe_args(lab.server_addr, HTTP_PORT, "/", "--source-port", "47123", "-i", "c0",
                                    "--no-locate"))
    assert run.returncode == CLEAN_EXIT, run.stderr
    document = run.document
    assert document["verdict"] == "clean"
    assert {p["sport"] for p in sent(document)} == {47123}
    missing = run_probe(lab, probe_args(lab.server_addr, HTTP_PORT, "/", "-i", "nosuch0", "--no-locate"))
    assert missing.returncode == 2 and missing.stderr.strip() == "probe: -i nosuch0: this host has no such interface"
