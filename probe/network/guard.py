"""Keeps the kernel from answering the probe's crafted connection with its own RST.

The kernel has no socket for the crafted flow, so it would answer the server's SYN-ACK with
a RST (Linux does so over IPv6 too: tcp_v6_send_reset). The guard is one nftables table per
run, of the `inet` family so that one table holds both IPv4 (`ip saddr`) and IPv6 (`ip6 saddr`)
rules, named after the run's PID and start time (and a serial number: a batch and its traces
each have their own), holding one set of flows per family and one rule per family: drop
outgoing RSTs of a flow in the set unless they carry the probe's mark. Adding a flow is adding
a set element (one nft call for any number of flows), so the ruleset stays two rules long
whether a check guards one flow or a batch a thousand.
No other traffic is touched. The table goes away on every way out (normal end, exception,
SIGINT, SIGTERM: the CLI turns SIGTERM into an exception), and a table left by a run that
was killed with SIGKILL is removed by the next run (`sweep_stale`).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess

from probe.errors import ProbeError
from probe.network.wire import PROBE_MARK

TABLE_PREFIX = "probe_guard_"
FLOW_SET = "flows"
FLOW_SET6 = "flows6"
_TABLE_NAME = re.compile(rf"^{TABLE_PREFIX}(\d+)_(\d+)(?:_\d+)?$")
_serial = itertools.count(1)  # several guards of one process (batch, then its traces) never share a table


def _nft(script: str | None = None, *args: str) -> str:
    binary = shutil.which("nft")
    if binary is None:
        raise ProbeError("nft not found: install nftables (apt-get install nftables)")
    result = subprocess.run([binary, *args] + (["-f", "-"] if script is not None else []), input=script,
                            capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[0] if result.stderr.strip() else "unknown error"
        if "Operation not permitted" in result.stderr:
            raise ProbeError("nft was refused: run as root (or with CAP_NET_ADMIN)")
        raise ProbeError(f"nft failed: {message}")
    return result.stdout


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: with the PID, it names one process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def table_name(pid: int) -> str:
    """The part of a guard table's name that names its process: PID and start time."""
    return f"{TABLE_PREFIX}{pid}_{_start_time(pid) or 0}"


def guard_tables() -> list[str]:
    listing = json.loads(_nft(None, "-j", "list", "tables") or "{}")
    return [item["table"]["name"] for item in listing.get("nftables", [])
            if "table" in item and item["table"].get("family") == "inet"
            and item["table"]["name"].startswith(TABLE_PREFIX)]


def sweep_stale() -> list[str]:
    """Delete guard tables whose run is gone (killed with SIGKILL). Returns their names.

    A table is stale when no process has its PID and start time any more, so a reused PID
    does not keep a dead run's table alive, and a live run's table is never touched."""
    removed = []
    for name in guard_tables():
        match = _TABLE_NAME.match(name)
        if match and f"{TABLE_PREFIX}{match.group(1)}_{match.group(2)}" != table_name(int(match.group(1))):
            # that process is gone
            try:
                _nft(f"delete table inet {name}\n")
                removed.append(name)
            except ProbeError:
                pass  # another run swept it first
    return removed


class Guard:
    """The nftables table of this run. Use as a context manager; add flows before their SYN."""

    def __init__(self):
        self.table = f"{table_name(os.getpid())}_{next(_serial)}"
        self.installed = False

    def __enter__(self) -> "Guard":
        """Sweeps dead runs' tables; this run's own is made with its first flows (`add_flows`),
        in the same nft call: one call fewer on every check."""
        sweep_stale()
        return self

    def _create(self) -> str:
        script = (f"table inet {self.table} {{\n"
                  f"  chain output {{ type filter hook output priority -300; policy accept; }}\n"
                  f"}}\n")
        for ip, name, kind in (("ip", FLOW_SET, "ipv4_addr"), ("ip6", FLOW_SET6, "ipv6_addr")):
            # the set counts per flow (`counter`) what its lookup matched; the lookup comes after the
            # flag and mark tests, so each flow's count is exactly the kernel's RSTs dropped for it
            script += (f"add set inet {self.table} {name} {{ type {kind} . inet_service . {kind} . inet_service; "
                       f"counter; }}\n"
                       f"add rule inet {self.table} output tcp flags & rst == rst meta mark != {PROBE_MARK:#x} "
                       f"{ip} saddr . tcp sport . {ip} daddr . tcp dport @{name} counter drop\n")
        return script

    def add_flows(self, flows) -> None:
        """Add (client, client_port, server, server_port) flows to their family's set, in one nft
        call (the first one also makes the table: nft applies a script as one transaction)."""
        elements: dict[str, list[str]] = {FLOW_SET: [], FLOW_SET6: []}
        for client, client_port, server, server_port in flows:
            elements[FLOW_SET6 if ":" in server else FLOW_SET].append(
                f"{client} . {client_port} . {server} . {server_port}")
        script = "".join(f"add element inet {self.table} {name} {{ {', '.join(items)} }}\n"
                         for name, items in elements.items() if items)
        if not script:
            return
        if self.installed:
            _nft(script)
            return
        # installed first: a signal landing while nft runs must still lead to the removal
        self.installed = True
        try:
            _nft(self._create() + script)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        if self.installed:
            self.installed = False
            try:
                _nft(f"delete table inet {self.table}\n")
            except ProbeError:
                if self.table in guard_tables():  # else it was never made (a signal during `nft`)
                    raise

    def __exit__(self, *exc) -> None:
        self.remove()
