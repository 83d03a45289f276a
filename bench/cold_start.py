#!/usr/bin/env python3
"""Cold start of the CLI: is `probe --help` about as fast as importing typer alone?

Times, over RUNS fresh processes each (median and min, wall clock):
  - python -c 'import typer'           the floor: typer is what every command needs
  - python -m probe --help
  - probe --help                        the console script next to this interpreter
  - probe --help via PATH               only if PATH finds another file (e.g. a pyenv shim)
  - python -m probe check --help
and then runs the --help commands under `python -X importtime` to show whether scapy (or
any other heavy module) is imported just to print help, and which imports cost most.

Run by hand from the repository root:  python3 bench/cold_start.py [--runs 20]
Sends no packets; needs no root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tabulate import tabulate

HEAVY = ("scapy", "dpkt", "h11", "tabulate", "pydantic", "probe.engine", "probe.protocol.craft", "probe.network.single")


def console_script() -> str | None:
    script = Path(sys.executable).parent / "probe"
    return str(script) if script.exists() else None


def timed(argv: list[str], runs: int) -> list[float]:
    subprocess.run(argv, capture_output=True, check=True)  # warm the page cache once
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append((time.perf_counter() - started) * 1000)
    return times


def importtime(argv_after_python: list[str]) -> list[tuple[str, int, int]]:
    """(module, self us, cumulative us) for every import `python -X importtime ...` reports."""
    result = subprocess.run([sys.executable, "-X", "importtime", *argv_after_python],
                            capture_output=True, text=True, check=True)
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        rows.append((name.strip(), int(own), int(cumulative)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    python = sys.executable
    commands = [("python -c 'import typer'", [python, "-c", "import typer"]),
                ("python -m probe --help", [python, "-m", "probe", "--help"])]
    script = console_script()
    if script:
        commands.append((f"probe --help ({script})", [script, "--help"]))
    on_path = shutil.which("probe")
    if on_path and (not script or os.path.realpath(on_path) != os.path.realpath(script)):
        commands.append((f"probe --help (PATH: {on_path})", [on_path, "--help"]))
    commands.append(("python -m probe check --help", [python, "-m", "probe", "check", "--help"]))

    rows, floor = [], None
    for label, argv in commands:
        times = timed(argv, args.runs)
        median = statistics.median(times)
        floor = floor if floor is not None else median
        rows.append([label, f"{median:.1f}", f"{min(times):.1f}", f"{max(times):.1f}",
                     f"{median - floor:+.1f}"])
    print(f"wall clock of {args.runs} fresh processes each, ms ({python})")
    print(tabulate(rows, headers=["command", "median", "min", "max", "vs import typer"],
                   tablefmt="simple", disable_numparse=True))

    for label, after_python in [("python -m probe --help", ["-m", "probe", "--help"]),
                                ("python -m probe check --help", ["-m", "probe", "check", "--help"])] + (
            [("probe --help (console script)", [script, "--help"])] if script else []):
        imports = importtime(after_python)
        names = {name for name, _, _ in imports}
        heavy = [h for h in HEAVY if any(n == h or n.startswith(h + ".") for n in names)]
        top = sorted(((n, c) for n, _, c in imports if "." not in n), key=lambda x: -x[1])[:6]
        total = sum(own for _, own, _ in imports)
        print(f"\n-X importtime, {label}: {len(imports)} modules, {total / 1000:.1f} ms in imports")
        print(f"  scapy imported: {'YES' if any(n.split('.')[0] == 'scapy' for n in names) else 'no'}")
        print(f"  heavy modules imported: {', '.join(heavy) if heavy else 'none'}")
        print("  costliest top-level imports (cumulative ms): "
              + ", ".join(f"{n} {c / 1000:.1f}" for n, c in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
