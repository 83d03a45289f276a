"""The bad-input matrix: every way a user can call `probe` wrongly, with the contract's exit code
and the first words of the one line it prints on stderr (no traceback, nothing on stdout).

Every row runs under `test_cli.GUARD`, made stricter here: besides raw and packet sockets and
subprocesses (nft), a name lookup of anything that is not an IP literal stops the process too
(exit 98), so that no row can send a packet, not even a DNS query, whatever regresses. A row
whose invocation got as far as the network fails with the guard's exit code and message.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from .test_cli import GUARD, VALID_ADDRESS, assert_one_line_error, own_address

NO_LOOKUP = """
import ipaddress
_getaddrinfo = socket.getaddrinfo
def _literal_only(host, *args, **kwargs):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        sys.stderr.write("TEST GUARD: a name lookup of " + repr(host) + "\\n")
        sys.stderr.flush()
        os._exit(98)
    return _getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = _literal_only
socket.gethostbyname = socket.gethostbyname_ex = lambda host: _literal_only(host)
"""
STRICT_GUARD = GUARD.replace("sys.argv = ", NO_LOOKUP + "sys.argv = ", 1)
assert STRICT_GUARD != GUARD

GOLDEN = Path(__file__).parent.parent / "golden" / "captures" / "01-clean.pcap"
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)  # LINKTYPE_RAW


def _udp_packet() -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 17, 0, bytes([192, 0, 2, 10]), bytes([198, 51, 100, 80]))
    return ip + struct.pack("!HHHH", 53, 53, 8, 0)


FILES = {  # name: content (bytes), made in a temporary directory; "dir" is a directory
    "empty.pcap": b"",
    "garbage.pcap": bytes(range(256)) * 4,
    "text.pcap": b"hello, this is not a capture\n",
    "header-only.pcap": PCAP_HEADER,
    "cut-record-header.pcap": PCAP_HEADER + b"\x01\x02\x03",
    "absurd-length.pcap": PCAP_HEADER + struct.pack("<IIII", 0, 0, 0xFFFFFFF0, 0xFFFFFFF0) + b"x" * 10,
    "udp-only.pcap": PCAP_HEADER + struct.pack("<IIII", 1, 0, 28, 28) + _udp_packet(),
    "cut.pcapng": b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00",
    "targets-empty.txt": b"# nothing to probe here\n\n   \n",
    "targets-ftp.txt": b"ftp://198.51.100.80/\n",
    "targets-v6.txt": b"http://www.example.com/\nhttp://a.example/ a.example:80:[2001:db8::7]\n",
    "targets-one.txt": b"http://198.51.100.80/\n",
}

A = VALID_ADDRESS
ROWS = [  # (id, arguments, exit code, first words of the message); {name} is a file from FILES
    # --- the command line itself
    ("unknown-command", ("frobnicate", A), 2, "probe: No such command"),
    ("check-missing-url", ("check",), 2, "probe: Missing argument 'URL'"),
    ("check-unknown-option", ("check", "--bogus", A), 2, "probe: No such option: --bogus"),
    ("check-extra-argument", ("check", A, "extra"), 2, "probe: Got unexpected extra argument"),
    # --- URLs and targets
    ("empty-url", ("check", ""), 2, "probe: empty URL"),
    ("ftp-scheme", ("check", "ftp://198.51.100.80/"), 2, "probe: unsupported scheme 'ftp'"),
    ("gopher-scheme", ("check", "gopher://198.51.100.80/"), 2, "probe: unsupported scheme 'gopher'"),
    ("https-port-too-big", ("check", "https://198.51.100.80:65536/"), 2, "probe: bad port in URL"),
    ("sni-with-space", ("check", "https://198.51.100.80/", "--sni", "a b"), 2, "probe: --sni 'a b' is not a host name"),
    ("cacert-missing", ("check", "https://198.51.100.80/", "--cacert", "/nonexistent/ca.pem"), 1,
     "probe: cannot read --cacert /nonexistent/ca.pem"),
    ("cacert-not-pem", ("check", "https://198.51.100.80/", "--cacert", "{targets-one.txt}"), 2,
     "probe: --cacert"),
    ("credentials", ("check", "http://user:pw@198.51.100.80/"), 2, "probe: credentials in the URL"),
    ("no-host", ("check", "http:///path"), 2, "probe: no host in URL"),
    ("space-in-host", ("check", "http://exa mple.com/"), 2, "probe: 'exa mple.com' is not a host name"),
    ("space-in-path", ("check", "http://198.51.100.80/a b"), 2, "probe: ' ' cannot stand in a URL's path"),
    ("port-too-big", ("check", "http://198.51.100.80:70000/"), 2, "probe: bad port in URL"),
    ("name-port-too-big", ("check", "http://x:70000/"), 2, "probe: bad port in URL"),
    ("port-zero", ("check", "http://198.51.100.80:0/"), 2, "probe: bad port 0"),
    ("port-twice", ("check", "http://198.51.100.80:80:80/"), 2, "probe: bad port in URL"),
    ("ipv6-loopback", ("check", "http://[::1]/"), 2, "probe: ::1 is this host"),
    ("ipv6-unspecified", ("trace", "http://[::]/"), 2, "probe: :: is this host"),
    ("ipv6-multicast", ("check", "http://[ff02::1]/"), 2, "probe: ff02::1 is a multicast or broadcast"),
    ("ipv6-link-local", ("check", "http://[fe80::1]/"), 2, "probe: fe80::1 is link-local: it needs a zone"),
    ("ipv6-link-local-unknown-zone", ("check", "http://[fe80::1%25nosuch0]/"), 2,
     "probe: fe80::1%25nosuch0: this host has no interface 'nosuch0'"),
    ("ipv6-global-with-zone", ("check", "http://[2001:db8::1%25lo]/"), 2,
     "probe: '2001:db8::1%25lo' is not an IP address (a %zone belongs to link-local IPv6 addresses only)"),
    ("ipv6-v4-mapped", ("check", "http://[::ffff:192.0.2.1]/"), 2,
     "probe: ::ffff:192.0.2.1 is an IPv4-mapped IPv6 address"),
    ("ipv6-without-brackets", ("check", "http://2001:db8::1/"), 2, "probe: bad URL 'http://2001:db8::1/': an IPv6"),
    ("ipv6-unclosed-bracket", ("check", "http://[2001:db8::1/"), 2, "probe: bad URL"),
    ("ipv6-bare-loopback", ("check", "::1"), 2, "probe: ::1 is this host"),
    ("ipv6-with-minus-4", ("check", "-4", "http://[2001:db8::1]/"), 2,
     "probe: the URL's address 2001:db8::1 is an IPv6 address, but -4 asks for IPv4"),
    ("ipv4-with-minus-6", ("trace", "-6", "192.0.2.80"), 2,
     "probe: the URL's address 192.0.2.80 is an IPv4 address, but -6 asks for IPv6"),
    ("minus-4-and-6-literal", ("check", "-4", "-6", "192.0.2.80"), 2,
     "probe: 192.0.2.80 is an IPv4 address: probing both families needs a host name"),
    ("both-families-literal-v6", ("check", "-46", "http://[2001:db8::1]/"), 2,
     "probe: 2001:db8::1 is an IPv6 address: probing both families needs a host name"),
    ("both-families-and-minus-6", ("check", "--both-families", "-6", "www.example.com"), 2,
     "probe: --both-families and -6 contradict each other"),
    ("minus-4-and-6-trace", ("trace", "-4", "-6", "www.example.com"), 2, "probe: -4 and -6 exclude each other here"),
    ("loopback", ("check", "127.0.0.1"), 2, "probe: 127.0.0.1 is this host"),
    ("unspecified", ("check", "0.0.0.0"), 2, "probe: 0.0.0.0 is this host"),
    ("broadcast", ("check", "255.255.255.255"), 2, "probe: 255.255.255.255 is a multicast or broadcast"),
    ("multicast", ("check", "224.0.0.1"), 2, "probe: 224.0.0.1 is a multicast or broadcast"),
    # legacy numeric forms the resolver would turn into another address (1.2.0.3, octal, hex)
    ("three-part-address", ("check", "1.2.3"), 2, "probe: '1.2.3' is not a plain IPv4 address"),
    ("octal-address", ("check", "http://010.0.0.1/"), 2, "probe: '010.0.0.1' is not a plain IPv4 address"),
    ("hex-address", ("trace", "0x7f.1"), 2, "probe: '0x7f.1' is not a plain IPv4 address"),
    ("own-address", ("check", "{own_address}"), 2, "probe: {own_address} is an address of this host"),
    ("subnet-broadcast", ("check", "{subnet_broadcast}"), 2, "probe: {subnet_broadcast} is a broadcast address"),
    # --- --resolve
    ("resolve-no-address", ("check", "--resolve", "www.example.com:80", "http://www.example.com/"), 2,
     "probe: bad --resolve"),
    ("resolve-not-an-address", ("check", "--resolve", "www.example.com:80:not-an-address", "http://www.example.com/"),
     2, "probe: 'not-an-address' is not an IP address"),
    ("resolve-port-zero", ("check", "--resolve", "www.example.com:0:198.51.100.80", "http://www.example.com/"), 2,
     "probe: bad port in --resolve"),
    ("resolve-ipv6-loopback", ("check", "--resolve", "www.example.com:80:[::1]", "http://www.example.com/"), 2,
     "probe: ::1 is this host"),
    ("resolve-ipv6-link-local", ("check", "--resolve", "www.example.com:80:fe80::1", "http://www.example.com/"), 2,
     "probe: fe80::1 is link-local"),
    ("resolve-ipv6-with-minus-4", ("check", "-4", "--resolve", "www.example.com:80:[2001:db8::1]",
                                   "http://www.example.com/"), 2,
     "probe: --resolve address 2001:db8::1 is an IPv6 address, but -4 asks for IPv4"),
    ("resolve-to-loopback", ("check", "--resolve", "www.example.com:80:127.0.0.1", "http://www.example.com/"), 2,
     "probe: 127.0.0.1 is this host"),
    # --- options
    ("method-not-a-token", ("check", "--method", "GET /x", A), 2, "probe: unsupported --request 'GET /X'"),
    ("method-empty", ("check", "-X", "", A), 2, "probe: unsupported --request ''"),
    ("header-no-colon", ("check", "-H", "X-Test", A), 2, "probe: bad --header 'X-Test'"),
    ("header-bad-name", ("check", "-H", "X Test: 1", A), 2, "probe: bad --header 'X Test: 1'"),
    ("header-line-break", ("check", "-H", "X-Test: a\r\nInjected: b", A), 2, "probe: bad --header"),
    ("data-with-head", ("check", "-X", "HEAD", "-d", "a=1", A), 2, "probe: --data with HEAD"),
    ("retries-one", ("check", "--retries", "1", A), 2, "probe: --retries must be from 2 to 10"),
    ("retries-word", ("check", "--retries", "many", A), 2, "probe: Invalid value for '--retries'"),
    ("syn-retries-negative", ("check", "--syn-retries", "-1", A), 2, "probe: --syn-retries must be from 0 to 10"),
    ("ttl-zero", ("check", "--ttl", "0", A), 2, "probe: --ttl must be from 1 to 255"),
    ("ttl-300", ("check", "--ttl", "300", A), 2, "probe: --ttl must be from 1 to 255"),
    ("max-time-zero", ("check", "--max-time", "0", A), 2, "probe: --max-time must be more than 0"),
    ("max-time-negative", ("check", "--max-time", "-5", A), 2, "probe: --max-time must be more than 0"),
    ("max-time-nan", ("check", "--max-time", "nan", A), 2, "probe: --max-time must be more than 0"),
    ("max-time-inf", ("check", "--max-time", "inf", A), 2, "probe: --max-time must be more than 0"),
    ("linger-negative", ("check", "--linger", "-1", A), 2, "probe: --linger must be from 0 to 60"),
    ("linger-nan", ("check", "--linger", "nan", A), 2, "probe: --linger must be from 0 to 60"),
    ("max-ttl-zero", ("check", "--max-ttl", "0", A), 2, "probe: --max-ttl must be from 1 to 64"),
    ("control-host-space", ("check", "--control-host", "a b", A), 2, "probe: --control-host 'a b' is not a host"),
    ("pcap-unwritable", ("check", "--pcap", "/nonexistent-dir/out.pcap", A), 1,
     "probe: cannot write /nonexistent-dir/out.pcap"),
    # --- probe trace
    ("trace-missing-url", ("trace",), 2, "probe: Missing argument 'URL'"),
    ("trace-ftp", ("trace", "ftp://198.51.100.80/"), 2, "probe: unsupported scheme 'ftp'"),
    ("trace-max-ttl-65", ("trace", "--max-ttl", "65", A), 2, "probe: --max-ttl must be from 1 to 64"),
    ("trace-wait-nan", ("trace", "--wait", "nan", A), 2, "probe: --wait must be from 0.05 to 10"),
    ("trace-control-is-target", ("trace", "--control-host", "www.example.com", "--resolve",
                                 "www.example.com:80:198.51.100.80", "http://www.example.com/"), 2,
     "probe: --control-host must differ"),
    ("trace-multicast", ("trace", "224.0.0.1"), 2, "probe: 224.0.0.1 is a multicast or broadcast"),
    # --- probe analyze: missing, empty, corrupt files
    ("analyze-missing-file-argument", ("analyze",), 2, "probe: Missing argument 'FILE'"),
    ("analyze-no-such-file", ("analyze", "{dir}/nonexistent.pcap"), 1, "probe: cannot read"),
    ("analyze-directory", ("analyze", "{dir}"), 1, "probe: cannot read"),
    ("analyze-empty", ("analyze", "{empty.pcap}"), 1, "probe: {empty.pcap} is empty"),
    ("analyze-garbage", ("analyze", "{garbage.pcap}"), 1, "probe: {garbage.pcap} is not a pcap or pcapng file"),
    ("analyze-text", ("analyze", "{text.pcap}"), 1, "probe: {text.pcap} is not a pcap or pcapng file"),
    ("analyze-header-only", ("analyze", "{header-only.pcap}"), 1, "probe: {header-only.pcap} holds no TCP packets"),
    ("analyze-cut-record-header", ("analyze", "{cut-record-header.pcap}"), 1,
     "probe: {cut-record-header.pcap} is truncated"),
    ("analyze-absurd-record-length", ("analyze", "{absurd-length.pcap}"), 1, "probe: {absurd-length.pcap} is corrupt"),
    ("analyze-udp-only", ("analyze", "{udp-only.pcap}"), 1, "probe: {udp-only.pcap} holds no TCP packets"),
    ("analyze-cut-pcapng", ("analyze", "{cut.pcapng}"), 1, "probe: {cut.pcapng} is not a readable pcapng file"),
    ("analyze-no-flow-matches", ("analyze", "--host", "203.0.113.9", str(GOLDEN)), 1, "probe: no flow in"),
    ("analyze-bad-flow", ("analyze", "--flow", "bogus", str(GOLDEN)), 2, "probe: 'bogus' is not an IP address"),
    ("analyze-bad-ipv6-flow", ("analyze", "--flow", "[2001:db8::1]x", str(GOLDEN)), 2,
     "probe: '[2001:db8::1]x': after [ADDR] only :PORT may follow"),
    ("analyze-bad-host", ("analyze", "--host", "999.1.1.1", str(GOLDEN)), 2, "probe: '999.1.1.1' is not an IP address"),
    ("analyze-flow-port-zero", ("analyze", "--flow", "198.51.100.80:0", str(GOLDEN)), 2,
     "probe: '198.51.100.80:0': the port must be"),
    # --- probe batch
    ("batch-missing-file-argument", ("batch",), 2, "probe: Missing argument 'FILE|-'"),
    ("batch-no-such-file", ("batch", "{dir}/nonexistent.txt"), 1, "probe: cannot read"),
    ("batch-directory", ("batch", "{dir}"), 1, "probe: cannot read"),
    ("batch-no-targets", ("batch", "{targets-empty.txt}"), 2, "probe: no targets in"),
    ("batch-no-targets-on-stdin", ("batch", "-"), 2, "probe: no targets in standard input"),
    ("batch-bad-line", ("batch", "{targets-ftp.txt}"), 2, "probe: line 1: unsupported scheme 'ftp'"),
    ("batch-minus-4-ipv6-line", ("batch", "-4", "{targets-v6.txt}"), 2,
     "probe: line 2: --resolve address 2001:db8::7 is an IPv6 address, but -4 asks for IPv4"),
    ("batch-minus-4-and-6", ("batch", "-4", "-6", "{targets-v6.txt}"), 2, "probe: -4 and -6 exclude each other"),
    ("batch-concurrency-zero", ("batch", "--concurrency", "0", "{targets-ftp.txt}"), 2,
     "probe: --concurrency must be from 1 to 1000"),
    ("batch-rate-nan", ("batch", "--rate", "nan", "{targets-ftp.txt}"), 2, "probe: --rate must be more than 0"),
    ("batch-max-time-nan", ("batch", "--max-time", "nan", "{targets-ftp.txt}"), 2,
     "probe: --max-time must be more than 0"),
    ("batch-alert-without-history", ("batch", "--alert-on-change", "{targets-ftp.txt}"), 2,
     "probe: --alert-on-change needs --history"),
    ("batch-out-unwritable", ("batch", "--out", "/nonexistent-dir/x", "{targets-one.txt}"), 1,
     "probe: cannot write /nonexistent-dir/x"),
]


def _subnet_broadcast() -> str | None:
    """A directed broadcast address of one of this host's networks (not loopback's), if any."""
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return None
    found = [previous.split()[-1] for previous, line in zip(lines, lines[1:])
             if "/32 link BROADCAST" in line and not previous.split()[-1].startswith("127.")]
    return found[0] if found else None


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("bad-inputs")
    values = {"dir": str(directory)}
    for name, content in FILES.items():
        (directory / name).write_bytes(content)
        values[name] = str(directory / name)
    return values


def _fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def _run(arguments: tuple[str, ...]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", STRICT_GUARD, *arguments], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def outcomes(places) -> dict[str, tuple[dict[str, str], subprocess.CompletedProcess | None]]:
    """Every row run once, four at a time (each is a Python start-up): row id -> (values, result);
    None for a row this host cannot pose."""
    from concurrent.futures import ThreadPoolExecutor

    values = dict(places, own_address=own_address())
    broadcast = _subnet_broadcast()
    if broadcast is not None:
        values["subnet_broadcast"] = broadcast
    runnable = {name: tuple(_fill(a, values) for a in arguments) for name, arguments, _code, _message in ROWS
                if broadcast is not None or not any("{subnet_broadcast}" in a for a in arguments)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(runnable, pool.map(_run, runnable.values())))
    return {name: (values, results.get(name)) for name, *_ in ROWS}


@pytest.mark.parametrize("name, code, message", [(row[0], *row[2:]) for row in ROWS], ids=[row[0] for row in ROWS])
def test_a_bad_invocation_exits_with_its_code_and_one_line(outcomes, name, code, message):
    values, result = outcomes[name]
    if result is None:
        pytest.skip("this host has no directed broadcast address")
    line = assert_one_line_error(result, code)
    assert line.startswith(_fill(message, values)), line


def test_the_matrix_is_large_and_every_row_is_named_once():
    assert len(ROWS) >= 25
    assert len({row[0] for row in ROWS}) == len(ROWS)
    assert {row[1][0] for row in ROWS if row[1]} >= {"check", "trace", "analyze", "batch"}


def test_the_strict_guard_stops_a_name_lookup():
    result = _run(("check", "--max-time", "1", "www.example.com"))
    assert result.returncode == 98 and "TEST GUARD: a name lookup of 'www.example.com'" in result.stderr
