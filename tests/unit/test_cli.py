"""`python -m probe` as a user runs it: help, and bad invocations (one line, the contract's code).

None of these sends a packet: every invocation here is refused before the probe opens a socket.
All but the parser's own refusals run under GUARD, which stops the process (exit 99)
if it opens a raw or packet socket or starts a subprocess (nft), so that even as root and even
if a check regresses, nothing leaves this host and no firewall rule is touched.
"""

from __future__ import annotations

import os
import socket
import json
import subprocess
import sys

import pytest

VALID_ADDRESS = "198.51.100.80"  # TEST-NET-2: only used where the command fails before the network


def probe(*args: str, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *python_flags, "-m", "probe", *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


GUARD = """
import os, runpy, socket, subprocess, sys
_socket = socket.socket
def _stop(what):
    sys.stderr.write("TEST GUARD: " + what + "\\n")
    sys.stderr.flush()
    os._exit(99)
class _NoRawSocket(_socket):
    def __init__(self, family=socket.AF_INET, type=socket.SOCK_STREAM, proto=0, fileno=None):
        if family == socket.AF_PACKET or type == socket.SOCK_RAW:
            _stop("a raw or packet socket was opened")
        super().__init__(family, type, proto, fileno)
socket.socket = _NoRawSocket
subprocess.run = subprocess.Popen = lambda *args, **kwargs: _stop("a subprocess was started")
sys.argv = ["probe", *sys.argv[1:]]
runpy.run_module("probe", run_name="__main__", alter_sys=True)
"""


def guarded_probe(*args: str) -> subprocess.CompletedProcess:
    """`python -m probe ARGS`, but unable to send a packet or run nft."""
    return subprocess.run([sys.executable, "-c", GUARD, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def own_address() -> str:
    """An address of one of this host's interfaces (a route lookup: connecting UDP sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.connect((VALID_ADDRESS, 80))
        except OSError:
            pytest.skip("no route: cannot find an address of this host")
        return udp.getsockname()[0]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    assert result.stdout == ""
    return lines[0]


# --- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("--help",), ("check", "--help")])
def test_help_works_without_importing_scapy(args):
    result = probe(*args, python_flags=("-X", "importtime"))
    assert result.returncode == 0, result.stderr
    assert "check" in result.stdout.lower() and "usage" in result.stdout.lower()
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "import time:" in line]
    assert "probe.cli" in imported  # the check below looked at the right process
    assert not [name for name in imported if name.split(".")[0] == "scapy"]


@pytest.mark.parametrize("args", [("-h",), ("check", "-h"), ("trace", "-h")])
def test_dash_h_is_help_as_everywhere_else(args):
    result = probe(*args)
    assert result.returncode == 0 and result.stdout.startswith("Usage: probe"), result.stderr


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_packages_version(flag):
    from probe import __version__

    result = probe(flag)
    assert (result.returncode, result.stdout) == (0, f"probe {__version__}\n")


def test_an_option_error_points_at_the_commands_own_help():
    line = assert_one_line_error(probe("trace", "--bogus", VALID_ADDRESS), 2)
    assert line.endswith("(see probe trace --help)"), line


def test_check_help_lists_the_contract_options():
    result = probe("check", "--help")
    for option in ("--resolve", "--json", "--pcap"):
        assert option in result.stdout


def test_importing_the_cli_and_the_engine_does_not_import_scapy():
    result = run_python("import sys, probe.cli, probe.engine, probe.network.target, probe.record, probe.protocol.tcp\n"
                        "assert 'scapy' not in sys.modules, sorted(m for m in sys.modules if 'scapy' in m)\n")
    assert result.returncode == 0, result.stderr


# --- bad invocations -----------------------------------------------------------------------------


# The matrix of bad invocations (each with its code and message) is tests/unit/test_bad_inputs.py.


@pytest.mark.parametrize("args", [("check",), ("check", "--bogus", VALID_ADDRESS)])
def test_usage_errors_of_the_real_entry_point(args):
    # Without the guard, only invocations that the argument parser itself refuses.
    assert_one_line_error(probe(*args), 2)


def test_guard_stops_a_probe_that_would_send():
    result = guarded_probe("check", "--max-time", "1", VALID_ADDRESS)
    assert result.returncode == 99 and "TEST GUARD" in result.stderr


def test_unwritable_pcap_exits_1_with_one_line():
    line = assert_one_line_error(guarded_probe("check", "--pcap", "/nonexistent-dir/out.pcap", VALID_ADDRESS), 1)
    assert "/nonexistent-dir/out.pcap" in line


def test_own_address_is_refused_with_one_line():
    line = assert_one_line_error(guarded_probe("check", own_address()), 2)
    assert "this host" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="as root this would really probe")
def test_without_privileges_a_valid_target_exits_1_saying_so():
    line = assert_one_line_error(probe("check", "--max-time", "5", VALID_ADDRESS), 1)
    assert "root" in line or "CAP_NET" in line


@pytest.mark.parametrize("args", [("--concurrency", "abc"), ("--rate", "-5")])
def test_a_nagios_plugin_that_cannot_start_says_unknown(args):
    """Nagios reads exit 2 as CRITICAL: under --nagios a bad invocation is UNKNOWN (exit 3),
    with the plugin's status line on stdout; without it, the contract's usage error (exit 2)."""
    plugin = guarded_probe("batch", "-", "--nagios", *args)
    assert plugin.returncode == 3, plugin.stderr
    assert plugin.stdout.startswith("PROBE UNKNOWN - ") and len(plugin.stdout.splitlines()) == 1
    plain = guarded_probe("batch", "-", *args)
    assert plain.returncode == 2 and plain.stdout == ""


# --- --json on a failure ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, code", [
    (("check", "--json", "--ttl", "0", VALID_ADDRESS), 2),
    (("trace", "--json", "http://nonexistent.invalid/"), 1),
    (("check", "--json", "--bogus", VALID_ADDRESS), 2),
])
def test_with_json_a_failure_still_prints_one_document_with_the_error(args, code):
    from probe import __version__

    result = probe(*args)
    assert result.returncode == code, result.stderr
    document = json.loads(result.stdout)
    assert document["schema"] == "probe/1" and document["command"] == args[0]
    assert document["version"] == __version__ and document["exit_code"] == code
    assert document["error"] and document["error"] in result.stderr  # the same line people read
    assert len(result.stderr.splitlines()) == 1
