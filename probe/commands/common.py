"""What every command shares: the contract's exit codes (decided here and only here), the
stderr channel for people, and output files opened before any probing starts."""

from __future__ import annotations

import sys

from probe.errors import ProbeError

EXIT_CLEAN, EXIT_FAILED, EXIT_USAGE, EXIT_INTERFERENCE, EXIT_TARGET_FAILED = 0, 1, 2, 3, 4


def exit_code_for(verdict: str, hop: int | None) -> int:
    """The contract's exit status for one verdict."""
    if verdict == "clean":
        return EXIT_CLEAN
    if verdict in ("middlebox-reset", "middlebox-response"):
        return EXIT_INTERFERENCE
    if verdict in ("dropped", "unreachable") and hop is not None:
        return EXIT_INTERFERENCE
    return EXIT_TARGET_FAILED


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def open_output(path: str | None):
    if path is None:
        return None
    try:
        return open(path, "wb")
    except OSError as error:
        raise ProbeError(f"cannot write {path}: {error.strerror}") from None
