"""The guard: the nftables table that keeps the kernel from resetting the probe's crafted
connection. It must go away on every way out, be swept after a SIGKILL, never be removed from
under a live run, and touch no traffic but the probe's own flow."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap

import pytest
from e2ekit import (BLACKHOLE_ADDR, finish, guard_rules, guard_tables,
                    probe_args, reap, run_probe, start_probe, wait_for, wait_for_guard)

from netns.lab import BIG_SIZE, CLOSED_PORT, HTTP_PORT, INDEX_BODY

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]

LONG_LINGER = ["--linger", "30"]  # keeps a run busy well past anything a test waits for
EXIT_FAILED = 1
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM
TABLE_GONE_TIMEOUT = 5.0


def progress_line(line: str) -> bool:
    """The human "probing URL at ADDR:PORT ..." line every run starts with on stderr."""
    return line.startswith("probing ")


def assert_no_partial_document(run) -> None:
    """--json promises one document or nothing: never a torn one."""
    if run.stdout.strip():
        json.loads(run.stdout)


def test_a_normal_run_leaves_no_guard_table(lab):
    run = run_probe(lab, probe_args(lab.server_addr, HTTP_PORT))
    assert run.returncode == 0, run.describe()
    assert guard_tables(lab) == []


def test_a_run_that_fails_inside_the_guard_removes_its_table(lab):
    """A local firewall rule refuses the raw send (EPERM): ProbeError, exit 1, after the
    guard was installed."""
    refused = "203.0.113.98"
    block = (f"table inet e2e_refuse {{\n  chain output {{\n"
             f"    type filter hook output priority 0; policy accept;\n"
             f"    ip daddr {refused} drop\n  }}\n}}\n")
    lab.exec(lab.client_ns, ["nft", "-f", "-"], input=block)
    try:
        run = run_probe(lab, probe_args(refused, HTTP_PORT))
    finally:
        lab.exec(lab.client_ns, ["nft", "delete", "table", "inet", "e2e_refuse"])
    assert run.returncode == EXIT_FAILED, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    assert [line for line in run.stderr.splitlines() if not progress_line(line)] == \
        [f"probe: sending to {refused} was refused by a local firewall rule"], run.describe()
    assert_no_partial_document(run)
    assert guard_tables(lab) == []


BUSY_TARGETS = {
    # the server resets at once; the run then listens for 30 s
    "closed-port-lingering": lambda lab: probe_args(lab.server_addr, CLOSED_PORT, "/", *LONG_LINGER),
    # the SYN vanishes at the last router; the run keeps retransmitting it
    "blackholed-address": lambda lab: probe_args(BLACKHOLE_ADDR, HTTP_PORT, "/",
                                                 "--syn-retries", "10"),
}
SIGNALS = {"SIGINT": (signal.SIGINT, EXIT_SIGINT, "probe: interrupted"),
           "SIGTERM": (signal.SIGTERM, EXIT_SIGTERM, "probe: terminated")}


@pytest.fixture(scope="module", params=[(s, t) for s in SIGNALS for t in BUSY_TARGETS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def signalled(request, lab):
    """A run signalled mid-exchange, once its guard table and flow rule are in place."""
    signal_name, target = request.param
    proc = start_probe(lab, BUSY_TARGETS[target](lab))
    try:
        table, _rule = wait_for_guard(lab, proc)
        proc.send_signal(SIGNALS[signal_name][0])
        run = finish(proc, timeout=15)
    finally:
        reap(proc)
    return signal_name, table, run


def test_a_signal_mid_exchange_removes_the_table_and_exits_128_plus_signal(lab, signalled):
    signal_name, table, run = signalled
    assert run.returncode == SIGNALS[signal_name][1], run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    assert_no_partial_document(run)
    assert table not in guard_tables(lab)
    assert guard_tables(lab) == []


def test_a_signal_mid_exchange_says_so_in_one_line(request, signalled):
    signal_name, _table, run = signalled
    lines = [line for line in run.stderr.splitlines() if not progress_line(line)]
    assert lines == [SIGNALS[signal_name][2]], run.describe()


def test_sigkill_leaves_the_table_and_the_next_run_sweeps_it_but_not_a_live_runs(lab):
    # the live run starts first: a run sweeps when it starts, so it must not see the stale table
    live = start_probe(lab, probe_args(lab.server_addr, CLOSED_PORT, "/", *LONG_LINGER))
    killed = None
    try:
        live_table, live_rule = wait_for_guard(lab, live)
        killed = start_probe(lab, probe_args(lab.server_addr, CLOSED_PORT, "/", *LONG_LINGER))
        killed_table, _ = wait_for_guard(lab, killed)
        killed.kill()
        assert finish(killed).returncode == -signal.SIGKILL
        assert set(guard_tables(lab)) == {killed_table, live_table}, \
            "SIGKILL cannot run cleanup: its table stays until the next run"

        next_run = run_probe(lab, probe_args(lab.server_addr, HTTP_PORT))
        assert next_run.returncode == 0, next_run.describe()
        assert guard_tables(lab) == [live_table], "the stale table must go, the live one stay"
        assert guard_rules(lab, live_table) == [live_rule]  # untouched, counter included
        assert live.poll() is None

        live.send_signal(signal.SIGTERM)
        assert finish(live, timeout=15).returncode == EXIT_SIGTERM
        assert guard_tables(lab) == []
    finally:
        reap(live)
        if killed is not None:
            reap(killed)


# --- nothing but the probe's own flow is touched ---------------------------------------------

PLAIN_CONNECTION = textwrap.dedent("""\
    import json, socket, sys
    with socket.create_connection((sys.argv[1], 80), timeout=10) as s:
        s.sendall(b"GET /big HTTP/1.1\\r\\nHost: www.example.com\\r\\nConnection: close\\r\\n\\r\\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        print(json.dumps({"port": s.getsockname()[1], "head": data[:15].decode(),
                          "body": len(data.partition(b"\\r\\n\\r\\n")[2])}))
""")


def test_other_connections_to_the_same_server_work_while_a_probe_runs(lab):
    proc = start_probe(lab, probe_args(lab.server_addr, HTTP_PORT, "/", "--linger", "5"))
    try:
        _table, rule = wait_for_guard(lab, proc)
        curl = lab.exec(lab.client_ns, ["curl", "-sS", "--max-time", "10", "-o", "/dev/null",
                                        "-w", "%{http_code} %{size_download}",
                                        f"http://{lab.server_addr}/"])
        plain = json.loads(lab.exec(lab.client_ns, [sys.executable, "-c", PLAIN_CONNECTION,
                                                    lab.server_addr]).stdout)
        assert proc.poll() is None, "the probe ended before the other connections were done"
        run = finish(proc)
    finally:
        reap(proc)
    assert curl.stdout == f"200 {len(INDEX_BODY)}"
    assert (plain["head"], plain["body"]) == ("HTTP/1.1 200 OK", BIG_SIZE)
    assert plain["port"] != rule.client_port
    assert run.returncode == 0, run.describe()
    assert {p["sport"] for p in run.document["packets"] if p["dir"] == "sent"} == {rule.client_port}


# Run in the server namespace: a SYN-ACK from the server's closed port to a client port
# that has no socket. The client's kernel must answer it with a RST that reaches us.
SYNACK_TO_CLIENT = textwrap.dedent("""\
    import json, sys
    from scapy.layers.inet import IP, TCP
    from scapy.sendrecv import send, sr1
    server, client, server_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    mode, client_port = sys.argv[4], int(sys.argv[5])
    synack = IP(src=server, dst=client) / TCP(sport=server_port, dport=client_port, flags="SA",
                                              seq=1000, ack=7000001)
    if mode == "expect-reset":
        answer = sr1(synack, timeout=5, verbose=0)
        print(json.dumps(None if answer is None else {
            "flags": str(answer[TCP].flags), "sport": answer[TCP].sport, "seq": answer[TCP].seq}))
    else:
        send(synack, verbose=0)
        print(json.dumps("sent"))
""")


def synack_from_server(lab, mode: str, client_port: int, server_port: int = CLOSED_PORT):
    out = lab.exec(lab.server_ns, [sys.executable, "-c", SYNACK_TO_CLIENT, lab.server_addr,
                                   lab.client_addr, str(server_port), mode, str(client_port)])
    return json.loads(out.stdout)


def test_kernel_resets_for_other_flows_pass_and_the_guard_counts_only_its_flow(lab):
    """Probe the closed port (the server's RST draws no kernel answer, so the rule's counter
    stays 0), then send the client a SYN-ACK from the same server address and port: to
    another client port the kernel's RST goes out and is not counted; to the probe's port
    it is dropped and counted."""
    proc = start_probe(lab, probe_args(lab.server_addr, CLOSED_PORT, "/", *LONG_LINGER))
    try:
        table, rule = wait_for_guard(lab, proc)
        assert (rule.client, rule.server, rule.server_port) == \
            (lab.client_addr, lab.server_addr, CLOSED_PORT)
        other_port = 40000 if rule.client_port != 40000 else 40001
        reset = synack_from_server(lab, "expect-reset", other_port)
        assert reset == {"flags": "R", "sport": other_port, "seq": 7000001}, \
            "the client's kernel RST for another flow did not get out"
        assert [r.packets for r in guard_rules(lab, table)] == [0]

        synack_from_server(lab, "send-only", rule.client_port)
        wait_for(lambda: [r.packets for r in guard_rules(lab, table)] == [1], 10.0,
                 "the guard drops (and counts) the kernel's RST for the probe's own flow")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert finish(proc, timeout=15).returncode == EXIT_SIGTERM
    finally:
        reap(proc)
    assert guard_tables(lab) == []
