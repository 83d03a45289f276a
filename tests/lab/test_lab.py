"""The lab builds what its address plan promises, delays the path by what it is told, and
leaves nothing behind. The `root` tests build real namespaces; the rest run anywhere."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from netns.delayline import DelaySchedule
from netns.lab import (ABORT_PORT, BIG_SIZE, CLOSED_PORT, HTTP_PORT, INDEX_BODY, MARKER_DIR,
                       PROJECT_ROOT, Lab, LabError, cleanup_stale, router_dn_addr,
                       router_up_addr)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
ROUTERS = 4
DELAY_MS = 50.0

# --- without root: the address plan and the delay schedule --------------------------------


def test_address_plan_links_each_router_to_its_neighbours():
    lab = Lab(routers=ROUTERS)
    assert lab.namespaces == [f"{lab.prefix}-{n}" for n in ("c", "r1", "r2", "r3", "r4", "s")]
    assert [lab.router_addr(k) for k in range(1, 5)] == [
        "192.0.2.1", "198.51.100.2", "198.51.100.6", "198.51.100.10"]
    for k in range(1, ROUTERS):  # r_k.dn and r_{k+1}.up share one /30
        assert int(router_dn_addr(k, ROUTERS).rsplit(".", 1)[1]) + 1 == \
            int(router_up_addr(k + 1).rsplit(".", 1)[1])
    assert router_dn_addr(ROUTERS, ROUTERS) == "203.0.113.1"
    with pytest.raises(ValueError):
        lab.router_ns(ROUTERS + 1)


def test_default_prefixes_never_collide():
    assert Lab().prefix != Lab().prefix


@given(st.lists(st.floats(0, 10, allow_nan=False), max_size=50))
def test_schedule_without_jitter_keeps_arrival_order(gaps):
    schedule = DelaySchedule(0.025)
    now = 0.0
    for i, gap in enumerate(gaps):
        now += gap
        schedule.admit(now, i)
    released = schedule.due(now + 0.025)
    assert released == list(range(len(gaps)))
    assert len(schedule) == 0


def test_schedule_holds_each_item_for_the_delay():
    schedule = DelaySchedule(0.025)
    schedule.admit(1.0, "a")
    assert schedule.due(1.024) == []
    assert schedule.next_release() == pytest.approx(1.025)
    assert schedule.due(1.025) == ["a"]


def test_schedule_loss_and_jitter_follow_the_seed():
    def run(seed):
        schedule = DelaySchedule(0.02, jitter=0.01, loss=0.3, rng=random.Random(seed))
        kept = [i for i in range(200) if schedule.admit(i * 0.001, i)]
        return kept, schedule.drain()

    kept, released = run(7)
    assert run(7) == (kept, released)
    assert 100 < len(kept) < 180
    assert sorted(released) == kept and released != kept  # jitter reorders


# --- with root: a real lab -------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab():
    with Lab(routers=ROUTERS, delay_ms=DELAY_MS) as running:
        yield running


TCP_OUTCOME = textwrap.dedent("""\
    import socket, sys
    host, port = sys.argv[1], int(sys.argv[2])
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, port))
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: anything.example\\r\\nConnection: close\\r\\n\\r\\n")
        print("ok", s.recv(100).split(b"\\r\\n")[0].decode())
    except ConnectionRefusedError:
        print("refused")
    except ConnectionResetError:
        print("reset")
    except socket.timeout:
        print("timeout")
""")


def tcp_outcome(lab: Lab, port: int, host: str | None = None) -> str:
    """What a plain socket in the client namespace gets from a request to the server."""
    return lab.exec(lab.client_ns, [sys.executable, "-c", TCP_OUTCOME,
                                    host or lab.server_addr, str(port)]).stdout.strip()


def curl(lab: Lab, url: str) -> tuple[str, bytes]:
    out = subprocess.run(["ip", "netns", "exec", lab.client_ns, "curl", "-sS", "--max-time", "10",
                          "-H", "Host: whatever.example", "-w", "\n%{http_code}", url],
                         capture_output=True, check=True).stdout
    body, _, code = out.rpartition(b"\n")
    return code.decode(), body


def netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether `pid` has exited (a zombie counts), checked until `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


@pytest.mark.root
@needs_root
def test_nginx_answers_any_host_end_to_end(lab):
    assert curl(lab, f"http://{lab.server_addr}/") == ("200", INDEX_BODY)
    code, body = curl(lab, f"http://{lab.server_addr}/big")
    assert (code, len(body)) == ("200", BIG_SIZE)
    assert tcp_outcome(lab, HTTP_PORT) == "ok HTTP/1.1 200 OK"


@pytest.mark.root
@needs_root
def test_each_ttl_expires_at_its_router_and_the_server_is_hop_n_plus_1(lab):
    for ttl in range(1, lab.routers + 2):
        out = lab.exec(lab.client_ns, ["ping", "-n", "-c", "1", "-W", "2", "-t", str(ttl),
                                       lab.server_addr], check=False).stdout
        if ttl <= lab.routers:
            assert f"From {lab.router_addr(ttl)} icmp_seq=1 Time to live exceeded" in out, out
        else:
            assert f"bytes from {lab.server_addr}" in out, out


@pytest.mark.root
@needs_root
def test_round_trip_time_is_the_configured_delay(lab):
    out = lab.exec(lab.client_ns, ["ping", "-n", "-q", "-c", "10", "-i", "0.05",
                                   lab.server_addr]).stdout
    avg_ms = float(re.search(r"= [\d.]+/([\d.]+)/", out).group(1))
    assert lab.delay_ms <= avg_ms <= lab.delay_ms + max(5.0, 0.2 * lab.delay_ms), out


@pytest.mark.root
@needs_root
def test_abort_port_resets_and_closed_port_refuses(lab):
    assert tcp_outcome(lab, ABORT_PORT) == "reset"
    assert tcp_outcome(lab, CLOSED_PORT) == "refused"


@pytest.mark.root
@needs_root
def test_extra_server_address_is_served(lab):
    lab.add_server_address("203.0.113.81")
    assert curl(lab, "http://203.0.113.81/") == ("200", INDEX_BODY)
    with pytest.raises(ValueError):
        lab.add_server_address("198.51.100.9")


@pytest.mark.root
@needs_root
def test_down_removes_everything_even_when_the_body_raises():
    with pytest.raises(RuntimeError, match="body failed"):
        with Lab(routers=1, delay_ms=10) as lab:
            pids = [p.pid for p in lab.processes]
            workdir = lab.workdir
            assert len(pids) == 3  # delay line, nginx, abort server
            raise RuntimeError("body failed")
    assert not [ns for ns in netns_names() if ns.startswith(lab.prefix)]
    assert all(gone(pid, timeout=0) for pid in pids)
    assert not workdir.exists() and not (MARKER_DIR / f"{lab.prefix}.json").exists()
    lab.down()  # idempotent


@pytest.mark.root
@needs_root
def test_spawn_reports_a_child_that_fails_or_never_gets_ready():
    with Lab(routers=1, delay_ms=0, servers=False) as lab:
        with pytest.raises(LabError, match="boom"):
            lab.spawn(lab.server_ns, ["sh", "-c", "echo boom >&2; exit 3"])
        with pytest.raises(LabError, match="did not print 'ready'"):
            lab.spawn(lab.server_ns, ["sleep", "30"], ready_timeout=0.3)
        assert lab.processes == []
        started = lab.spawn(lab.server_ns, ["sh", "-c", "echo ready; exec sleep 30"])
        assert lab.processes == [started]
    assert started.returncode is not None


@pytest.mark.root
@needs_root
def test_cleanup_stale_removes_only_labs_whose_owner_died(lab):
    owner = textwrap.dedent("""\
        import json, os, signal
        from netns.lab import Lab
        lab = Lab(routers=1, delay_ms=10, servers=False).up()
        print(json.dumps([lab.prefix, [p.pid for p in lab.processes]]), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    out = subprocess.run([sys.executable, "-c", owner], capture_output=True, text=True,
                         env=env, timeout=30).stdout
    prefix, pids = json.loads(out)
    try:
        assert len([ns for ns in netns_names() if ns.startswith(prefix)]) == 3
        removed = cleanup_stale()
        # every lab whose owner died goes, this one among them (a crashed earlier run on the
        # same host may have left its own), and nothing whose owner still lives
        assert {f"{prefix}-{n}" for n in ("c", "r1", "s")} <= set(removed)
        owners = [re.fullmatch(r"plab(\d+)x\d+-.+", ns) for ns in removed]
        assert all(m is not None and gone(int(m.group(1))) for m in owners), removed
        assert not [ns for ns in netns_names() if ns.startswith(prefix)]
        assert all(gone(pid) for pid in pids)  # the dead lab's delay line
        assert set(lab.namespaces) <= set(netns_names())  # a live lab is left alone
    finally:
        for ns in netns_names():
            if ns.startswith(prefix + "-"):
                subprocess.run(["ip", "netns", "del", ns])


CONNECT_ERROR = textwrap.dedent("""\
    import errno, socket, sys, time
    s = socket.socket()
    s.settimeout(10)
    started = time.monotonic()
    try:
        s.connect((sys.argv[1], 80))
        print("connected", 0)
    except OSError as e:
        print(errno.errorcode.get(e.errno, e), round(time.monotonic() - started, 3))
""")


@pytest.mark.root
@needs_root
@pytest.mark.parametrize("take_down, error, words", [
    ("take_server_down", "EHOSTUNREACH", "Destination Host Unreachable"),
    ("take_server_network_unrouted", "ENETUNREACH", "Destination Net Unreachable"),
])
def test_a_dead_server_or_a_lost_route_draws_the_last_routers_error_at_once(take_down, error, words):
    # the kernel's own connect() fails on the first error (Linux ends SYN-SENT on it), well
    # before its first SYN retransmission at 1 s
    with Lab(routers=2, delay_ms=0, servers=False) as lab:
        getattr(lab, take_down)()
        name, seconds = lab.exec(lab.client_ns, [sys.executable, "-c", CONNECT_ERROR,
                                                 lab.server_addr]).stdout.split()
        assert name == error and float(seconds) < 0.5, (name, seconds)
        out = lab.exec(lab.client_ns, ["ping", "-n", "-c", "1", "-W", "2", lab.server_addr], check=False).stdout
        assert f"From {lab.router_addr(lab.routers)} icmp_seq=1 {words}" in out, out


@pytest.mark.root
@needs_root
@pytest.mark.parametrize("family", [4, 6])
def test_a_fresh_lab_answers_its_first_packet_without_waiting_for_a_second_solicitation(family):
    """The lab is handed over only with every link up (see netns/lab.py): the first packet of
    a fresh lab crosses every hop on each neighbour's first solicitation, so its round trip is
    far under the one second Linux waits before soliciting again (retrans_time). Without the
    wait, r1's `up` link (index 2, as its peer's) dropped its first answers for up to a second."""
    with Lab(routers=ROUTERS, delay_ms=0.0, servers=False) as fresh:
        for ns in fresh.namespaces:
            links = json.loads(fresh.exec(ns, ["ip", "-j", "link", "show"]).stdout)
            assert all(link["operstate"] == "UP" for link in links if link["ifname"] != "lo"), (ns, links)
        target = fresh.server_addr6 if family == 6 else fresh.server_addr
        out = fresh.exec(fresh.client_ns, ["ping", f"-{family}", "-n", "-c", "1", "-W", "3", target],
                         check=False).stdout
        rtt = re.search(r"time=([\d.]+) ms", out)
        assert rtt, out
        assert float(rtt.group(1)) < 500.0, out
