#!/usr/bin/env python3
"""How often does `probe trace` name the right hop? The accuracy matrix of issue 16.

For each box kind x hop of the box x path condition, builds a lab (client - 4 routers - server,
50 ms), starts the box at that hop, runs `python3 -m probe trace http://blocked.example/ --json`
in the client namespace RUNS times (as the scenario runner runs the probe) and counts two
figures per cell: how often the document's `hop` is the box's hop, and how often its `bracket`
contains it (`passed <= hop < not_reached`). The lab knows where the box is, so this is
accuracy against ground truth, which no published tool reports.

Conditions:
- `none`: the plain chain;
- `loss3`: r1 drops 3% of what arrives on either side (nftables `numgen`, `Lab.add_loss`), so
  every packet past the client's first router crosses it, both ways;
- `ecmp`: a twin router beside the box's router (`Lab(ecmp_hop=...)`), the box on the twin only,
  r_{k-1} balancing on the 5-tuple; for the box at hop 1 (no router before it to hash) the
  pair stands at hop 2, behind the box; with the box at hop 4 the lab has 5 routers (a router
  after the pair joins it).

The residual blocker blocks the 3-tuple for RESIDUAL_S after a trigger; between its runs the
bench waits (bounded) until an innocuous request passes again, as CenTrace waits between runs
(under ECMP, also from a source port the box's branch forwarded in an earlier run).

Run by hand, as root, from the repository root, under the lab lock:
    flock /tmp/probe-lab.lock python3 bench/locate_accuracy.py [--runs 20] [--kinds tap,swallow]
        [--hops 1,2,3,4] [--conditions none,loss3,ecmp] [--readme README.md]
Everything runs inside lab namespaces (documentation addresses only) and is torn down.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import datetime
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netns.lab import Lab, exit_on_signals  # noqa: E402

KINDS = {  # name in the table -> (box module, its arguments)
    "tap": ("tap", ()),
    "swallow": ("swallow", ()),
    "block page": ("blockpage", ()),
    "silent drop": ("silentdrop", ()),
    "SYN firewall": ("firewall", ()),
    "TTL-copier": ("ttlcopy", ()),
    "residual blocker": ("residual", ("--duration", "20")),
}
KIND_KEYS = {re.sub(r"[^a-z]", "", name.lower()): name for name in KINDS}  # "blockpage" -> "block page"
KIND_KEYS_BY_NAME = {name: key for key, name in KIND_KEYS.items()}
CONDITIONS = ("none", "loss3", "ecmp")
LOSS_PERCENT = 3
ROUTERS = 4
RESIDUAL_S = 20.0
TRIGGER_HOST, CONTROL_HOST = "blocked.example", "example.com"
MARKERS = ("<!-- accuracy-table:start -->", "<!-- accuracy-table:end -->")


@dataclass(frozen=True)
class Outcome:
    """One run: the hop named, the bracket, the exit status (hop None: nothing located); the
    verdict, the exchange's source port, whether the document says multipath was seen; under
    `ecmp`, the lab's ground truth (`EcmpTruth`): whether the exchange's flow crossed the box's
    branch, and whether copies that came over both branches expired (at the pair, or at the
    router after it)."""

    hop: int | None
    bracket: tuple[int, int] | None
    exit_code: int
    verdict: str | None = None
    port: int | None = None
    multipath_said: bool | None = None
    met_box: bool | None = None  # None: not known (no ECMP stage)
    both_branches: bool | None = None
    packets_sent: int | None = None
    left_open: int | None = None  # server sockets toward the client not closed after the run
    left_states: tuple[str, ...] = ()  # their states (`ss`), as SYN-RECV or FIN-WAIT-1
    seconds: float | None = None  # wall time of the trace command

    def hop_right(self, truth: int) -> bool:
        return self.hop == truth

    def bracket_holds(self, truth: int) -> bool:
        return self.bracket is not None and self.bracket[0] <= truth < self.bracket[1]


def outcome_of(stdout: str, exit_code: int) -> Outcome:
    """The figures of one `probe trace --json` run (no document: nothing right)."""
    try:
        document = json.loads(stdout)
    except json.JSONDecodeError:
        return Outcome(None, None, exit_code)
    bracket = document.get("bracket")
    multipath = document.get("multipath")
    return Outcome(document.get("hop"), (bracket["passed"], bracket["not_reached"]) if bracket else None, exit_code,
                   document.get("verdict"), (document.get("client") or {}).get("port"),
                   multipath["seen"] if multipath else None)


class Politeness:
    """Per run: the TCP packets the client sent to the server (an nftables counter in the client's
    namespace: the check, the residual watch and the trace together), and the server's sockets
    toward the client left in any state but TIME-WAIT once the run is over (`ss`, as the e2e tests
    do; waited for up to 5 s, as closing resets may still be on the way)."""

    TABLE = "plab_polite"

    def __init__(self, lab: Lab):
        self.lab = lab

    def reset(self) -> None:
        ruleset = (f"table inet {self.TABLE} {{\n chain out {{ type filter hook output priority 0;\n"
                   f"  ip daddr {self.lab.server_addr} meta l4proto tcp counter\n }}\n}}\n")
        self.lab.exec(self.lab.client_ns, ["nft", "-f", "-"],
                      input=f"add table inet {self.TABLE}\ndelete table inet {self.TABLE}\n" + ruleset)

    def packets(self) -> int:
        listing = json.loads(self.lab.exec(self.lab.client_ns, ["nft", "-j", "list", "table", "inet", self.TABLE]).stdout)
        return sum(x["counter"]["packets"] for item in listing["nftables"] if "rule" in item
                   for x in item["rule"]["expr"] if "counter" in x)

    def left_open(self) -> tuple[str, ...]:
        """The states of the sockets left open (none: the empty tuple)."""
        deadline = time.monotonic() + 5.0
        while True:
            out = self.lab.exec(self.lab.server_ns, ["ss", "-Htan"]).stdout
            states = tuple(fields[0] for fields in map(str.split, out.splitlines()) if len(fields) >= 5
                           and fields[4].startswith(f"{self.lab.client_addr}:")
                           and fields[0] not in ("TIME-WAIT", "LISTEN"))
            if not states or time.monotonic() > deadline:
                return states
            time.sleep(0.2)  # polling the server's sockets, bounded by the deadline


def politeness_line(outcomes: list[Outcome]) -> str | None:
    counted = [o for o in outcomes if o.packets_sent is not None]
    if not counted:
        return None
    left = sum(o.left_open or 0 for o in counted)
    states = collections.Counter(state for o in counted for state in o.left_states)
    if states:
        left = f"{left} ({', '.join(f'{state} {n}' for state, n in sorted(states.items()))})"
    timed = [o.seconds for o in counted if o.seconds is not None]
    took = f"; trace took {min(timed):.1f} to {max(timed):.1f} s" if timed else ""
    return (f"packets to the server per run: max {max(o.packets_sent for o in counted)}, "
            f"mean {sum(o.packets_sent for o in counted) / len(counted):.0f}; server sockets left open: {left}{took}")


class EcmpTruth:
    """Ground truth of one run under `ecmp`, from the routers' own counters (nftables): the
    source ports of the client's TCP segments to the server's port that the twin (the box's
    branch) forwarded, and how many ICMP time-exceeded each router of the pair sent. The router
    after the pair answers a copy from the interface it came in on (`Lab.rejoin_addr` for one that
    came through the twin), so its time-exceeded from both interfaces is multipath seen too."""

    TABLE = "plab_truth"

    def __init__(self, lab: Lab):
        self.lab = lab
        self.branches = (lab.branch_ns("a"), lab.twin_ns)
        self.rejoin = lab.router_ns(lab.ecmp_hop + 1)

    def reset(self) -> None:
        pair = (f"table inet {self.TABLE} {{\n set sports {{ type inet_service; }}\n"
                f" chain pre {{ type filter hook prerouting priority -250;\n"
                f"  ip saddr {self.lab.client_addr} tcp dport 80 add @sports {{ tcp sport }}\n }}\n"
                f" chain out {{ type filter hook output priority 0;\n  icmp type time-exceeded counter\n }}\n}}\n")
        rejoin = (f"table inet {self.TABLE} {{\n chain out {{ type filter hook output priority 0;\n"
                  f"  icmp type time-exceeded ip saddr {self.lab.rejoin_addr} counter\n"
                  f"  icmp type time-exceeded ip saddr != {self.lab.rejoin_addr} counter\n }}\n}}\n")
        for ns, ruleset in [*((ns, pair) for ns in self.branches), (self.rejoin, rejoin)]:
            self.lab.exec(ns, ["nft", "-f", "-"], input=f"add table inet {self.TABLE}\ndelete table inet {self.TABLE}\n"
                          + ruleset)

    def _listing(self, ns: str) -> tuple[set[int], list[int]]:
        """The ports in the table's set, and each counter's packets in rule order."""
        listing = json.loads(self.lab.exec(ns, ["nft", "-j", "list", "table", "inet", self.TABLE]).stdout)
        ports, counters = set(), []
        for item in listing["nftables"]:
            if "set" in item:
                ports |= {e for e in item["set"].get("elem", []) if isinstance(e, int)}
            if "rule" in item:
                counters += [x["counter"]["packets"] for x in item["rule"]["expr"] if "counter" in x]
        return ports, counters

    def read(self) -> tuple[set[int], set[int], bool]:
        """(ports seen on branch a, on the twin, whether time-exceeded came for copies of both
        branches: from both routers of the pair, or from both interfaces of the router after it)."""
        (ports_a, expired_a), (ports_b, expired_b) = (self._listing(ns) for ns in self.branches)
        _, (via_twin, via_a) = self._listing(self.rejoin)
        both = (sum(expired_a) > 0 and sum(expired_b) > 0) or (via_twin > 0 and via_a > 0)
        return ports_a, ports_b, both


def cell(outcomes: list[Outcome], truth: int) -> str:
    """`hop right / bracket holds`, as counts of the runs. Under `ecmp` the runs whose exchange's
    flow took the clean branch (the lab's counters say so, and the verdict is rightly clean) are
    counted apart, `+N clean`: the figures are of the runs whose flow met the box."""
    if not outcomes:
        return "-"
    met = [o for o in outcomes if o.met_box is not False]
    clean = [o for o in outcomes if o.met_box is False]
    hop = sum(o.hop_right(truth) for o in met)
    bracket = sum(o.bracket_holds(truth) for o in met)
    text = f"{hop}/{len(met)} · {bracket}/{len(met)}"
    if clean:
        wrong = sum(o.verdict != "clean" for o in clean)
        text += f" (+{len(clean)} clean{f', {wrong} not said clean' if wrong else ''})"
    return text


def multipath_line(outcomes: list[Outcome]) -> str | None:
    """Under `ecmp`: how often the document's `multipath.seen` agreed with the lab (the trace's
    copies expired at both routers of the pair, or at one)."""
    judged = [o for o in outcomes if o.both_branches is not None and o.multipath_said is not None]
    if not judged:
        return None
    agree = sum(o.multipath_said == o.both_branches for o in judged)
    return f"multipath said as the lab saw it: {agree}/{len(judged)} ({sum(o.both_branches for o in judged)} with both)"


def table(results: dict[tuple[str, str, int], list[Outcome]], kinds: list[str], conditions: list[str],
          hops: list[int]) -> str:
    """The markdown table: one row per box kind and condition, one column per hop."""
    from tabulate import tabulate

    rows = [[kind, condition, *(cell(results.get((kind, condition, hop), []), hop) for hop in hops)]
            for kind in kinds for condition in conditions]
    return tabulate(rows, headers=["box", "condition", *(f"hop {hop}" for hop in hops)], tablefmt="github")


def write_readme(path: Path, text: str) -> None:
    content = path.read_text()
    start, end = content.index(MARKERS[0]), content.index(MARKERS[1])
    path.write_text(content[:start + len(MARKERS[0])] + "\n" + text + "\n" + content[end:])


def lab_for(condition: str, hop: int) -> tuple[Lab, str]:
    """The lab of one (condition, hop) and the namespace the box goes in."""
    if condition == "ecmp":
        routers = max(ROUTERS, hop + 1)
        lab = Lab(routers=routers, delay_ms=50, ecmp_hop=max(hop, 2)).up()
        return lab, (lab.twin_ns if hop >= 2 else lab.router_ns(hop))
    lab = Lab(routers=ROUTERS, delay_ms=50).up()
    if condition == "loss3":
        lab.add_loss(1, LOSS_PERCENT)
    return lab, lab.router_ns(hop)


# an innocuous request from one source port (None: any), aborted with a reset so that no TIME-WAIT
# holds the port; prints the status line's code, or nothing
INNOCUOUS = """
import socket, struct, sys
address, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.settimeout(1.0)
try:
    if port:
        s.bind(("", port))
    s.connect((address, 80))
    s.sendall(("GET / HTTP/1.1\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n" % sys.argv[3]).encode())
    print(s.recv(64).split(b" ")[1].decode())
except (OSError, IndexError):
    pass
finally:
    s.close()
"""


def wait_until_open(lab: Lab, limit: float, port: int | None = None) -> bool:
    """Poll an innocuous request until it passes (a residual block ended), bounded by `limit`.
    Under ECMP the block holds on the box's branch only, and a request from a port of the other
    branch passes at once: `port`, a source port the box's branch forwarded, keeps the poll on
    that branch (a plain request must pass too)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        codes = [lab.exec(lab.client_ns, [sys.executable, "-c", INNOCUOUS, lab.server_addr, str(source or 0),
                                          CONTROL_HOST], check=False).stdout.strip() for source in {None, port}]
        if all(code == "200" for code in codes):
            return True
        time.sleep(0.5)  # pacing between polls, bounded by the deadline
    return False


def run_cell(lab: Lab, box_ns: str, kind: str, runs: int, timeout: float, keep: Path | None = None,
             name: str = "", truth_hop: int | None = None) -> list[Outcome]:
    """`runs` traces against one box; with `keep`, the document and stderr of every run that
    did not name the hop go to `keep/<name>-<run>.json` (and `.err`), to be read."""
    module, args = KINDS[kind]
    proc = lab.spawn(box_ns, [sys.executable, "-m", f"netns.boxes.{module}", *args], name=module)
    argv = [sys.executable, "-m", "probe", "trace", f"http://{TRIGGER_HOST}/", "--resolve",
            f"{TRIGGER_HOST}:80:{lab.server_addr}", "--json"]
    truth = EcmpTruth(lab) if lab.ecmp_hop is not None and box_ns == lab.twin_ns else None
    polite = Politeness(lab)
    outcomes = []
    witness = None  # a source port the box's branch forwarded in an earlier run (ECMP)
    try:
        for _ in range(runs):
            if module == "residual" and not wait_until_open(lab, RESIDUAL_S + 15, witness):
                print(f"  {kind}: still blocked {RESIDUAL_S + 15:g} s after the last run", file=sys.stderr)
            if truth is not None:
                truth.reset()
            polite.reset()
            began = time.monotonic()
            done = lab.exec(lab.client_ns, argv, check=False, timeout=timeout)
            outcome = replace(outcome_of(done.stdout, done.returncode), seconds=time.monotonic() - began,
                              packets_sent=polite.packets())
            left = polite.left_open()
            outcome = replace(outcome, left_open=len(left), left_states=left)
            if keep is not None and outcome.hop != truth_hop:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{name}-{len(outcomes)}.json").write_text(done.stdout)
                (keep / f"{name}-{len(outcomes)}.err").write_text(done.stderr)
            if truth is not None:
                _, twin_ports, both = truth.read()
                witness = min(twin_ports) if twin_ports else witness
                if outcome.port is not None:
                    outcome = replace(outcome, met_box=outcome.port in twin_ports, both_branches=both)
            outcomes.append(outcome)
    finally:
        lab.stop(proc)
    return outcomes


def parse_list(text: str, allowed, what: str) -> list:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(map(str, allowed))}")
    return items


def measure_cell(kind: str, condition: str, hop: int, runs: int, timeout: float,
                 keep: Path | None = None) -> list[Outcome]:
    """One cell in its own lab (a worker's whole job: labs are named by pid, so cells run side by
    side without meeting)."""
    with exit_on_signals():
        lab, box_ns = lab_for(condition, hop)
        try:
            return run_cell(lab, box_ns, kind, runs, timeout, keep, f"{KIND_KEYS_BY_NAME[kind]}-{condition}-hop{hop}",
                            truth_hop=hop)
        finally:
            lab.down()


def report_cell(kind: str, condition: str, hop: int, outcomes: list[Outcome]) -> None:
    print(f"{kind:16s} {condition:5s} hop {hop}: {cell(outcomes, hop)}", file=sys.stderr, flush=True)
    for line in (multipath_line(outcomes), politeness_line(outcomes)):
        if line:
            print(f"{'':16s} {condition:5s} hop {hop}: {line}", file=sys.stderr, flush=True)


def save_cell(path: Path, kind: str, condition: str, hop: int, outcomes: list[Outcome]) -> None:
    with path.open("a") as out:
        out.write(json.dumps({"kind": kind, "condition": condition, "hop": hop,
                              "outcomes": [asdict(o) for o in outcomes]}) + "\n")


def load_cells(paths: list[Path]) -> dict[tuple[str, str, int], list[Outcome]]:
    """Cells saved by earlier runs (`--save`); a cell measured twice keeps its last measurement."""
    results = {}
    for path in paths:
        for line in path.read_text().splitlines():
            saved = json.loads(line)
            outcomes = [Outcome(**{**o, "bracket": tuple(o["bracket"]) if o["bracket"] else None,
                                   "left_states": tuple(o.get("left_states", ()))})
                        for o in saved["outcomes"]]
            results[(saved["kind"], saved["condition"], saved["hop"])] = outcomes
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--kinds", default=",".join(KIND_KEYS),
                        type=lambda text: [KIND_KEYS[k] for k in parse_list(text, KIND_KEYS, "box kind")],
                        help=f"comma-separated, from {', '.join(KIND_KEYS)}")
    parser.add_argument("--hops", default="1,2,3,4", type=lambda text: [int(h) for h in parse_list(
        text, [str(h) for h in range(1, ROUTERS + 1)], "hop")])
    parser.add_argument("--conditions", default=",".join(CONDITIONS),
                        type=lambda text: parse_list(text, CONDITIONS, "condition"))
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds one trace may take")
    parser.add_argument("--jobs", type=int, default=1,
                        help="cells measured side by side, each in its own lab (traces mostly wait on the "
                             "path; watch the load, a starved box answers late)")
    parser.add_argument("--save", type=Path, help="append each cell's runs to this file as it finishes (JSON lines)")
    parser.add_argument("--load", type=Path, action="append", default=[],
                        help="cells saved by earlier runs, shown in the table (repeatable; with --runs 0: nothing run)")
    parser.add_argument("--keep", type=Path, help="keep the document and stderr of every run whose hop was wrong here")
    parser.add_argument("--readme", type=Path, help="also write the table between the README's accuracy markers")
    args = parser.parse_args()
    if not 0 <= args.runs <= 1000 or not 1 <= args.jobs <= 16:
        parser.error("--runs must be from 0 to 1000, --jobs from 1 to 16")
    command = " ".join(["python3 bench/locate_accuracy.py", *sys.argv[1:]])
    results = load_cells(args.load)
    cells = [(kind, condition, hop) for condition in args.conditions for hop in args.hops for kind in args.kinds]
    started = time.monotonic()
    if args.runs:
        with exit_on_signals(), concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(measure_cell, *key, args.runs, args.timeout, args.keep): key for key in cells}
            for future in concurrent.futures.as_completed(futures):
                key = futures[future]
                try:
                    results[key] = future.result()
                except Exception as error:  # one cell's lab failed: say so, measure the others
                    print(f"{key[0]:16s} {key[1]:5s} hop {key[2]}: not measured: {error}", file=sys.stderr, flush=True)
                    continue
                report_cell(*key, results[key])
                if args.save is not None:
                    save_cell(args.save, *key, results[key])
    shown = sorted({key[0] for key in results}, key=list(KINDS).index)
    conditions = [c for c in CONDITIONS if any(key[1] == c for key in results)]
    hops = sorted({key[2] for key in results})
    elapsed = f" ({time.monotonic() - started:.0f} s)" if args.runs else ""
    text = (f"_Made by `{command}` on {datetime.date.today().isoformat()}{elapsed}; "
            f"each cell: `hop` right · `bracket` holds the box, of the runs._\n\n"
            + table(results, shown, conditions, hops))
    print(text)
    if args.readme is not None:
        write_readme(args.readme, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
