"""`probe check` and `probe trace` over IPv6 in the dual-stack lab (issue 15): the verdicts of a
clean server, a closed port, an aborting application and boxes at a hop; the guard's rule is an
`ip6` one in the run's `inet` table and no table is left, also when the run is killed."""

from __future__ import annotations

import json
import signal
import sys

import pytest

from e2ekit import (BLACKHOLE_ADDR6, ROUTERS, finish, guard_rules, guard_tables, probe_args, reap, run_probe,
                    server_tcp_states, start_probe, wait_for_guard)

from netns.lab import ABORT_PORT, CLOSED_PORT, HTTP_PORT

pytestmark = pytest.mark.root

TRIGGER_HOST = "blocked.example"
ICMP6_UNREACHABLE, ICMP6_ADMIN_PROHIBITED = 1, 1  # RFC 4443 3.1: type 1, code 1


def blocked_args(lab, command: str = "check", *extra: str) -> list[str]:
    return [command, f"http://{TRIGGER_HOST}/", "--resolve", f"{TRIGGER_HOST}:80:[{lab.server_addr6}]", "--json",
            *extra]


@pytest.mark.parametrize("port, verdict, code", [(HTTP_PORT, "clean", 0), (CLOSED_PORT, "server-reset", 4),
                                                 (ABORT_PORT, "server-reset", 4)])
def test_check_over_ipv6(lab, port, verdict, code):
    run = run_probe(lab, probe_args(lab.server_addr6, port))
    assert run.returncode == code, run.describe()
    document = run.document
    assert document["verdict"] == verdict and document["direction"] is None
    assert document["target"]["family"] == "ipv6" and document["target"]["address"] == lab.server_addr6
    assert document["client"]["address"] == lab.client_addr6
    received = [p for p in document["packets"] if p["dir"] == "received"]
    assert received and all(p["src"] == lab.server_addr6 and p["origin"] == "server" for p in received)
    assert all(p["ttl"] == 64 - ROUTERS for p in received)  # the server's hop limit, one less per router
    assert guard_tables(lab) == []


def test_a_name_is_taken_over_ipv6_with_minus_6_and_the_url_may_carry_the_address(lab):
    run = run_probe(lab, ["check", f"http://[{lab.server_addr6}]/", "--json", "-6"])
    assert run.returncode == 0, run.describe()
    assert run.document["target"]["url"] == f"http://[{lab.server_addr6}]/"
    assert "(IPv6)" in run.stderr


def test_icmpv6_administratively_prohibited_is_located_at_its_hop(lab, box):
    box("icmp", 2)
    run = run_probe(lab, blocked_args(lab))
    assert run.returncode == 3, run.describe()
    document = run.document
    assert (document["verdict"], document["hop"]) == ("unreachable", 2), run.describe()
    errors = [p for p in document["packets"] if p["proto"] == "icmp"]
    assert errors and errors[0]["src"] == lab.router_addr6(2)
    assert (errors[0]["icmp_type"], errors[0]["icmp_code"]) == (ICMP6_UNREACHABLE, ICMP6_ADMIN_PROHIBITED)


def test_the_field_report_over_ipv6(lab, box):
    box("swallow", 2)
    run = run_probe(lab, blocked_args(lab))
    assert run.returncode == 3, run.describe()
    document = run.document
    assert (document["verdict"], document["direction"], document["hop"]) == ("middlebox-reset", "to-server", 2)
    assert all(p["origin"] != "middlebox" for p in document["packets"]), "every packet we got is the server's"


@pytest.mark.parametrize("hop", range(1, ROUTERS + 1))
@pytest.mark.parametrize("name, verdict", [("tap", "middlebox-reset"), ("swallow", "middlebox-reset")])
def test_trace_over_ipv6_names_the_hop_of_the_box(lab, box, name, verdict, hop):
    box(name, hop)
    run = run_probe(lab, blocked_args(lab, "trace"))
    assert run.returncode == 3, run.describe()
    document = run.document
    assert (document["verdict"], document["hop"]) == (verdict, hop), run.describe()
    assert document["bracket"]["passed"] <= hop < document["bracket"]["not_reached"]
    routers = [row["address"] for row in document["hops"] if row["address"]]
    assert set(routers) <= {lab.router_addr6(k) for k in range(1, ROUTERS + 1)} | {lab.server_addr6}


def test_the_guard_holds_an_ip6_rule_for_the_flow_and_sigkill_leaves_it_for_the_next_run(lab):
    proc = start_probe(lab, probe_args(BLACKHOLE_ADDR6, HTTP_PORT, "/", "--syn-retries", "3"))
    try:
        table, rule = wait_for_guard(lab, proc)
        assert (rule.client, rule.server, rule.server_port) == (lab.client_addr6, BLACKHOLE_ADDR6, HTTP_PORT)
        proc.send_signal(signal.SIGKILL)
        assert finish(proc).returncode == -signal.SIGKILL
        assert guard_tables(lab) == [table] and guard_rules(lab, table) == [rule]
    finally:
        reap(proc)
    after = run_probe(lab, probe_args(lab.server_addr6, HTTP_PORT))
    assert after.returncode == 0, after.describe()
    assert guard_tables(lab) == [], "the next run sweeps the killed run's table and removes its own"


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_exchange_over_ipv6_removes_the_table(lab, signum, code):
    proc = start_probe(lab, probe_args(BLACKHOLE_ADDR6, HTTP_PORT, "/", "--syn-retries", "3"))
    try:
        wait_for_guard(lab, proc)
        proc.send_signal(signum)
        assert finish(proc).returncode == code
    finally:
        reap(proc)
    assert guard_tables(lab) == []


def test_batch_takes_ipv6_targets_beside_ipv4_ones(lab, tmp_path):
    """One batch, both families: one guard table with a set per family, each target's verdict and
    family in its document (issue 15)."""
    import json
    import subprocess

    listing = tmp_path / "targets.txt"
    lines = [f"http://www.example.com:{port}/ www.example.com:{port}:{address}"
             for address in (f"[{lab.server_addr6}]", lab.server_addr) for port in (HTTP_PORT, CLOSED_PORT)]
    listing.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    argv = ["ip", "netns", "exec", lab.client_ns, sys.executable, "-m", "probe", "batch", str(listing), "--out", str(out),
            "--no-locate"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert run.returncode == 4, run.stderr  # the worst: the closed ports
    documents = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda d: d["line"])
    said = [(d["target"]["family"], d["target"]["port"], d["verdict"]) for d in documents]
    assert said == [("ipv6", HTTP_PORT, "clean"), ("ipv6", CLOSED_PORT, "server-reset"),
                    ("ipv4", HTTP_PORT, "clean"), ("ipv4", CLOSED_PORT, "server-reset")], run.stderr
    assert guard_tables(lab) == []


@pytest.mark.parametrize("via_synproxy", [False, True], ids=["direct", "synproxy"])
def test_a_reused_port_meets_the_servers_time_wait_and_opens_a_new_connection(lab, box, via_synproxy):
    """The client's port range is one port, so every run reuses the four-tuple of the one before
    while the server holds it in TIME-WAIT (nginx closes first under Connection: close). Our
    ISN and timestamps go forward per four-tuple as Linux's do (probe/network/wire.py), so the server,
    or the SYN proxy that replays them for us, opens a new connection every time; with a random
    ISN and timestamp base about every other run drew the old connection's ACK (trap 13 over
    IPv6 lost one run in 100 to it)."""
    address, port = lab.server_addr6, 40000
    if via_synproxy:
        box("lb", ROUTERS, "--synproxy")
        # another port: the server's four-tuple must not be the direct case's, which a client
        # keyed by the virtual address cannot go forward from (Linux's own ISN and timestamps
        # are keyed by the addresses it sees too)
        address, port = "2001:db8:113::100", 40001
    saved = lab.exec(lab.client_ns, ["sysctl", "-n", "net.ipv4.ip_local_port_range"]).stdout.split()
    lab.exec(lab.client_ns, ["sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={port} {port}"])
    try:
        ports = []
        for _ in range(6):
            run = run_probe(lab, probe_args(address, 80, "/", "--no-locate"))  # one connection, one port
            assert run.returncode == 0 and run.document["verdict"] == "clean", run.describe()
            ports.append(run.document["client"]["port"])
            assert "TIME-WAIT" in server_tcp_states(lab, f"[{lab.client_addr6}]", port)
        assert set(ports) == {port}
    finally:
        lab.exec(lab.client_ns, ["sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={' '.join(saved)}"])


IPV6_ONLY_FIREWALL = ["FORWARD", "-p", "tcp", "--syn", "--dport", "80", "-j", "REJECT", "--reject-with", "tcp-reset"]


def test_both_families_agree_on_a_clean_path_and_differ_behind_an_ipv6_only_firewall(lab, tmp_path):
    """"Works over IPv4, fails over IPv6": the name pinned to the server's address of each
    family, probed over both with -46 (and -4 -6); then a firewall that rejects over IPv6 only
    (ip6tables at hop 2, the firewall box's rule for one family) makes the two differ."""
    both = ["--resolve", f"www.example.com:80:{lab.server_addr}", "--resolve", f"www.example.com:80:[{lab.server_addr6}]"]
    same = run_probe(lab, ["check", "http://www.example.com/", *both, "--json", "-46"])
    assert same.returncode == 0, same.describe()
    document = same.document
    assert (document["differ"], document["verdict"]) == (False, "clean")
    assert [(f["target"]["family"], f["target"]["address"], f["verdict"]) for f in document["families"]] == [
        ("ipv4", lab.server_addr, "clean"), ("ipv6", lab.server_addr6, "clean")]
    assert "(IPv4)" in same.stderr and "(IPv6)" in same.stderr
    router = lab.router_ns(2)
    lab.exec(router, ["ip6tables", "-w", "-I", *IPV6_ONLY_FIREWALL])
    try:
        pcap = tmp_path / "both.pcap"
        differ = run_probe(lab, ["check", "http://www.example.com/", *both, "--json", "-4", "-6", "--pcap", str(pcap)])
        table = run_probe(lab, ["check", "http://www.example.com/", *both, "--both-families"])
    finally:
        lab.exec(router, ["ip6tables", "-w", "-D", *IPV6_ONLY_FIREWALL])
    assert differ.returncode == 3, differ.describe()
    document = differ.document
    four, six = document["families"]
    assert (four["verdict"], four["exit_code"]) == ("clean", 0)
    assert (six["verdict"], six["direction"], six["hop"], six["exit_code"]) == ("middlebox-reset", "to-client", 2, 3)
    assert document["differ"] is True and document["differences"] == ["verdict", "direction", "hop"]
    assert document["verdict"] == "middlebox-reset" and document["exit_code"] == 3
    with open(pcap, "rb") as handle:
        import dpkt

        versions = {data[0] >> 4 for _, data in dpkt.pcap.Reader(handle)}
    assert versions == {4, 6}  # both exchanges in the one file
    assert table.returncode == 3, table.describe()
    assert "== over IPv4 ==" in table.stdout and "== over IPv6 ==" in table.stdout
    assert "The families differ (verdict, direction, hop): over IPv4 clean; over IPv6 middlebox-reset" in table.stdout
    assert guard_tables(lab) == []


def test_both_families_with_an_address_for_one_family_only_probe_it_and_say_the_other_is_missing(lab):
    run = run_probe(lab, ["check", "http://www.example.com/", "--resolve",
                          f"www.example.com:80:[{lab.server_addr6}]", "--json", "--both-families"])
    assert run.returncode == 1, run.describe()
    four, six = run.document["families"]
    assert four["verdict"] is None and "no IPv4 address" in four["error"]
    assert six["verdict"] == "clean" and run.document["verdict"] is None
    assert "probe: not probed over IPv4: no IPv4 address" in run.stderr


def test_a_link_local_target_with_a_zone_is_probed_on_that_link_and_without_one_is_refused(lab):
    """r1's link-local address on the client's link, with the zone of that link (c0), as
    RFC 6874 writes it in a URL (%25); a small HTTP server listens there. Without the zone the
    address means no one host: one line, exit 2."""
    router = lab.router_ns(1)
    [link] = json.loads(lab.exec(router, ["ip", "-j", "-6", "addr", "show", "dev", "up"]).stdout)
    neighbour = next(a["local"] for a in link["addr_info"] if a.get("scope") == "link")
    server = lab.spawn(router, [sys.executable, "-m", "http.server", "8000", "--bind", "::"], ready_line=None,
                       name="http.server")
    try:
        lab.wait_listening(server, 8000)
        run = run_probe(lab, ["check", f"http://[{neighbour}%25c0]:8000/", "--json", "--no-locate"])
        assert run.returncode == 0, run.describe()
        document = run.document
        assert document["verdict"] == "clean" and document["target"]["address"] == neighbour
        assert document["client"]["address"].startswith("fe80:")  # our end of the link, not a global address
        assert {p["src"] for p in document["packets"] if p["dir"] == "received"} == {neighbour}
        assert document["http"]["status"] == 200
        pinned = run_probe(lab, ["check", "http://router.example:8000/", "--resolve",
                                 f"router.example:8000:[{neighbour}%c0]", "--json", "--no-locate"])
        assert pinned.returncode == 0 and pinned.document["verdict"] == "clean", pinned.describe()
    finally:
        lab.stop(server)
    refused = run_probe(lab, ["check", f"http://[{neighbour}]:8000/"])
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"probe: {neighbour} is link-local: it needs a zone, the interface of its link "
        f"(e.g. [{neighbour}%eth0] in a URL, written [{neighbour}%25eth0] by RFC 6874)"], refused.describe()
    assert guard_tables(lab) == []
