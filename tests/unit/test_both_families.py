"""`probe check --both-families` (also `-46`, `-4 -6`): which address each family is probed at,
and the document and table that say where the families differ (the lab runs it for real:
tests/e2e/test_ipv6_e2e.py)."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from probe.errors import ProbeError, UsageError
from probe.render.report import both_families_document, both_families_table, unmeasured_document
from probe.schema import schema_path
from probe.network.target import Resolve, Target, targets_by_family

V4 = Resolve("www.example.com", 80, "203.0.113.80")
V6 = Resolve("www.example.com", 80, "2001:db8:113::80")
URL = "http://www.example.com/"


def validate(document: dict) -> None:
    Draft202012Validator(json.loads(schema_path().read_text())).validate(document)


def test_each_family_is_probed_at_its_own_pinned_address():
    found = targets_by_family(URL, [V6, V4])
    assert [(family, target.address) for family, target in found] == [(4, "203.0.113.80"), (6, "2001:db8:113::80")]


def test_a_family_without_a_pinned_address_is_not_measured_and_the_other_still_is():
    [(four, target), (six, why)] = targets_by_family(URL, [V4])
    assert (four, six) == (4, 6) and isinstance(target, Target)
    assert why == "no IPv6 address: the --resolve entries for www.example.com:80 give IPv4 only"


def test_a_literal_address_has_one_family_and_a_name_without_any_is_an_error():
    with pytest.raises(UsageError, match="203.0.113.80 is an IPv4 address: probing both families needs a host name"):
        targets_by_family("http://203.0.113.80/")
    with pytest.raises(ProbeError, match="no address to probe in either family"):
        targets_by_family("http://nothing.invalid/")


def exchange(family: str, address: str, verdict: str, direction=None, hop=None, code=0) -> dict:
    return {"schema": "probe/1", "command": "check",
            "target": {"url": URL, "host": "www.example.com", "address": address, "port": 80, "family": family},
            "verdict": verdict, "direction": direction, "hop": hop, "rtt_ms": 50.2, "packets": [],
            "explanation": "x", "exit_code": code, "http": {"status": 200, "reason": "OK", "complete": True,
                                                              "malformed": None},
            "next_step": None, "residual_blocking": None, "multipath": None}  # keys every exchange has


def test_families_that_disagree_are_said_to_and_the_worse_verdict_leads():
    clean = exchange("ipv4", "203.0.113.80", "clean")
    reset = exchange("ipv6", "2001:db8:113::80", "middlebox-reset", "to-client", 2, code=3)
    document = both_families_document([clean, reset], 3)
    validate(document)
    assert document["differ"] is True and document["differences"] == ["verdict", "direction", "hop"]
    assert document["verdict"] == "middlebox-reset" and document["families"] == [clean, reset]
    assert document["explanation"] == ("The families differ (verdict, direction, hop): over IPv4 clean; "
                                       "over IPv6 middlebox-reset (to-client, hop 2).")
    table = both_families_table(document)
    rows = [line.split() for line in table.splitlines()[2:4]]
    assert rows == [["IPv4", "203.0.113.80", "clean", "-", "-", "50.2", "200", "OK"],
                    ["IPv6", "2001:db8:113::80", "middlebox-reset", "to-client", "2", "50.2", "200", "OK"]]


def test_families_that_agree_say_so_and_a_server_reset_does_not_hide_interference():
    same = both_families_document([exchange("ipv4", "203.0.113.80", "clean"),
                                   exchange("ipv6", "2001:db8:113::80", "clean")], 0)
    validate(same)
    assert (same["differ"], same["differences"], same["verdict"]) == (False, [], "clean")
    assert same["explanation"].startswith("Both families say the same")
    mixed = both_families_document([exchange("ipv4", "203.0.113.80", "server-reset", code=4),
                                    exchange("ipv6", "2001:db8:113::80", "unreachable", hop=2, code=3)], 3)
    assert mixed["verdict"] == "unreachable"


def test_a_family_that_could_not_be_probed_is_in_the_document_with_its_reason():
    target = Target(URL, "www.example.com", "203.0.113.80", 80, "/")
    missing = unmeasured_document(target, "ipv6", "no IPv6 address")
    document = both_families_document([exchange("ipv4", "203.0.113.80", "clean"), missing], 1)
    validate(document)
    assert document["differ"] is True and document["verdict"] is None  # not measured outranks clean
    assert "over IPv6 not measured" in document["explanation"]
    assert "not measured" in both_families_table(document)
