"""The HTTPS side of the lab (issue #14): nginx with TLS under the lab's CA, the port that aborts
after the ClientHello, and each box with an SNI trigger, each seen by curl from the client and
by tcpdump at one or both ends.

The lab is netns.lab.Lab with two routers and no delay line (the boxes send toward the client
before they release or drop the ClientHello, so they win without one); every box runs on r1, so
the server's packets reach the client with TTL 62 and a box's with 64. The control for every box
is the same request naming www.example.com, a name the box does not block.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from boxlab import Capture, flags, payload_of, tcp_packets

from netns.boxes import _tls
from netns.lab import BIG_SIZE, HTTPS_PORT, TLS_ABORT_PORT, TLS_CLOSED_PORT, Lab, router_dn_addr
from netns.runner import capture, lab_files

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]

BLOCKED, CONTROL = "blocked.example", "www.example.com"
SERVER_TTL_AT_CLIENT = 62  # 64, minus r1 and r2
BOX_TTL_AT_CLIENT = 64  # a box on r1
BOX_TTL_AT_SERVER = 63  # a box on r1, seen behind r2
LAB_CA, PROXY_CA = "probe lab CA", "probe lab interception CA"


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    with Lab(routers=2, delay_ms=0) as lab:
        yield lab


@dataclass(frozen=True)
class Fetch:
    exit_code: int
    status: str  # the HTTP status curl read, "000" when none
    issuer: str | None  # the server certificate's issuer as curl -v prints it
    stderr: str


def curl(lab: Lab, host: str, *, ca: Path | str | None = None, port: int = HTTPS_PORT,
         max_time: float = 3.0) -> Fetch:
    """HEAD https://host:port/ from the client, trusting `ca` (the lab's CA by default)."""
    done = lab.exec(lab.client_ns, [
        "curl", "-vsSI", "-o", "/dev/null", "-w", "%{http_code}", "-m", str(max_time),
        "--cacert", str(ca or lab.ca_file), "--resolve", f"{host}:{port}:{lab.server_addr}",
        f"https://{host}:{port}/"], check=False, timeout=max_time + 10)
    issuers = [line.split("issuer:", 1)[1].strip() for line in done.stderr.splitlines() if " issuer:" in line]
    return Fetch(done.returncode, done.stdout.strip()[-3:], issuers[0] if issuers else None, done.stderr)


def assert_control_passes(lab: Lab) -> None:
    fetched = curl(lab, CONTROL)
    assert (fetched.exit_code, fetched.status, fetched.issuer) == (0, "200", f"CN={LAB_CA}"), fetched.stderr


@contextlib.contextmanager
def box(lab: Lab, name: str, *args: str):
    """`python3 -m netns.boxes.NAME ARGS` on r1 until the block ends; it must stop cleanly
    (exit 0, its rules gone)."""
    router = lab.router_ns(1)
    proc = lab.spawn(router, [sys.executable, "-m", f"netns.boxes.{name}", *args], name=name)
    try:
        yield proc
    finally:
        assert lab.stop(proc) == 0, f"{name} did not exit cleanly"
        assert "probe-box" not in lab.exec(router, ["iptables-save"]).stdout, "rules left behind"


@contextlib.contextmanager
def captures(lab: Lab, *ends: str):
    """tcpdump at the named ends ("client", "server"); yields {end: Capture}, read at the end."""
    where = {"client": (lab.client_ns, "c0"), "server": (lab.server_ns, "s0")}
    with contextlib.ExitStack() as stack:
        taken = {}
        for end in ends:
            path = lab.workdir / f"{end}-{len(list(lab.workdir.glob('*.pcap')))}.pcap"
            stack.enter_context(capture(lab, *where[end], path))
            taken[end] = Capture(path)
        yield taken
    for seen in taken.values():
        seen.packets = seen.read()


def client_hellos(packets, src: str | None = None):
    """(packet, server name) of every segment holding a whole ClientHello."""
    hellos = []
    for p in tcp_packets(packets, src=src):
        read = _tls.read_client_hello(payload_of(p))
        if read.status == _tls.FOUND:
            hellos.append((p, read.server_name))
    return hellos


def names_reaching(packets, lab: Lab) -> set[str]:
    return {name for _, name in client_hellos(packets, src=lab.client_addr)}


def test_https_is_served_under_the_labs_ca_and_down_removes_the_files():
    with Lab(routers=1, delay_ms=0) as lab:
        for host in (CONTROL, BLOCKED):
            fetched = curl(lab, host)
            assert (fetched.exit_code, fetched.status, fetched.issuer) == (0, "200", f"CN={LAB_CA}")
        untrusted = curl(lab, CONTROL, ca=lab_files(lab)["proxy_ca_file"])
        assert untrusted.exit_code == 60  # verification failed: the certificate is the lab CA's
        assert curl(lab, CONTROL, port=TLS_CLOSED_PORT).exit_code == 7  # refused
        files = [lab.ca_file, *(Path(f) for f in lab_files(lab).values())]
        assert all(f.is_file() for f in files)
    assert not any(f.exists() for f in files)


def test_abort_port_resets_once_it_has_read_the_client_hello(lab):
    with captures(lab, "server") as seen:
        fetched = curl(lab, BLOCKED, port=TLS_ABORT_PORT)
        seen["server"].wait_for(lambda ps: any("R" in flags(p) for p in tcp_packets(ps, src=lab.server_addr)))
    assert fetched.exit_code == 35 and "reset" in fetched.stderr.lower()
    at_server = tcp_packets(seen["server"].packets)
    hello = next(i for i, p in enumerate(at_server) if _tls.read_client_hello(payload_of(p)).status == _tls.FOUND)
    reset = next(i for i, p in enumerate(at_server) if p.src == lab.server_addr and "R" in flags(p))
    assert hello < reset
    assert not any(payload_of(p) for p in tcp_packets(seen["server"].packets, src=lab.server_addr))


def test_tap_resets_both_ways_on_the_sni_and_lets_the_client_hello_pass(lab):
    with box(lab, "tap", "--port", "443", "--match", "sni"):
        with captures(lab, "client", "server") as seen:
            fetched = curl(lab, BLOCKED)
            seen["server"].wait_for(lambda ps: sum(p.ttl == BOX_TTL_AT_SERVER and "R" in flags(p)
                                                   for p in tcp_packets(ps, src=lab.client_addr)) == 10)
        assert_control_passes(lab)
    assert fetched.exit_code == 35 and "reset" in fetched.stderr.lower()
    from_server = tcp_packets(seen["client"].packets, src=lab.server_addr)
    synack = next(p for p in from_server if flags(p) == "SA")
    forged = [p for p in from_server if "R" in flags(p)]
    assert [flags(p) for p in forged] == ["R", "RA", "RA", "RA"]
    assert all(p.ttl == BOX_TTL_AT_CLIENT != synack.ttl for p in forged)
    [(hello, _)] = client_hellos(seen["client"].packets, src=lab.client_addr)
    assert [(p.seq - hello.ack) % 2**32 for p in forged] == [0, 0, 1460, 4380]
    assert names_reaching(seen["server"].packets, lab) == {BLOCKED}  # on-path: the ClientHello went on


def ttl_limited_handshake(lab: Lab, host: str, ttl: int) -> str:
    """A TLS handshake from the client whose ClientHello leaves with IP TTL `ttl`: "reset",
    "timeout" or "handshake" (completed); the connection is aborted afterwards, so the kernel
    does not go on retransmitting the ClientHello into the next test."""
    script = (
        "import socket, ssl, struct\n"
        f"s = socket.create_connection(({lab.server_addr!r}, {HTTPS_PORT}), timeout=3)\n"
        f"s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, {ttl})\n"
        "s.settimeout(1.0)\n"
        f"context = ssl.create_default_context(cafile={str(lab.ca_file)!r})\n"
        f"s = context.wrap_socket(s, server_hostname={host!r}, do_handshake_on_connect=False)\n"
        "try:\n"
        "    s.do_handshake()\n"
        "    print('handshake')\n"
        "except ConnectionResetError:\n"
        "    print('reset')\n"
        "except TimeoutError:\n"
        "    print('timeout')\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n"
        "s.close()\n")
    return lab.exec(lab.client_ns, [sys.executable, "-c", script]).stdout.strip()


def test_tap_in_prerouting_sees_a_client_hello_that_dies_at_its_router(lab):
    """What `probe trace https://` relies on: a TTL-limited copy of the ClientHello that expires
    at the tap's router still draws the resets; another name expiring there draws nothing."""
    with box(lab, "tap", "--port", "443", "--match", "sni"):
        assert ttl_limited_handshake(lab, BLOCKED, ttl=1) == "reset"
        assert ttl_limited_handshake(lab, CONTROL, ttl=1) == "timeout"
        assert ttl_limited_handshake(lab, CONTROL, ttl=64) == "handshake"


def test_swallow_drops_the_client_hello_and_resets_the_server_in_the_clients_name(lab):
    with box(lab, "swallow", "--port", "443", "--match", "sni"):
        with captures(lab, "client", "server") as seen:
            fetched = curl(lab, BLOCKED)
            seen["server"].wait_for(lambda ps: any("R" in flags(p) for p in tcp_packets(ps, src=lab.server_addr)))
        assert_control_passes(lab)
    assert fetched.exit_code == 35 and "reset" in fetched.stderr.lower()
    at_server = tcp_packets(seen["server"].packets)
    fake = next(i for i, p in enumerate(at_server) if p.src == lab.client_addr and "R" in flags(p))
    assert at_server[fake].ttl == BOX_TTL_AT_SERVER and not payload_of(at_server[fake])
    assert not any(payload_of(p) for p in at_server[:fake])  # the first ClientHello never arrived
    [(retransmission, name)] = client_hellos(at_server[fake:], src=lab.client_addr)
    assert name == BLOCKED and retransmission.seq == at_server[fake].seq
    genuine = next(p for p in at_server if p.src == lab.server_addr and "R" in flags(p))
    assert flags(genuine) == "R" and genuine.seq == retransmission.ack
    assert not any("R" in flags(p) for p in tcp_packets(seen["client"].packets, src=lab.client_addr))
    assert all(p.ttl == SERVER_TTL_AT_CLIENT for p in tcp_packets(seen["client"].packets, src=lab.server_addr))


def test_silentdrop_drops_every_client_hello_naming_the_blocked_name(lab):
    with box(lab, "silentdrop", "--port", "443", "--match", "sni"):
        with captures(lab, "server") as seen:
            fetched = curl(lab, BLOCKED, max_time=1.5)
        assert_control_passes(lab)
    assert fetched.exit_code == 28  # timed out
    assert tcp_packets(seen["server"].packets, src=lab.client_addr)  # the handshake got through
    assert names_reaching(seen["server"].packets, lab) == set()


@pytest.mark.parametrize("answer, payload_start, curl_says", [
    ("tls-alert", bytes.fromhex("15030300020228"), "alert handshake failure"),
    ("page", b"HTTP/1.1 403 Forbidden", "wrong version number"),
])
def test_blockpage_answers_the_client_hello_in_the_servers_name(lab, answer, payload_start, curl_says):
    with box(lab, "blockpage", "--port", "443", "--match", "sni", "--answer", answer):
        with captures(lab, "client", "server") as seen:
            fetched = curl(lab, BLOCKED)
        assert_control_passes(lab)
    assert fetched.exit_code == 35 and curl_says in fetched.stderr.lower()
    [answered] = [p for p in tcp_packets(seen["client"].packets, src=lab.server_addr) if payload_of(p)]
    assert payload_of(answered).startswith(payload_start) and flags(answered) == "FPA"
    assert answered.ttl == BOX_TTL_AT_CLIENT
    if answer == "tls-alert":
        assert len(payload_of(answered)) == 7
    assert names_reaching(seen["server"].packets, lab) == set()


def test_intercept_presents_its_own_ca_for_the_blocked_name_and_relays_to_the_server(lab):
    files = lab_files(lab)
    with box(lab, "intercept", "--port", "443", "--cert", files["proxy_cert_file"], "--key", files["proxy_key_file"]):
        with captures(lab, "server") as seen:
            refused = curl(lab, BLOCKED)
            trusted = curl(lab, BLOCKED, ca=files["proxy_ca_file"])
            big = lab.exec(lab.client_ns, [
                "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{size_download}", "--cacert", files["proxy_ca_file"],
                "--resolve", f"{BLOCKED}:{HTTPS_PORT}:{lab.server_addr}", f"https://{BLOCKED}/big"], check=False)
        assert_control_passes(lab)  # another name: relayed untouched, the server's own certificate
    assert refused.exit_code == 60  # not verified by the lab CA
    assert (trusted.exit_code, trusted.status, trusted.issuer) == (0, "200", f"CN={PROXY_CA}")
    assert (big.returncode, big.stdout) == (0, str(BIG_SIZE))  # many records, relayed whole
    # the server was reached by the box, from r1's address, and never by the client
    assert tcp_packets(seen["server"].packets, src=router_dn_addr(1, lab.routers))
    assert not tcp_packets(seen["server"].packets, src=lab.client_addr)
