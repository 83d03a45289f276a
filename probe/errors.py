"""Exceptions mean "could not measure"; network outcomes are results, never exceptions."""


class ProbeError(Exception):
    """The tool could not do its job (privilege, missing tool, unreadable file, no route): exit 1."""

    exit_code = 1


class UsageError(ProbeError):
    """Bad arguments or options: exit 2."""

    exit_code = 2
