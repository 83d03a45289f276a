import os
import signal
import sys


def _interrupted_while_starting(signum, frame):
    """Until the CLI installs its own handlers nothing is set up (no guard, no socket): say so and go,
    rather than a KeyboardInterrupt traceback from the middle of an import."""
    sys.stderr.write("probe: interrupted\n" if signum == signal.SIGINT else "probe: terminated\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def run() -> None:
    """`python -m probe` and the `probe` command: handlers first, then the (slower) imports."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupted_while_starting)
    from probe.cli import main

    main()


if __name__ == "__main__":
    run()
