"""`probe trace` in the lab: each request-triggered box and the SYN-resetting firewall, at hop 1,
2, 3 and 4 in turn, is named at its hop, and so are the tap and the swallowing box triggered by
the SNI of an https:// trace's ClientHello; with no box, "no interference"; and no connection of
the trace is left half-open on the server."""

from __future__ import annotations


import pytest

from e2ekit import ROUTERS, run_probe, wait_for

pytestmark = pytest.mark.root

TRIGGER_HOST = "blocked.example"  # what the lab's boxes react to
EXPECTED = {  # box -> (verdict, fate of the trigger where it first differs)
    "tap": ("middlebox-reset", "time-exceeded+reset"),
    "swallow": ("middlebox-reset", "silent"),
    "blockpage": ("middlebox-response", "response"),
    "silentdrop": ("dropped", "silent"),
    "firewall": ("middlebox-reset", "reset"),
}
SNI_BOXES = ("tap", "swallow")  # run with --port 443 --match sni against https://
SNI_TRIGGER = ("--port", "443", "--match", "sni")


def trace_args(lab, *extra: str, scheme: str = "http") -> list[str]:
    port, trust = (443, ["--cacert", str(lab.ca_file)]) if scheme == "https" else (80, [])
    return ["trace", f"{scheme}://{TRIGGER_HOST}/", "--resolve", f"{TRIGGER_HOST}:{port}:{lab.server_addr}", *trust,
            "--json", *extra]


def leftover_server_sockets(lab) -> set[tuple[str, str]]:
    """Server sockets toward our client in any state but TIME-WAIT (half-open or still open), as
    (server end, client end). Earlier tests of the session may have left some (a SIGKILLed probe
    cannot clean up; nginx times those out): compare with a snapshot taken before the run."""
    out = lab.exec(lab.server_ns, ["ss", "-Htan"]).stdout
    return {(fields[3], fields[4]) for fields in map(str.split, out.splitlines())
            if len(fields) >= 5 and fields[4].startswith(f"{lab.client_addr}:")
            and fields[0] not in ("TIME-WAIT", "LISTEN")}


def wait_for_nothing_left_open(lab, before: set) -> None:
    wait_for(lambda: leftover_server_sockets(lab) <= before, 5.0,
             "the server to hold no open or half-open connection of this run")


@pytest.mark.parametrize("hop", range(1, ROUTERS + 1))
@pytest.mark.parametrize("scheme, name", [("http", name) for name in sorted(EXPECTED)]
                         + [("https", name) for name in SNI_BOXES])
def test_trace_names_the_hop_of_the_box(lab, box, scheme, name, hop):
    box(name, hop, *(SNI_TRIGGER if scheme == "https" else ()))
    before = leftover_server_sockets(lab)
    run = run_probe(lab, trace_args(lab, scheme=scheme))
    assert run.returncode == 3, run.describe()
    document = run.document
    verdict, fate = EXPECTED[name]
    assert document["command"] == "trace"
    assert (document["verdict"], document["hop"]) == (verdict, hop), run.describe()
    assert document["bracket"]["passed"] <= hop < document["bracket"]["not_reached"]
    differing = [row for row in document["hops"] if row["trigger"] != row["control"]]
    assert differing and differing[0]["trigger"] == fate, document["hops"]
    # the trace stopped once it knew: nothing after the first difference
    assert document["hops"][-1]["ttl"] == differing[0]["ttl"]
    wait_for_nothing_left_open(lab, before)


def test_trace_without_a_box_finds_no_interference(lab):
    before = leftover_server_sockets(lab)
    run = run_probe(lab, trace_args(lab))
    assert run.returncode == 0, run.describe()
    document = run.document
    assert (document["verdict"], document["hop"], document["bracket"]) == ("clean", None, None)
    assert document["trace"]["interference"] is False
    assert document["trace"]["reached_server_at"] == ROUTERS + 1
    assert [row["ttl"] for row in document["hops"]] == list(range(1, ROUTERS + 2))
    assert all(row["trigger"] == row["control"] for row in document["hops"])
    assert [row["address"] for row in document["hops"][:-1]] == [lab.router_addr(k) for k in range(1, ROUTERS + 1)]
    # Paris traceroute's fixed flow identity: every copy, at every TTL, on one source port
    assert document["trace"]["flow_identity"] == "one source port per trace"
    assert len(document["trace"]["source_ports"]) == 1
    wait_for_nothing_left_open(lab, before)


@pytest.mark.parametrize("name", ["tap", "swallow", "silentdrop"])
def test_check_locates_the_box_on_its_own(lab, box, name):
    box(name, 3)
    run = run_probe(lab, ["check", *trace_args(lab)[1:]])
    assert run.returncode == 3, run.describe()
    document = run.document
    assert (document["hop"], document["hop_basis"]) == (3, "trace"), run.describe()
    assert document["hops"] and document["bracket"]["passed"] <= 3 < document["bracket"]["not_reached"]
    # with --no-locate nothing is swept and the hop stays unknown
    quiet = run_probe(lab, ["check", *trace_args(lab)[1:], "--no-locate"])
    assert quiet.document["hop"] is None and "hops" not in quiet.document


def test_trace_refuses_a_control_host_equal_to_the_target(lab):
    run = run_probe(lab, trace_args(lab, "--control-host", TRIGGER_HOST.upper()))
    assert run.returncode == 2 and run.stderr.strip().startswith("probe: --control-host must differ")
    assert run.document["error"].startswith("--control-host must differ")  # --json: the error document
