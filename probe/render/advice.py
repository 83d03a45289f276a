"""What to do next, after a verdict: who can fix it (the site's host, the network at hop N, your
own firewall). A fixed table of verdicts to short sentences; it judges nothing itself."""

from __future__ import annotations

FIRST_HOP = 1  # hop 1 is the first router: the network the probe runs in


def next_step(verdict: str, direction: str | None = None, hop: int | None = None,
              address: str | None = None, command: str = "check") -> str | None:
    """One or two short sentences; None when there is nothing to do (`clean`, `expired`)."""
    where = f"hop {hop}" + (f" ({address})" if address else "")
    trace = "run probe trace on the same URL to find the hop" if command != "trace" else "the trace found no hop"
    owner = ("your own network (its firewall or proxy) runs it: check that first" if hop == FIRST_HOP
             else "ask the network that runs it (your provider, or theirs); the site's host cannot fix it")
    if verdict in ("middlebox-reset", "middlebox-response"):
        if hop is not None:
            return f"Next: the box is at {where}: {owner}."
        return f"Next: {trace}, then ask the network that runs it; the site's host cannot fix it."
    if verdict == "dropped":
        if hop is not None:
            return f"Next: the request is swallowed at {where}: {owner}."
        return (f"Next: {trace}. If the request reaches the server, ask the site's host whether its firewall "
                f"drops it.")
    if verdict == "unreachable":
        return (f"Next: the error comes from {where}: {owner}." if hop is not None
                else "Next: ask the network that sent the ICMP error why it cannot reach the server.")
    if verdict == "server-reset":
        return "Next: ask the site's host. Its server refused the connection (port closed) or the application aborted it."
    if verdict == "no-answer":
        return ("Next: check the address and port. If they are right, ask the site's host whether the server is up "
                "and whether a firewall drops the SYN.")
    if verdict == "ambiguous-reset":
        return f"Next: {trace}: it tells a box before the server from the server itself."
    return None
