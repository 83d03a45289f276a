"""`probe check https://` against the lab's real nginx with TLS: OpenSSL's ClientHello on the
crafted connection, the certificate verified against the lab's CA, HTTP inside, a polite close;
and the genuine server's failures over TLS (a closed port, an abort after the ClientHello)."""

from __future__ import annotations

import os

import pytest
from e2ekit import HOST, ProbeRun, run_probe, server_tcp_states, wait_for

from netns.lab import BIG_SIZE, HTTPS_PORT, TLS_ABORT_PORT, TLS_CLOSED_PORT

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]

CLEAN_EXIT, TARGET_FAILED_EXIT = 0, 4
CLOSE_TIMEOUT = 3.0


def https_args(lab, port: int = HTTPS_PORT, path: str = "/", *extra: str) -> list[str]:
    authority = HOST if port == 443 else f"{HOST}:{port}"
    return ["check", f"https://{authority}{path}", "--resolve", f"{HOST}:{port}:{lab.server_addr}", "--json",
            *extra]


def data_packets(document: dict, direction: str) -> list[dict]:
    return [p for p in document["packets"] if p["dir"] == direction and p.get("len")]


@pytest.fixture(scope="module")
def verified_run(lab) -> ProbeRun:
    return run_probe(lab, https_args(lab, HTTPS_PORT, "/", "--cacert", str(lab.ca_file)))


def test_clean_https_is_clean_with_the_certificate_verified_against_the_labs_ca(verified_run):
    run = verified_run
    assert run.returncode == CLEAN_EXIT, run.describe()
    document = run.document
    assert document["verdict"] == "clean"
    assert document["target"]["url"] == f"https://{HOST}/" and document["target"]["port"] == 443
    tls = document["tls"]
    assert tls["handshake"] == "complete" and tls["error"] is None
    assert tls["version"] in ("TLSv1.2", "TLSv1.3") and tls["alpn"] == "http/1.1"
    assert tls["verified"] is True and tls["verify_problems"] == []
    assert HOST in tls["certificate"]["sans"]
    assert document["http"]["status"] == 200 and document["http"]["complete"]
    assert document["exit_code"] == CLEAN_EXIT and document["duration_ms"] > 0


def test_the_https_document_validates_against_the_shipped_schema(verified_run):
    import json

    from jsonschema import Draft202012Validator

    from probe.schema import schema_path

    Draft202012Validator(json.loads(schema_path().read_text())).validate(verified_run.document)


def test_the_first_data_we_send_is_the_client_hello_naming_the_host(verified_run):
    document = verified_run.document
    first = data_packets(document, "sent")[0]
    assert first["info"] == f"ClientHello (SNI {HOST})", first
    answer = data_packets(document, "received")[0]
    assert answer["info"].startswith("ServerHello"), answer
    assert all(p["origin"] == "server" for p in data_packets(document, "received"))


def test_https_closes_politely_and_leaves_nothing_half_open(lab, verified_run):
    document = verified_run.document
    fins = [p for p in document["packets"] if p["dir"] == "sent" and "F" in p["flags"]]
    assert fins, document["packets"]
    fin_acked = (fins[-1]["seq"] + fins[-1]["len"] + 1) % 2**32
    assert [p for p in document["packets"]
            if p["dir"] == "received" and p["n"] > fins[-1]["n"] and p["ack"] == fin_acked], document["packets"]
    assert not [p for p in document["packets"] if "R" in p["flags"]], document["packets"]
    client = document["client"]
    wait_for(lambda: set(server_tcp_states(lab, client["address"], client["port"])) <= {"TIME-WAIT"},
             CLOSE_TIMEOUT, "the server's socket in TIME-WAIT or gone")


def test_get_over_tls_reads_a_body_of_many_records_to_its_end(lab):
    run = run_probe(lab, https_args(lab, HTTPS_PORT, "/big", "--method", "GET", "--cacert", str(lab.ca_file)))
    assert run.returncode == CLEAN_EXIT, run.describe()
    document = run.document
    assert document["http"] == {"status": 200, "reason": "OK", "complete": True, "malformed": None}
    received = sum(p["len"] for p in data_packets(document, "received"))
    assert received > BIG_SIZE  # the body, and the TLS records' overhead around it


def test_without_the_labs_ca_the_certificate_is_a_finding_not_an_error(lab):
    run = run_probe(lab, https_args(lab))
    assert run.returncode == CLEAN_EXIT, run.describe()  # the exchange itself is clean
    tls = run.document["tls"]
    assert tls["handshake"] == "complete" and tls["verified"] is False
    assert any("is not in the trust store" in problem for problem in tls["verify_problems"]), tls


def test_no_sni_is_sent_with_an_empty_sni(lab):
    run = run_probe(lab, https_args(lab, HTTPS_PORT, "/", "--sni", "", "--cacert", str(lab.ca_file)))
    assert run.returncode == CLEAN_EXIT, run.describe()
    document = run.document
    assert document["tls"]["sni"] is None
    assert data_packets(document, "sent")[0]["info"] == "ClientHello (no SNI)"
    assert document["tls"]["verified"] is True  # still judged for the URL's host


@pytest.mark.parametrize("port", [TLS_CLOSED_PORT, TLS_ABORT_PORT])
def test_a_genuine_server_reset_over_tls_is_the_servers(lab, port):
    run = run_probe(lab, https_args(lab, port, "/", "--cacert", str(lab.ca_file)))
    assert run.returncode == TARGET_FAILED_EXIT, run.describe()
    document = run.document
    assert document["verdict"] == "server-reset", run.describe()
    resets = [p for p in document["packets"] if p["dir"] == "received" and "R" in p["flags"]]
    assert resets and all(p["origin"] == "server" for p in resets), resets


def test_batch_probes_https_targets_beside_http_ones(lab, tmp_path):
    """batch runs the same TLS exchange as check: one JSON line per target, with its tls section."""
    import json
    import subprocess
    import sys

    listing = tmp_path / "targets"
    address = lab.server_addr
    listing.write_text(f"https://{HOST}/ {HOST}:443:{address}\n"
                       f"https://{HOST}:{TLS_CLOSED_PORT}/ {HOST}:{TLS_CLOSED_PORT}:{address}\n"
                       f"http://{HOST}/ {HOST}:80:{address}\n")
    result = subprocess.run(["ip", "netns", "exec", lab.client_ns, sys.executable, "-m", "probe", "batch",
                             str(listing), "--cacert", str(lab.ca_file), "--no-locate"],
                            capture_output=True, text=True, timeout=120)
    documents = sorted((json.loads(line) for line in result.stdout.splitlines()), key=lambda d: d["line"])
    assert [(d["line"], d["verdict"]) for d in documents] == [(1, "clean"), (2, "server-reset"), (3, "clean")], \
        result.stderr
    assert documents[0]["tls"]["verified"] is True and documents[0]["http"]["status"] == 200
    assert "tls" not in documents[2] and documents[2]["http"]["status"] == 200
    assert result.returncode == TARGET_FAILED_EXIT, result.stderr
