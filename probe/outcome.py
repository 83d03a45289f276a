"""The outcome vocabulary, in one place: exit statuses and their severity, which verdicts are
interference, and the mapping to monitoring states. Every command and output reads it here
(issue 12: the exit codes were bare numbers in three modules, ordered two ways).

May import only the engine's model (the verdict and origin words live there, beside the code
that decides them). Pure: no I/O.
"""

from __future__ import annotations

import enum
from typing import Iterable

from probe.engine.model import ORIGINS, VERDICTS  # noqa: F401 (the words, re-exported for readers of this module)


class ExitStatus(enum.IntEnum):
    """The contract's exit codes."""

    CLEAN = 0  # clean (or expired: a TTL-limited request died at a router, as a trace's should)
    FAILED = 1  # the tool could not do its job: privilege, a missing tool, an unreadable file, no route
    USAGE = 2  # bad arguments or options
    INTERFERENCE = 3  # something between us and the server interfered
    TARGET_FAILED = 4  # the target failed without evidence of interference


# Which status wins when several results are summed up (batch, analyze of many flows), least
# severe first: interference is what the run is for, then "could not measure", then a target that
# failed on its own, then clean. A usage error ends a run before any result exists.
SEVERITY = (ExitStatus.CLEAN, ExitStatus.TARGET_FAILED, ExitStatus.USAGE, ExitStatus.FAILED,
            ExitStatus.INTERFERENCE)
_RANK = {status: rank for rank, status in enumerate(SEVERITY)}

INTERFERENCE = frozenset({"middlebox-reset", "middlebox-response"})  # interference wherever it was seen
LOCATED_INTERFERENCE = frozenset({"dropped", "unreachable"})  # interference only when a hop before the server is named
CLEAN = frozenset({"clean", "expired"})


def exit_status(verdict: str, hop: int | None) -> ExitStatus:
    """The contract's exit status for one verdict."""
    if verdict in CLEAN:
        return ExitStatus.CLEAN
    if verdict in INTERFERENCE or (verdict in LOCATED_INTERFERENCE and hop is not None):
        return ExitStatus.INTERFERENCE
    return ExitStatus.TARGET_FAILED


def is_interference(verdict: str, hop: int | None) -> bool:
    return exit_status(verdict, hop) is ExitStatus.INTERFERENCE


def worst(codes: Iterable[int]) -> int:
    """The most severe of several exit codes (SEVERITY's order); 0 for none."""
    return max((ExitStatus(code) for code in codes), key=_RANK.__getitem__, default=ExitStatus.CLEAN)


class NagiosState(enum.IntEnum):
    """A Nagios/Icinga plugin's exit states (Nagios Plugin Development Guidelines)."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


# interference anywhere is CRITICAL, a target that failed on its own WARNING, a target that
# could not be measured UNKNOWN; the worst wins in the order CRITICAL, WARNING, UNKNOWN, OK
NAGIOS_FOR_EXIT = {ExitStatus.CLEAN: NagiosState.OK, ExitStatus.INTERFERENCE: NagiosState.CRITICAL,
                   ExitStatus.TARGET_FAILED: NagiosState.WARNING, ExitStatus.FAILED: NagiosState.UNKNOWN,
                   ExitStatus.USAGE: NagiosState.UNKNOWN}
NAGIOS_ORDER = (NagiosState.OK, NagiosState.UNKNOWN, NagiosState.WARNING, NagiosState.CRITICAL)
_NAGIOS_RANK = {state: rank for rank, state in enumerate(NAGIOS_ORDER)}


def nagios_state(codes: Iterable[int]) -> NagiosState:
    """The plugin state for a set of `probe` exit codes."""
    return worse_state(*(NAGIOS_FOR_EXIT.get(code, NagiosState.UNKNOWN) for code in codes))


def worse_state(*states: int) -> NagiosState:
    """The worst of plugin states, in the order CRITICAL, WARNING, UNKNOWN, OK; OK for none."""
    return max((NagiosState(state) for state in states), key=_NAGIOS_RANK.__getitem__, default=NagiosState.OK)
