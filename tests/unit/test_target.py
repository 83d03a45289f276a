"""URL and --resolve parsing, per the contract (http://HOST[:PORT][/PATH]) and curl's --resolve.

No real DNS: every test runs with socket.getaddrinfo replaced, and only the tests that are about
name resolution give it an answer.
"""

from __future__ import annotations

import socket

import pytest

from probe.errors import ProbeError, UsageError
from probe.target import Resolve, Target, build_target, parse_resolve, parse_url


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a real DNS lookup was attempted: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def dns(monkeypatch):
    """Answer lookups from a dict {name: address}; record what was asked."""
    asked = []

    def install(answers: dict[str, str]):
        def getaddrinfo(host, port, family=0, type=0, *args, **kwargs):
            asked.append((host, port))
            if host not in answers:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return asked

    return install


# --- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("192.0.2.80", ("192.0.2.80", 80, "/")),
    ("http://192.0.2.80", ("192.0.2.80", 80, "/")),
    ("http://192.0.2.80/", ("192.0.2.80", 80, "/")),
    ("www.example.com", ("www.example.com", 80, "/")),
    ("www.example.com:8080", ("www.example.com", 8080, "/")),
    ("www.example.com/a/b", ("www.example.com", 80, "/a/b")),
    ("http://www.example.com:8080/a/b?q=1&r=2", ("www.example.com", 8080, "/a/b?q=1&r=2")),
    ("http://www.example.com:1/", ("www.example.com", 1, "/")),
    ("http://www.example.com:65535/", ("www.example.com", 65535, "/")),
    ("HTTP://WWW.Example.COM/Path", ("www.example.com", 80, "/Path")),  # host names are case-blind, paths not
    ("  http://www.example.com/  ", ("www.example.com", 80, "/")),
    ("https://www.example.com/", ("www.example.com", 443, "/", "https")),
    ("HTTPS://www.example.com:8443/x", ("www.example.com", 8443, "/x", "https")),
    ("https://www.example.com:80/", ("www.example.com", 80, "/", "https")),
])
def test_parse_url(text, expected):
    scheme = () if len(expected) == 4 else ("http",)  # a bare host means http://
    assert parse_url(text) == (*expected, *scheme)


@pytest.mark.parametrize("text, canonical", [
    ("HTTPS://WWW.Example.COM:443/Path", "https://www.example.com/Path"),
    ("https://www.example.com:80/", "https://www.example.com:80/"),
    ("http://www.example.com:443/", "http://www.example.com:443/"),
    ("www.example.com", "http://www.example.com/"),
])
def test_the_default_port_of_each_scheme_is_left_out_of_the_canonical_url(text, canonical):
    assert parse_url(text).canonical == canonical


@pytest.mark.parametrize("text", [
    "", "   ",
    "ftp://www.example.com/", "file:///etc/passwd", "gopher://x/",
    "http://[::1]/", "http://[2001:db8::1]:80/", "2001:db8::1", "::1",
    "http://www.example.com:0/", "http://www.example.com:65536/", "http://www.example.com:70000/",
    "http://www.example.com:http/", "http://www.example.com:-1/", "http://www.example.com:8o/",
    "http://user:secret@www.example.com/", "http://user@www.example.com/", "http://:pw@www.example.com/",
    "http://", "http:///path",
])
def test_bad_urls_are_usage_errors(text):
    with pytest.raises(UsageError) as error:
        parse_url(text)
    assert error.value.exit_code == 2
    assert "\n" not in str(error.value) and str(error.value)


def test_build_target_from_an_ip_literal():
    target = build_target("198.51.100.80:8080/x?y")
    assert target == Target("http://198.51.100.80:8080/x?y", "198.51.100.80", "198.51.100.80", 8080, "/x?y")
    assert target.as_json() == {"url": "http://198.51.100.80:8080/x?y", "host": "198.51.100.80",
                                "address": "198.51.100.80", "port": 8080}


def test_bare_host_means_http_host_slash():
    assert build_target("198.51.100.80").url == "http://198.51.100.80/"


def test_default_port_is_left_out_of_the_url():
    assert build_target("http://198.51.100.80:80/a").url == "http://198.51.100.80/a"


@pytest.mark.parametrize("address", ["127.0.0.1", "127.1.2.3", "0.0.0.0", "255.255.255.255", "224.0.0.1",
                                     "239.255.255.250"])
def test_loopback_broadcast_multicast_literals_are_refused(address):
    with pytest.raises(UsageError) as error:
        build_target(f"http://{address}/")
    assert error.value.exit_code == 2


# --- DNS (faked) ---------------------------------------------------------------------------------


def test_name_is_resolved_to_an_ipv4_address(dns):
    asked = dns({"www.example.com": "198.51.100.80"})
    target = build_target("http://www.example.com/")
    assert (target.host, target.address, target.port, target.url) == (
        "www.example.com", "198.51.100.80", 80, "http://www.example.com/")
    assert asked and asked[0][0] == "www.example.com"


def test_name_resolving_to_loopback_is_refused(dns):
    dns({"localhost.example": "127.0.0.1"})
    with pytest.raises(UsageError):
        build_target("localhost.example")


def test_unresolvable_name_says_to_use_resolve(dns):
    dns({})
    with pytest.raises(ProbeError) as error:
        build_target("http://nowhere.example:8080/")
    assert not isinstance(error.value, UsageError) and error.value.exit_code == 1
    assert "--resolve nowhere.example:8080:" in str(error.value)


# --- --resolve, with curl's meaning --------------------------------------------------------------


def test_parse_resolve():
    assert parse_resolve("www.example.com:80:198.51.100.80") == Resolve("www.example.com", 80, "198.51.100.80")


@pytest.mark.parametrize("text", [
    "", "www.example.com", "www.example.com:80", "www.example.com:80:", ":80:198.51.100.80",
    "www.example.com::198.51.100.80", "www.example.com:http:198.51.100.80", "www.example.com:0:198.51.100.80",
    "www.example.com:65536:198.51.100.80", "www.example.com:80:not-an-address", "www.example.com:80:1.2.3",
    "www.example.com:80:127.0.0.1", "www.example.com:80:255.255.255.255", "www.example.com:80:224.0.0.1",
])
def test_bad_resolve_is_a_usage_error(text):
    with pytest.raises(UsageError) as error:
        parse_resolve(text)
    assert error.value.exit_code == 2


def test_resolve_gives_the_address_and_keeps_the_name():
    target = build_target("http://www.example.com/path", [parse_resolve("www.example.com:80:198.51.100.80")])
    assert target == Target("http://www.example.com/path", "www.example.com", "198.51.100.80", 80, "/path")


@pytest.mark.parametrize("url, entry", [
    ("http://WWW.EXAMPLE.COM/", "www.example.com:80:198.51.100.80"),
    ("http://www.example.com/", "WWW.Example.Com:80:198.51.100.80"),
    ("http://www.example.com:8080/", "www.example.com:8080:198.51.100.80"),
])
def test_resolve_host_match_is_case_insensitive(url, entry):
    assert build_target(url, [parse_resolve(entry)]).address == "198.51.100.80"


@pytest.mark.parametrize("url", ["http://www.example.com:8080/", "http://other.example.com/",
                                 "http://example.com/", "http://www.example.com.evil.example/"])
def test_resolve_applies_only_to_its_host_and_port(dns, url):
    asked = dns({"www.example.com": "203.0.113.1", "other.example.com": "203.0.113.2",
                 "example.com": "203.0.113.3", "www.example.com.evil.example": "203.0.113.4"})
    target = build_target(url, [parse_resolve("www.example.com:80:198.51.100.80")])
    assert target.address != "198.51.100.80"
    assert asked  # DNS was asked instead


def test_resolve_picks_the_entry_for_the_urls_port():
    entries = [parse_resolve("www.example.com:8080:198.51.100.1"), parse_resolve("www.example.com:80:198.51.100.2")]
    assert build_target("http://www.example.com/", entries).address == "198.51.100.2"
    assert build_target("http://www.example.com:8080/", entries).address == "198.51.100.1"


def test_resolve_applies_to_an_ip_literal_host_too():
    # curl: the entry names whatever host the URL has, literals included
    target = build_target("http://192.0.2.99/", [parse_resolve("192.0.2.99:80:198.51.100.80")])
    assert (target.host, target.address) == ("192.0.2.99", "198.51.100.80")
