"""A small client - r1 - r2 - server lab for the box tests, with the lab's addresses.

client 192.0.2.10 (net0) -- up 192.0.2.1 [r1] dn 198.51.100.1 -- up 198.51.100.2 [r2]
dn 203.0.113.1 -- net0 203.0.113.80 server (python http.server on :80). No delay line: the
injecting boxes send toward the client before they release the request, so they win anyway.
Everything the fixture creates (namespaces, processes) is removed at the end, even on failure.
"""

from __future__ import annotations

import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLIENT, SERVER, VIP = "192.0.2.10", "203.0.113.80", "203.0.113.100"
R1_UP, R1_DN, R2_UP, R2_DN = "192.0.2.1", "198.51.100.1", "198.51.100.2", "203.0.113.1"
TRIGGER_HOST, CONTROL_HOST = "blocked.example", "example.com"


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _readline(stream, timeout: float) -> str:
    """One line from a child's pipe, or '' if none came within `timeout`."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


class Lab:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.ns = {role: f"{prefix}-{role}" for role in ("c", "r1", "r2", "s")}
        self.procs: list[subprocess.Popen] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="boxes-"))

    # --- building and tearing down -------------------------------------------------------
    def build(self) -> None:
        c, r1, r2, s = (self.ns[k] for k in ("c", "r1", "r2", "s"))
        for name in self.ns.values():
            _run("ip", "netns", "add", name)
            _run("ip", "-n", name, "link", "set", "lo", "up")
        for ns, dev, peer_ns, peer in ((c, "net0", r1, "up"), (r1, "dn", r2, "up"),
                                       (r2, "dn", s, "net0")):
            _run("ip", "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", peer,
                 "netns", peer_ns)
        for ns, dev, addr in ((c, "net0", f"{CLIENT}/24"), (r1, "up", f"{R1_UP}/24"),
                              (r1, "dn", f"{R1_DN}/30"), (r2, "up", f"{R2_UP}/30"),
                              (r2, "dn", f"{R2_DN}/24"), (s, "net0", f"{SERVER}/24")):
            _run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            _run("ip", "-n", ns, "link", "set", "dev", dev, "up")
        _run("ip", "-n", c, "route", "add", "default", "via", R1_UP)
        _run("ip", "-n", s, "route", "add", "default", "via", R2_DN)
        _run("ip", "-n", r1, "route", "add", "203.0.113.0/24", "via", R2_UP)
        _run("ip", "-n", r2, "route", "add", "192.0.2.0/24", "via", R1_DN)
        for router in (r1, r2):
            _run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        (self.tmp / "www").mkdir()
        (self.tmp / "www" / "index.html").write_text("hello from the server\n")
        httpd = self.spawn("s", sys.executable, "-u", "-m", "http.server", "80", "--bind", SERVER,
                           "--directory", str(self.tmp / "www"))
        assert "Serving HTTP" in _readline(httpd.stdout, 10), "http.server did not start"

    def destroy(self) -> None:
        for proc in self.procs:
            self._end(proc)
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    @staticmethod
    def _end(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    # --- processes in namespaces ---------------------------------------------------------
    def spawn(self, role: str, *cmd: str, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[role], *cmd], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
        self.procs.append(proc)
        return proc

    def run(self, role: str, *cmd: str, timeout: float = 15) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns[role], *cmd], cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)

    @contextmanager
    def box(self, role: str, name: str, *args: str):
        """Run `python3 -m netns.boxes.NAME` on a router until the block ends; check that it
        said `ready`, exits 0 on SIGTERM and leaves no rule behind."""
        started = time.monotonic()
        proc = self.spawn(role, sys.executable, "-m", f"netns.boxes.{name}", *args)
        line = _readline(proc.stdout, 10)
        if line.strip() != "ready":
            proc.kill()
            raise AssertionError(f"{name} said {line!r}; stderr: {proc.communicate(timeout=5)[1]}")
        assert time.monotonic() - started < 5, "box too slow to start"
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(10)
            stderr = proc.stderr.read()
            self.procs.remove(proc)
            assert rc == 0, f"{name} exited {rc}: {stderr}"
            assert "probe-box" not in self.run(role, "iptables-save").stdout, "rules left behind"
            assert "Traceback" not in stderr, stderr

    @contextmanager
    def capture(self, role: str, dev: str = "net0"):
        """tcpdump on `dev` in `role`'s namespace (listening before the block starts)."""
        pcap = self.tmp / f"{role}-{time.monotonic_ns()}.pcap"
        proc = self.spawn(role, "tcpdump", "-i", dev, "-n", "-U", "--immediate-mode", "-s", "512",
                          "-w", str(pcap), "tcp or icmp")
        line = _readline(proc.stderr, 10)
        assert "listening on" in line, f"tcpdump: {line!r}"
        capture = Capture(pcap)
        try:
            yield capture
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
            self.procs.remove(proc)
            capture.packets = capture.read()

    def curl(self, host: str, url: str = f"http://{SERVER}/", *extra: str, max_time: float = 3):
        """(exit code, http code, body) of one curl from the client."""
        out = self.run("c", "curl", "-sS", "-m", str(max_time), "-H", f"Host: {host}",
                       "-w", "\n%{http_code}", *extra, url, timeout=max_time + 5)
        body, _, code = out.stdout.rpartition("\n")
        return out.returncode, code, body

    def raw_request(self, host: str, ttl: int, port: int = 80, wait: float = 1.0, source_port: int = 0) -> str:
        """Connect from the client (from `source_port`, or any), send a request with the given IP
        TTL; what happened."""
        script = (
            "import socket,struct,sys\n"
            f"s=socket.create_connection(({SERVER!r},{port}),timeout=3,source_address=('',{source_port}))\n"
            f"s.setsockopt(socket.IPPROTO_IP,socket.IP_TTL,{ttl})\n"
            f"s.sendall(b'HEAD / HTTP/1.1\\r\\nHost: {host}\\r\\n\\r\\n')\n"
            f"s.settimeout({wait})\n"
            "try:\n"
            "    print('data' if s.recv(4096) else 'eof')\n"
            "except ConnectionResetError:\n"
            "    print('reset')\n"
            "except TimeoutError:\n"
            "    print('timeout')\n"
            # abort, so the kernel does not go on retransmitting the TTL-limited request into
            # the next test's captures
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,struct.pack('ii',1,0))\n"
            "s.close()\n"
        )
        return self.run("c", sys.executable, "-c", script).stdout.strip()


# --- reading captures ------------------------------------------------------------------------
class Capture:
    """A pcap being written by tcpdump; `packets` holds everything once the capture ended."""

    def __init__(self, path: Path):
        self.path = path
        self.packets: list = []

    def read(self) -> list:
        import scapy.layers.inet  # noqa: F401  (rdpcap dissects only layers imported)
        import scapy.layers.l2  # noqa: F401
        from scapy.utils import rdpcap
        try:
            return list(rdpcap(str(self.path)))
        except (EOFError, OSError):
            return []  # nothing written yet

    def wait_for(self, predicate, timeout: float = 3.0) -> list:
        """Packets seen so far, once `predicate(packets)` holds (AssertionError after timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            packets = self.read()
            if predicate(packets):
                return packets
            assert time.monotonic() < deadline, f"condition not met in {timeout}s"
            time.sleep(0.02)  # polling a file tcpdump writes; bounded by the deadline

def tcp_packets(packets, src: str | None = None, dst: str | None = None):
    from scapy.layers.inet import IP, TCP
    return [p[IP] for p in packets if IP in p and TCP in p
            and (src is None or p[IP].src == src) and (dst is None or p[IP].dst == dst)]


def payload_of(ip) -> bytes:
    from scapy.layers.inet import TCP
    start = ip.ihl * 4 + ip[TCP].dataofs * 4
    return bytes(ip)[start:ip.len]


def flags(ip) -> str:
    from scapy.layers.inet import TCP
    return str(ip[TCP].flags)
