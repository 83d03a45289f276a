"""`python3 -m netns up [--routers N] [--delay-ms D]` builds a lab and keeps it until Ctrl-C
or SIGTERM; `python3 -m netns cleanup` deletes what dead labs left behind."""

from __future__ import annotations

import argparse
import sys
import threading

from netns.lab import Lab, cleanup_stale, exit_on_signals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m netns", description=__doc__.split(";")[0])
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build a lab and keep it until Ctrl-C / SIGTERM")
    up.add_argument("--routers", type=int, default=4)
    up.add_argument("--delay-ms", type=float, default=50.0, help="added round-trip time")
    sub.add_parser("cleanup", help="delete namespaces of labs whose owner has died")
    args = p.parse_args(argv)

    if args.command == "cleanup":
        for ns in cleanup_stale():
            print(f"deleted {ns}")
        return 0

    with exit_on_signals(), Lab(args.routers, delay_ms=args.delay_ms) as lab:
        print(f"client  {lab.client_ns}  {lab.client_addr}")
        for k in range(1, lab.routers + 1):
            print(f"r{k:<6} {lab.router_ns(k)}  {lab.router_addr(k)}")
        print(f"server  {lab.server_ns}  {lab.server_addr}  (:80 nginx, :8080 reset, :81 closed)")
        print(f"e.g.  ip netns exec {lab.client_ns} curl http://{lab.server_addr}/", flush=True)
        threading.Event().wait()  # until a signal raises SystemExit
    return 0


if __name__ == "__main__":
    sys.exit(main())
