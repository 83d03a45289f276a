"""`python3 -m netns up [--scenario NAME] [--routers N] [--delay-ms D]` builds a lab (with the
scenario's box) and keeps it up, in the background, until `python3 -m netns down` (`--foreground`:
until Ctrl-C); `python3 -m netns run [SCENARIO ...] [--repeat N]` runs scenarios and prints the
results table; `python3 -m netns demo` shows the field report reproduced; `python3 -m netns
cleanup` deletes what dead labs left behind."""

from __future__ import annotations

import argparse
import sys

from netns.lab import cleanup_stale, exit_on_signals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m netns", description=__doc__.split(";")[0])
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build a lab (with a scenario's box) and keep it up until `down`")
    up.add_argument("--routers", type=int, default=4)
    up.add_argument("--delay-ms", type=float, default=50.0, help="added round-trip time")
    up.add_argument("--scenario", metavar="NAME", help="a scenario of netns/scenarios (name or number): its lab, "
                                                       "with its box at its hop")
    up.add_argument("--family", type=int, choices=(4, 6), default=4, help="the scenario's probe command over IPv4 "
                                                                         "or IPv6")
    up.add_argument("--foreground", action="store_true", help="keep the lab in this process until Ctrl-C or SIGTERM")
    sub.add_parser("down", help="take down every lab `up` keeps")
    sub.add_parser("cleanup", help="delete namespaces of labs whose owner has died")
    run = sub.add_parser("run", help="run scenarios against probe check and print the results table")
    run.add_argument("scenarios", nargs="*", help="names or numbers (default: all)")
    run.add_argument("--repeat", type=int, default=1)
    run.add_argument("--family", type=int, choices=(4, 6), default=4,
                     help="run over IPv4 (default) or IPv6 (only the scenarios whose file lists ipv6)")
    run.add_argument("--json-dir", help="keep every probe document here")
    run.add_argument("--record", help="write each run's capture (pcap) and verdict (JSON) here, for golden tests")
    run.add_argument("--record-server", help="also capture the first run on the server (tcpdump): NAME.server.pcap")
    run.add_argument("--readme", help="write the table into this file between its scenario-table markers")
    sub.add_parser("demo", help="reproduce the field report and show what probe check says")
    args = p.parse_args(argv)

    if args.command == "run":
        return _run(args)
    if args.command == "demo":
        return _demo()

    if args.command == "cleanup":
        for ns in cleanup_stale():
            print(f"deleted {ns}")
        return 0

    from netns import held

    if args.command == "down":
        return held.down()
    if args.foreground:
        return held.hold(args.routers, args.delay_ms, args.scenario, args.family)
    rest = ["--routers", str(args.routers), "--delay-ms", str(args.delay_ms), "--family", str(args.family)]
    return held.up(rest + (["--scenario", args.scenario] if args.scenario else []))


def _run(args) -> int:
    import json
    from pathlib import Path

    from netns.runner import load_all, results_table, run_scenario

    scenarios = load_all(args.scenarios)
    if not scenarios:
        print("no such scenario", file=sys.stderr)
        return 2
    skipped = [s.name for s in scenarios if args.family not in s.families]
    if skipped and args.scenarios:
        print(f"not over IPv{args.family} (their files do not list it): {', '.join(skipped)}", file=sys.stderr)
    scenarios = [s for s in scenarios if args.family in s.families]
    if not scenarios:
        return 2
    results, failed_dir = {}, None
    with exit_on_signals():
        for scenario in scenarios:
            runs = run_scenario(scenario, args.repeat, record=Path(args.record) if args.record else None,
                                record_server=Path(args.record_server) if args.record_server else None,
                                family=args.family)
            results[scenario.name] = runs
            passed = sum(r.passed for r in runs)
            print(f"{scenario.name}: {passed}/{len(runs)} passed", file=sys.stderr, flush=True)
            for problems in sorted({"; ".join(r.problems) for r in runs if not r.passed}):
                print(f"  {problems}", file=sys.stderr)
            if args.json_dir:
                folder = Path(args.json_dir)
                folder.mkdir(parents=True, exist_ok=True)
                for i, r in enumerate(runs):
                    (folder / f"{scenario.name}-{i}.json").write_text(json.dumps(r.document, indent=1))
            elif passed < len(runs):  # a failed run's document is evidence: never lose it
                import tempfile

                folder = Path(failed_dir or tempfile.mkdtemp(prefix="netns-failed-"))
                failed_dir = str(folder)
                for i, r in enumerate(runs):
                    if not r.passed:
                        (folder / f"{scenario.name}-{i}.json").write_text(json.dumps(r.document, indent=1))
                print(f"  the failed runs' documents are in {folder} (load average now: "
                      f"{Path('/proc/loadavg').read_text().split()[0]})", file=sys.stderr)
    table = results_table(scenarios, results)
    print(table)
    if args.readme:
        _write_table(Path(args.readme), table, args.repeat, args.family)
    gaps = {s.name for s in scenarios if s.known_gap}
    return 0 if all(r.passed for name, runs in results.items() if name not in gaps for r in runs) else 1


def _write_table(readme, table: str, repeats: int, family: int = 4) -> None:
    """Replace what stands between the markers (the IPv6 table has its own): the README's table
    is the runner's output."""
    import datetime

    marker = "scenario-table" if family == 4 else "scenario-table-ipv6"
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{readme}: no {start} ... {end} markers")
    option = "" if family == 4 else f" --family {family}"
    stamp = (f"_Made by `python3 -m netns run{option} --repeat {repeats} --readme README.md` on "
             f"{datetime.date.today().isoformat()}._")
    head, rest = text.split(start, 1)
    readme.write_text(f"{head}{start}\n{stamp}\n\n{table}\n{end}{rest.split(end, 1)[1]}")


def _demo() -> int:
    from netns.runner import ScenarioLab, load_all

    scenario = load_all(["06-field-report"])[0]
    print(f"scenario: {scenario.description}", flush=True)
    with exit_on_signals(), ScenarioLab(scenario) as lab:
        argv = [a for a in lab.probe_argv() if a != "--json"]
        print("$ " + " ".join(["probe"] + argv[3:]), flush=True)
        completed = lab.lab.exec(lab.lab.client_ns, argv, check=False, timeout=120)
        print(completed.stdout)
        print(f"(exit status {completed.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
