"""`python3 -m netns up [--scenario NAME]` and `python3 -m netns down`: a lab (with a scenario's
box, when one is named) kept up for work by hand, in the background, until `down`.

`up` starts a holder process (`up --foreground`, in a session of its own) and waits until it
has built the lab and written its state file, `MARKER_DIR/held-PID.json`: who holds the lab
(PID and start time, so a reused PID is never taken for it), the scenario, its namespaces, and
the lines that say how to use it. `down` sends each live holder SIGTERM (the lab's own signal
handling tears it down: the box, the servers, the namespaces) and waits until the holder has
exited and its namespaces are gone; a state file whose holder died is removed with what the
dead lab left (`cleanup_stale`). Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from netns.lab import MARKER_DIR, Lab, _netns_list, _owner_alive, _process_starttime, cleanup_stale, exit_on_signals

READY_TIMEOUT = 120.0  # seconds for the holder to build the lab and start the box
STOP_TIMEOUT = 60.0  # seconds for a holder to tear its lab down


def state_path(pid: int) -> Path:
    return MARKER_DIR / f"held-{pid}.json"


def describe(lab: Lab, scenario=None, probe_argv: list[str] | None = None) -> list[str]:
    """What `up` prints: the namespaces and addresses, the box, and a command to run."""
    lines = [f"client  {lab.client_ns}  {lab.client_addr}"]
    lines += [f"r{k:<6} {lab.router_ns(k)}  {lab.router_addr(k)}" for k in range(1, lab.routers + 1)]
    lines.append(f"server  {lab.server_ns}  {lab.server_addr}  (:80 nginx, :8080 reset, :81 closed; "
                 f":443 nginx TLS, :8443 reset after the ClientHello, :444 closed)")
    lines.append(f"CA      {lab.ca_file}")
    if scenario is not None:
        hop = lab.routers if scenario.box_hop == "last" else scenario.box_hop
        lines.append(f"scenario {scenario.name}: {scenario.description}")
        if scenario.box:
            lines.append(f"box     {scenario.box} at hop {hop} ({lab.router_ns(int(hop))})")
        lines.append("e.g.  ip netns exec " + lab.client_ns + " " + " ".join(probe_argv or []))
    else:
        lines.append(f"e.g.  ip netns exec {lab.client_ns} curl http://{lab.server_addr}/")
    return lines


def hold(routers: int, delay_ms: float, scenario_name: str | None, family: int) -> int:
    """Build the lab (and the scenario's box), write the state file, and wait for a signal."""
    from netns.runner import ScenarioLab, load_all

    path = state_path(os.getpid())
    with exit_on_signals():
        try:
            if scenario_name is not None:
                found = load_all([scenario_name])
                if len(found) != 1:
                    print(f"no such scenario: {scenario_name}", file=sys.stderr)
                    return 2
                try:
                    held = ScenarioLab(found[0], family)
                except ValueError as error:  # not over this family
                    print(error, file=sys.stderr)
                    return 2
                held.__enter__()
                lab = held.lab
                argv = [a if a != sys.executable else "python3" for a in held.probe_argv()]
                argv = [a for a in argv if a != "--json"]
                lines = describe(lab, found[0], argv)
                down = held.__exit__
            else:
                lab = Lab(routers, delay_ms=delay_ms).up()
                lines, down = describe(lab), lambda *exc: lab.down()
            try:
                MARKER_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
                path.write_text(json.dumps({"pid": os.getpid(), "starttime": _process_starttime(os.getpid()),
                                            "scenario": scenario_name, "namespaces": lab.namespaces,
                                            "lines": lines}))
                print("\n".join(lines), flush=True)
                threading.Event().wait()  # until a signal raises SystemExit
            finally:
                down(None, None, None)
        finally:
            path.unlink(missing_ok=True)
    return 0


def up(argv_rest: list[str]) -> int:
    """Start a holder in the background; return once its lab is up (0) or it failed (1)."""
    log = MARKER_DIR / f"held-up-{os.getpid()}.log"
    MARKER_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(log, "w") as handle:
        holder = subprocess.Popen([sys.executable, "-m", "netns", "up", "--foreground", *argv_rest],
                                  stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                  start_new_session=True, cwd=str(Path(__file__).resolve().parent.parent))
    deadline = time.monotonic() + READY_TIMEOUT
    path = state_path(holder.pid)
    try:
        while not path.exists():
            if holder.poll() is not None:
                print(log.read_text().rstrip() or f"the lab could not be built (exit {holder.returncode})",
                      file=sys.stderr)
                return 1 if holder.returncode in (0, None) else holder.returncode
            if time.monotonic() > deadline:
                holder.send_signal(signal.SIGTERM)  # our own child: its lab goes with it
                holder.wait(STOP_TIMEOUT)
                print(f"the lab was not up after {READY_TIMEOUT:.0f} s; stopped", file=sys.stderr)
                return 1
            time.sleep(0.1)
        state = json.loads(path.read_text())
    finally:
        log.unlink(missing_ok=True)
    print("\n".join(state["lines"]))
    print(f"kept up by process {holder.pid}; `python3 -m netns down` takes it down", flush=True)
    return 0


def down() -> int:
    """Stop every lab `up` keeps; 0 when all are gone (also when there was none)."""
    states = sorted(MARKER_DIR.glob("held-*.json")) if MARKER_DIR.is_dir() else []
    problems = 0
    for path in states:
        try:
            state = json.loads(path.read_text())
            pid, starttime = int(state["pid"]), state.get("starttime")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        what = f"scenario {state['scenario']}" if state.get("scenario") else "lab"
        if _owner_alive(pid, starttime):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while _owner_alive(pid, starttime) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _owner_alive(pid, starttime):
                print(f"{what} (process {pid}) still running after {STOP_TIMEOUT:.0f} s", file=sys.stderr)
                problems += 1
                continue
        path.unlink(missing_ok=True)
        left = set(state.get("namespaces", [])) & set(_netns_list())
        if left:
            cleanup_stale()  # the holder died without tearing down: what it left
            left = set(state.get("namespaces", [])) & set(_netns_list())
        if left:
            print(f"{what}: namespaces left: {', '.join(sorted(left))}", file=sys.stderr)
            problems += 1
        else:
            print(f"{what} down (process {pid})")
    if not states:
        print("no lab is kept up")
    return 1 if problems else 0
