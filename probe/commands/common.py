"""What every command shares: the options, spelled the same everywhere, the stderr channel for
people, and output files opened before any probing starts. The exit codes are decided in
`probe.outcome`."""

from __future__ import annotations

import sys

import typer

from probe.errors import ProbeError, UsageError
from probe.outcome import ExitStatus, exit_status as exit_code_for  # noqa: F401 (the commands' name for it)

EXIT_CLEAN, EXIT_FAILED, EXIT_USAGE, EXIT_INTERFERENCE, EXIT_TARGET_FAILED = ExitStatus


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def open_output(path: str | None):
    if path is None:
        return None
    try:
        return open(path, "wb")
    except OSError as error:
        raise ProbeError(f"cannot write {path}: {error.strerror}") from None


def write_report(handle, document: dict) -> None:
    """The `--report` page of a finished document, into the file `open_output` opened."""
    if handle is None:
        return
    from probe.render.html import render

    with handle:
        handle.write(render(document).encode("utf-8"))


def paint_for(mode: str, stream=None):
    """The `Paint` of `--color` for what goes to `stream` (standard output by default)."""
    from probe.render.colour import paint_for as decide

    return decide(mode, stream if stream is not None else sys.stdout)


def write_document(handle, document: dict) -> None:
    """The `-o FILE` document, into the file `open_output` opened."""
    if handle is None:
        return
    from probe.render.report import dumps

    with handle:
        handle.write((dumps(document) + "\n").encode("utf-8"))


def chatter(quiet: bool):
    """Where progress lines go: stderr, or nowhere under -q."""
    return None if quiet else say


# Options shared by the probing commands: same spelling, same help, everywhere.
URL = typer.Argument(..., metavar="URL", help="http[s]://HOST[:PORT][/PATH], or a bare host name or address")
RESOLVE = typer.Option(None, "--resolve", metavar="HOST:PORT:ADDR",
                       help="connect to ADDR while the request still names HOST")
JSON = typer.Option(False, "--json", help="print one JSON document (schema probe/1) on stdout")
COLOR = typer.Option("auto", "--color", "--colour", metavar="WHEN",
                     help="colour the verdict, forged packets and the hop: auto (a terminal, unless NO_COLOR is "
                          "set), always, never")
OUTPUT = typer.Option(None, "--output", "-o", metavar="FILE",
                      help="write the JSON document (schema probe/1) to FILE; with --json, instead of stdout")
QUIET = typer.Option(False, "--quiet", "-q",
                     help="print only the verdict line (the exit code says the rest) and no progress on stderr")
REPORT = typer.Option(None, "--report", metavar="FILE.html",
                      help="write a self-contained HTML report (ladder diagram, hops, verdict and evidence) to FILE")
PCAP = typer.Option(None, "--pcap", metavar="FILE", help="write every packet sent and received to FILE (pcap, raw IP)")
METHOD = typer.Option(None, "--request", "--method", "-X", metavar="METHOD",
                      help="HTTP method, as curl's -X [default: HEAD, or POST with --data]")
HEADER = typer.Option(None, "--header", "-H", metavar="'NAME: VALUE'",
                      help="add a header, or replace the default one of that name; 'NAME:' removes it (curl's -H)")
USER_AGENT = typer.Option(None, "--user-agent", "-A", metavar="TEXT",
                          help="the User-Agent header [default: probe/VERSION]")
DATA = typer.Option(None, "--data", "-d", metavar="TEXT", help="send TEXT as the request's body (curl's -d)")
TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")  # RFC 9110 5.6.2
LINGER = typer.Option(None, "--linger", metavar="SECONDS",
                      help="keep listening this long after each exchange "
                           "[default: 0.5 s or 3 round trips, whichever is longer]")
MAX_TIME = typer.Option(30.0, "--max-time", metavar="SECONDS", help="hard bound on each exchange")
RETRIES = typer.Option(3, "--retries", help="retransmissions of the request (at least 2)")
SYN_RETRIES = typer.Option(2, "--syn-retries", help="retransmissions of the SYN")
TTL = typer.Option(64, "--ttl", help="IP TTL (IPv6 hop limit) of the probe's packets")
MAX_TTL = typer.Option(16, "--max-ttl", help="highest TTL the sweeps try")
INTERFACE = typer.Option(None, "--interface", "-i", metavar="IFACE",
                         help="send through IFACE only (as ping -I and curl --interface do)")
SOURCE_PORT = typer.Option(None, "--source-port", min=1, max=65535, metavar="PORT",
                           help="the exchange's source port, instead of an ephemeral one")
IPV4 = typer.Option(False, "--ipv4", "-4", help="resolve names to IPv4 addresses only (curl's -4)")
IPV6 = typer.Option(False, "--ipv6", "-6", help="resolve names to IPv6 addresses only (curl's -6)")
SNI = typer.Option(None, "--sni", metavar="NAME",
                   help="https: send NAME as the TLS server name instead of the URL's host ('' sends none); "
                        "the certificate is still judged for the URL's host")
CACERT = typer.Option(None, "--cacert", metavar="FILE",
                      help="https: verify the server's certificate against the CAs in FILE (PEM) instead of "
                           "the system's trust store")
CONTROL_HOST = typer.Option("example.com", "--control-host", metavar="HOST",
                            help="innocuous host named by the control requests of the trace")


def target_from(url: str, resolve: list[str] | None, ipv4: bool, ipv6: bool):
    """The `Target` of a probing command's URL, --resolve entries and -4/-6."""
    from probe.network.target import build_target, checked_family, parse_resolve

    family = checked_family(ipv4, ipv6)
    return build_target(url, [parse_resolve(entry) for entry in resolve or []], family)


def announce(target):
    """The `on_start` of an exchange: one line on stderr naming the address, its family and our end."""
    from probe.network.target import url_host

    def on_start(flow) -> None:
        say(f"probing {target.url} at {url_host(target.address)}:{target.port} (IPv{target.family}) "
            f"from {url_host(flow.client)}:{flow.client_port} ...")
    return on_start


def request_options(method: str | None, headers: list[str] | None = None, user_agent: str | None = None,
                    data: str | None = None):
    """`-X`, `-H`, `-A` and `--data`, checked, as `probe.protocol.http.Request`. Methods are written in
    capitals (`-X get` sends GET), as the first round did; any RFC 9110 token is taken."""
    from probe.protocol.http import Request

    method = (method if method is not None else "POST" if data is not None else "HEAD").upper()
    if not method or not set(method) <= TOKEN:
        raise UsageError(f"unsupported --request {method!r}: a method is a token such as GET, POST or OPTIONS")
    parsed = []
    for header in headers or ():
        name, colon, value = header.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not name or not set(name) <= TOKEN:
            raise UsageError(f"bad --header {header!r}: write 'Name: value' (or 'Name:' to remove it)")
        if any(c in value for c in "\r\n\0"):
            raise UsageError(f"bad --header {header!r}: a value holds no line breaks")
        parsed.append((name, value))
    if user_agent is not None and any(c in user_agent for c in "\r\n\0"):
        raise UsageError("bad --user-agent: it holds no line breaks")
    body = data.encode("utf-8") if data is not None else b""
    if method == "HEAD" and body:
        raise UsageError("--data with HEAD: a HEAD request has no body (use -X POST, or drop -X)")
    return Request(method, tuple(parsed), user_agent, body)



def tls_options(sni: str | None, cacert: str | None):
    """`--sni` and `--cacert`, checked, as `TlsOptions`."""
    from probe.network.single import TlsOptions

    if sni and (len(sni) > 253 or any(c.isspace() or c in "/:@" for c in sni) or not sni.isascii()):
        raise UsageError(f"--sni {sni!r} is not a host name")
    if cacert is not None:
        try:
            with open(cacert, "rb") as handle:
                if b"-----BEGIN CERTIFICATE-----" not in handle.read():
                    raise UsageError(f"--cacert {cacert}: no PEM certificate in the file")
        except OSError as error:
            raise ProbeError(f"cannot read --cacert {cacert}: {error.strerror}") from None
    return TlsOptions(sni=sni, cafile=cacert)


def exchange_options(request, linger: float | None, max_time: float, retries: int, syn_retries: int,
                     ttl: int, tls=None):
    """The options of one exchange (`check`, and each of `batch`'s), checked, as `CheckOptions`;
    `request` is what `request_options` made of -X, -H, -A and --data."""
    if not 2 <= retries <= 10:
        raise UsageError("--retries must be from 2 to 10")
    if not 0 <= syn_retries <= 10:
        raise UsageError("--syn-retries must be from 0 to 10")
    if not 1 <= ttl <= 255:
        raise UsageError("--ttl must be from 1 to 255")
    if not 0 < max_time <= 600:  # (a NaN is refused too)
        raise UsageError("--max-time must be more than 0 and at most 600 seconds")
    if linger is not None and not 0 <= linger <= 60:  # (a NaN is refused too)
        raise UsageError("--linger must be from 0 to 60 seconds")
    from probe.network.single import CheckOptions
    from probe.protocol.tcp import Settings

    return CheckOptions(request=request, linger=linger, max_time=max_time,
                        settings=Settings(data_retries=retries, syn_retries=syn_retries), ttl=ttl,
                        **({"tls": tls} if tls is not None else {}))


def check_max_ttl(max_ttl: int) -> None:
    if not 1 <= max_ttl <= 64:
        raise UsageError("--max-ttl must be from 1 to 64")


def check_control_host(host: str) -> None:
    if not host or any(c.isspace() or c in "/:@" for c in host) or len(host) > 253:
        raise UsageError(f"--control-host {host!r} is not a host name")


def network(interface: str | None = None, source_port: int | None = None):
    """The machine's network as -i and --source-port ask (`probe.network.loop.Network`)."""
    from probe.network.loop import Network

    return Network.real(interface, source_port)
