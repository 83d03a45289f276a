"""URL and --resolve parsing, per the contract (http://HOST[:PORT][/PATH]) and curl's --resolve.

No real DNS: every test runs with socket.getaddrinfo replaced, and only the tests that are about
name resolution give it an answer.
"""

from __future__ import annotations

import socket

import pytest

from probe.errors import ProbeError, UsageError
from probe.network.target import Resolve, Target, build_target, parse_resolve, parse_url


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
    "http://[2001:db8::1/", "http://2001:db8::1/", "http://[not-an-address]/",
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
                                "address": "198.51.100.80", "port": 8080, "family": "ipv4"}


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


# --- IPv6 (issue 15) -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("http://[2001:db8::80]/", ("2001:db8::80", 80, "/")),
    ("http://[2001:DB8:0::80]:8080/a", ("2001:db8::80", 8080, "/a")),  # written as RFC 5952 says
    ("[2001:db8::80]", ("2001:db8::80", 80, "/")),
    ("2001:db8::80", ("2001:db8::80", 80, "/")),  # a bare address: its colons are not a port
])
def test_parse_url_ipv6(text, expected):
    assert parse_url(text)[:3] == expected
    assert parse_url(text).canonical.startswith("http://[2001:db8::80]")


@pytest.mark.parametrize("url, message", [
    ("http://[::1]/", "::1 is this host"),
    ("http://[::]/", ":: is this host"),
    ("http://[ff02::1]/", "ff02::1 is a multicast"),
    ("http://[ff05::2]/", "ff05::2 is a multicast"),
    ("http://[fe80::1]/", "fe80::1 is link-local: it needs a zone"),
    ("http://[fe80::1%25nosuch0]/", "this host has no interface 'nosuch0'"),
    ("http://[::ffff:192.0.2.1]/", "::ffff:192.0.2.1 is an IPv4-mapped IPv6 address: probe the IPv4 address 192.0.2.1"),
    ("http://2001:db8::1/", "an IPv6 address goes in brackets"),
    ("http://[2001:db8::1/", "an IPv6 address goes in brackets"),
    ("http://[www.example.com]/", "goes in brackets"),
])
def test_ipv6_refusals(url, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace(".", r"\.")):
        build_target(url)


def test_ipv6_target_carries_its_family_and_brackets_in_the_url():
    target = build_target("http://[2001:db8::80]:8080/x")
    assert target.url == "http://[2001:db8::80]:8080/x" and target.family == 6
    assert target.as_json()["family"] == "ipv6"
    assert build_target("192.0.2.80").as_json()["family"] == "ipv4"


def test_the_host_header_brackets_an_ipv6_address():
    from probe.protocol.http import build_request

    assert b"\r\nHost: [2001:db8::80]\r\n" in build_request("HEAD", "2001:db8::80", 80, "/")
    assert b"\r\nHost: [2001:db8::80]:8080\r\n" in build_request("HEAD", "2001:db8::80", 8080, "/")


@pytest.mark.parametrize("text", ["www.example.com:80:[2001:db8::80]", "www.example.com:80:2001:db8::80",
                                  "www.example.com:80:[2001:DB8:0::80]"])
def test_parse_resolve_ipv6_with_or_without_brackets(text):
    assert parse_resolve(text) == Resolve("www.example.com", 80, "2001:db8::80")


def test_resolve_ipv6_wins_over_dns():
    target = build_target("http://www.example.com/", [parse_resolve("www.example.com:80:[2001:db8::80]")])
    assert (target.host, target.address, target.family) == ("www.example.com", "2001:db8::80", 6)


@pytest.fixture
def dual_dns(monkeypatch):
    """A name with an AAAA and an A record, answered in the order the system prefers (IPv6 first)."""
    asked = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        asked.append(family)
        answers = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::80", port, 0, 0)),
                   (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.80", port))]
        return [a for a in answers if family in (socket.AF_UNSPEC, a[0])]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize("family, address", [(None, "2001:db8::80"), (4, "192.0.2.80"), (6, "2001:db8::80")])
def test_a_name_with_both_families_takes_the_one_asked(dual_dns, family, address):
    target = build_target("http://www.example.com/", family=family)
    assert target.address == address
    assert dual_dns == [{None: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}[family]]


@pytest.mark.parametrize("url, resolves, family, message", [
    ("http://[2001:db8::80]/", (), 4, "the URL's address 2001:db8::80 is an IPv6 address, but -4 asks for IPv4"),
    ("http://192.0.2.80/", (), 6, "the URL's address 192.0.2.80 is an IPv4 address, but -6 asks for IPv6"),
    ("http://a/", ("a:80:[2001:db8::80]",), 4, "--resolve address 2001:db8::80 is an IPv6 address"),
])
def test_minus_4_and_6_refuse_the_other_family(url, resolves, family, message):
    with pytest.raises(UsageError, match=message.replace(".", r"\.")):
        build_target(url, [parse_resolve(r) for r in resolves], family)


def test_minus_4_and_6_together_are_refused():
    from probe.network.target import checked_family

    with pytest.raises(UsageError, match="-4 and -6 exclude each other"):
        checked_family(True, True)
    assert (checked_family(True, False), checked_family(False, True), checked_family(False, False)) == (4, 6, None)


def test_a_link_local_address_with_a_zone_is_taken_and_its_zone_goes_to_the_sender():
    """RFC 6874's %25 in a URL, RFC 4007's bare % in --resolve, a name or an index; the target's
    address is the plain one (packets carry no zone), the sender gets the interface."""
    import socket

    from probe.network.wire import sockaddr

    index = socket.if_nametoindex("lo")
    for url, resolves in [("http://[fe80::1%25lo]/", []), ("http://[fe80::1%25" + str(index) + "]/", []),
                          ("http://a.example/", [parse_resolve("a.example:80:[fe80::1%lo]")])]:
        target = build_target(url, resolves)
        assert (target.address, target.family) == ("fe80::1", 6)
        assert sockaddr("fe80::1", 80) == ("fe80::1", 80, 0, index)
    assert sockaddr("2001:db8::1", 80) == ("2001:db8::1", 80)
