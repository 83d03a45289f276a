"""Multipath seen in a trace: a time-exceeded from another router at a TTL than before.

Theory of operation. Routers balance flows over equal-cost paths by hashing the fields of the
flow (RFC 2992; Linux hashes the 5-tuple with `fib_multipath_hash_policy=1`), so two
connections to one server that differ only in the source port may cross different routers at
the same TTL. Paris traceroute (Augustin et al., "Avoiding traceroute anomalies with Paris
traceroute", IMC 2006) showed that a traceroute changing its ports sees such routers as one
hop and draws links that do not exist; Monocle (CCS 2024) found that routing multipath changed
the censorship measured toward 42% of the IPs it studied. A trace that opens a fresh connection
per copy therefore has to notice when its copies took different paths: a copy that expired at
router A and a later copy with the same TTL that expired at router B is direct evidence of it
(between copies of one role, or between the trigger and the control of one TTL).

Only a time-exceeded counts: it names the router at exactly that TTL. An ICMP unreachable may
come from any router past it, and a copy that vanished names nobody.

Known false positives: a router with several interfaces answers from the one the copy came in
on (Linux with `icmp_errors_use_inbound_ifaddr`, many vendors by default), so one router reached
over two upstream paths shows two addresses at its TTL: the paths still differ before it, so
"multipath" holds, but the hop that "varied" is the first one whose address differs, not
necessarily where the paths split. A route that changed between two copies (not load balancing)
reads the same way, and is as much a reason to distrust a comparison of those copies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from probe.engine.trace import Fate, HopRow


@dataclass(frozen=True)
class Expiry:
    """One copy that expired at a router: its TTL, whose copy it was, and the router."""

    ttl: int
    role: str  # "trigger" or "control"
    router: str


@dataclass(frozen=True)
class VariedHop:
    """A TTL at which copies expired at more than one router."""

    ttl: int
    routers: tuple[str, ...]  # in the order first seen
    between: str  # "trigger and control", "copies of the trigger", "copies of the control", or several joined


@dataclass(frozen=True)
class Multipath:
    seen: bool
    hops: tuple[VariedHop, ...]
    evidence: tuple[str, ...]

    @property
    def varied_ttls(self) -> tuple[int, ...]:
        return tuple(hop.ttl for hop in self.hops)


NOT_SEEN = Multipath(False, (), ())


def expiries(copies: Iterable[tuple[int, str, Fate]]) -> list[Expiry]:
    """The copies (ttl, role, fate), in the order they were sent, that expired at a router."""
    return [Expiry(ttl, role, fate.router) for ttl, role, fate in copies
            if fate.expired and fate.router is not None]


def multipath_of(copies: Iterable[tuple[int, str, Fate]]) -> Multipath:
    """Multipath evidence from every copy of a trace, (ttl, role, fate) in sending order: each TTL
    at which time-exceeded came from more than one router, and between which copies."""
    routers: dict[int, list[str]] = {}
    roles: dict[int, dict[str, set[str]]] = {}
    for seen in expiries(copies):
        at = routers.setdefault(seen.ttl, [])
        if seen.router not in at:
            at.append(seen.router)
        roles.setdefault(seen.ttl, {}).setdefault(seen.role, set()).add(seen.router)
    hops = []
    for ttl in sorted(routers):
        if len(routers[ttl]) < 2:
            continue
        by_role = roles[ttl]
        between = [f"copies of the {role}" for role in ("trigger", "control") if len(by_role.get(role, ())) > 1]
        if by_role.get("trigger") and by_role.get("control") and by_role["trigger"] != by_role["control"]:
            between.insert(0, "trigger and control")
        hops.append(VariedHop(ttl, tuple(routers[ttl]), ", ".join(between)))
    if not hops:
        return NOT_SEEN
    evidence = tuple(f"at TTL {hop.ttl} time-exceeded came from {' and '.join(hop.routers)} ({hop.between}): "
                     f"the copies took different paths (load balancing, or a route that changed)" for hop in hops)
    return Multipath(True, tuple(hops), evidence)


def path_changed(earlier: Iterable[tuple[int, str, Fate]], ttl: int, fate: Fate) -> bool:
    """Whether a copy with this TTL and fate expired at another router than a copy of the same TTL
    sent before it (`earlier`: (ttl, role, fate) in sending order): the trace's cue to repeat the
    TTL's pair, as it does when the fates disagree."""
    if not fate.expired or fate.router is None:
        return False
    return any(seen.ttl == ttl and seen.router != fate.router for seen in expiries(earlier))


def multipath_from_rows(rows: Iterable[HopRow]) -> Multipath:
    """The same from hop rows alone (the first trigger and control copy of each TTL)."""
    return multipath_of((copy for row in rows for copy in ((row.ttl, "control", row.control),
                                                             (row.ttl, "trigger", row.trigger))))


def multipath_json(multipath: Multipath | None) -> dict | None:
    """The `multipath` section: null when the trace did not run; every key always present."""
    if multipath is None:
        return None
    return {"seen": multipath.seen,
            "hops": [{"ttl": hop.ttl, "routers": list(hop.routers), "between": hop.between} for hop in multipath.hops]}
