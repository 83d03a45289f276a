"""HTTPS on the crafted connection: OpenSSL's own ClientHello, the rest of the handshake fed from
the recorded packets, HTTP inside, and the certificate judged afterwards.

Nothing of TLS is written here. The standard library's `ssl` runs without I/O over two
`MemoryBIO`s (an `SSLObject`), the way h11 runs HTTP: what OpenSSL wants to send is read from
the outgoing BIO and handed to the TCP state machine as data; the server's in-order bytes are
written to the incoming BIO. So the ClientHello on the wire is exactly the one OpenSSL (and so
curl and Python) sends, with SNI = the URL's host (curl's `--sni`-less default), ALPN http/1.1.

The certificate is not allowed to stop the exchange: the handshake runs with verification off,
as `curl -k` or `openssl s_client` run it, and the chain the server sent is verified afterwards
against the trust store (`--cacert FILE`, or the system's) with `cryptography`'s X.509 verifier
(RFC 5280 path building, RFC 6125 names). A certificate that does not validate is a finding with
its reasons (another name, expired, self-signed, an issuer the store does not hold as an
intercepting proxy's own CA would be), never an error.

`describe` names the TLS records of a captured payload, as Wireshark's Info column does
("ClientHello (SNI www.example.com)", "ServerHello", "Alert (fatal, handshake_failure)").
"""

from __future__ import annotations

import ipaddress
import ssl
import struct
import time
import warnings
from dataclasses import dataclass, field

from probe.protocol.http import HttpExchange, ResponseStatus

ALPN = ["http/1.1"]

CONTENT_TYPES = {20: "ChangeCipherSpec", 21: "Alert", 22: "Handshake", 23: "Application Data"}
HANDSHAKE_TYPES = {0: "HelloRequest", 1: "ClientHello", 2: "ServerHello", 4: "NewSessionTicket",
                   8: "EncryptedExtensions", 11: "Certificate", 12: "ServerKeyExchange", 13: "CertificateRequest",
                   14: "ServerHelloDone", 15: "CertificateVerify", 16: "ClientKeyExchange", 20: "Finished"}
ALERT_LEVELS = {1: "warning", 2: "fatal"}
# RFC 8446 6.2 and RFC 5246 7.2: the alert descriptions a middlebox or server is likely to send
ALERT_DESCRIPTIONS = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
                      40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
                      44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
                      47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
                      51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security",
                      80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled",
                      109: "missing_extension", 110: "unsupported_extension", 112: "unrecognized_name",
                      116: "certificate_required", 120: "no_application_protocol"}
HTTP_STARTS = (b"HTTP/", b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ")


@dataclass
class TlsFacts:
    """What the handshake showed, for the report's `tls` section."""

    sni: str | None
    handshake: str = "not-started"  # "sent-client-hello", "complete", "failed"
    error: str | None = None  # OpenSSL's reason when the handshake or a record failed
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    certificate: dict | None = None
    verified: bool | None = None
    verify_problems: list[str] = field(default_factory=list)
    trust_store: str | None = None
    closed_by_peer: bool = False  # a close_notify came from the other end

    def as_json(self) -> dict:
        return {"sni": self.sni, "handshake": self.handshake, "error": self.error, "version": self.version,
                "cipher": self.cipher, "alpn": self.alpn, "certificate": self.certificate,
                "verified": self.verified, "verify_problems": list(self.verify_problems),
                "trust_store": self.trust_store}


class TlsExchange:
    """HTTP inside TLS as the application of the crafted connection (see `probe.protocol.http`).

    `server_name` goes in the SNI (None or "": no SNI, as `curl --sni ''` would leave it out);
    `verify_name` is what the certificate must be valid for (the URL's host)."""

    def __init__(self, http: HttpExchange, server_name: str | None, verify_name: str, cafile: str | None = None):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # verified after the handshake, so that a bad certificate is reported
        context.set_alpn_protocols(ALPN)
        self.http = http
        self.verify_name, self.cafile = verify_name, cafile
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_name or None)
        self.facts = TlsFacts(sni=server_name if server_name and not _is_address(server_name) else None)
        self._closing = False

    # -- the application interface (probe.protocol.http) -------------------------------------------------

    def first_flight(self) -> bytes:
        self._step()
        self.facts.handshake = "sent-client-hello"
        return self._outgoing.read()

    def receive(self, data: bytes, eof: bool = False) -> bytes:
        if data:
            self._incoming.write(data)
        if eof:
            self._incoming.write_eof()
        self._step()
        return self._outgoing.read()

    @property
    def status(self) -> ResponseStatus:
        status = self.http.status
        if self.facts.error and not status.malformed:
            return ResponseStatus(status.status, status.reason, status.complete, f"TLS: {self.facts.error}",
                                  status.body_bytes)
        return status

    @property
    def finished(self) -> bool:
        """The response ended, or TLS failed: nothing more can be said over this connection."""
        return self.http.finished or self.facts.handshake == "failed" or self._closing

    # The server closes first, as HTTP's "Connection: close" asks it to: its close_notify and FIN
    # follow the response. A close_notify of ours sent meanwhile would cross them and reach a
    # closed socket, which resets it (measured with nginx). So the connection waits a little for
    # the server's close (probe.protocol.tcp), answers it with a FIN alone, and says close_notify itself
    # only when the server keeps the connection open.
    waits_for_peer_close = True

    def close(self) -> bytes:
        """close_notify, as curl says it, unless the server has closed already."""
        if self.facts.closed_by_peer or self.facts.handshake != "complete":
            return b""
        self._closing = True
        try:
            self._tls.unwrap()
        except ssl.SSLError:  # SSLWantReadError: the peer's close_notify is not needed to leave
            pass
        return self._outgoing.read()

    # -- internals --------------------------------------------------------------------------------

    def _step(self) -> None:
        if self.facts.handshake == "failed" or self._closing:
            return
        if self.facts.handshake != "complete":
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                return
            except (ssl.SSLError, ssl.CertificateError) as error:
                self._fail(error)
                return
            self._on_handshake()
            self._tls.write(self.http.first_flight())
        while True:
            try:
                data = self._tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                data = b""
            except ssl.SSLError as error:  # among them, TCP's FIN without a close_notify (SSLEOFError)
                self.http.receive(b"", eof=True)
                if not self.http.finished:
                    self.facts.error = _reason(error)
                break
            if not data:  # the server's close_notify
                self.facts.closed_by_peer = True
                self.http.receive(b"", eof=True)
                break
            self.http.receive(data)
        if self.facts.closed_by_peer:
            self._closing = True  # answered with a FIN alone (see waits_for_peer_close)

    def _fail(self, error: Exception) -> None:
        self.facts.handshake = "failed"
        self.facts.error = _reason(error)

    def _on_handshake(self) -> None:
        facts = self.facts
        facts.handshake = "complete"
        facts.version = self._tls.version()
        facts.cipher = (self._tls.cipher() or (None,))[0]
        facts.alpn = self._tls.selected_alpn_protocol()
        chain = self._chain()
        if chain:
            facts.certificate, facts.verified, facts.verify_problems, facts.trust_store = judge_certificate(
                chain, self.verify_name, self.cafile)

    def _chain(self) -> list[bytes]:
        """The certificates the server sent, leaf first, DER: SSLObject.get_unverified_chain()
        (public from Python 3.13, on the private object before), else the leaf alone."""
        getter = getattr(self._tls, "get_unverified_chain", None) or getattr(
            getattr(self._tls, "_sslobj", None), "get_unverified_chain", None)
        if getter is not None:
            return [cert if isinstance(cert, bytes) else cert.public_bytes(ssl._ssl.ENCODING_DER)
                    for cert in getter() or []]
        leaf = self._tls.getpeercert(binary_form=True)
        return [leaf] if leaf else []

    def report(self) -> dict:
        return self.facts.as_json()


def _is_address(name: str) -> bool:
    """An IP address goes in no SNI (RFC 6066 3: "Literal IPv4 and IPv6 addresses are not
    permitted"); OpenSSL, and so Python and curl, leave the extension out for one."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _reason(error: Exception) -> str:
    """OpenSSL's reason in words a person reads: 'sslv3 alert handshake failure', 'wrong version number'."""
    reason = getattr(error, "reason", None)
    if reason:
        return reason.lower().replace("_", " ")
    return str(error) or type(error).__name__


# -- the certificate ------------------------------------------------------------------------------


def default_trust_store() -> str | None:
    """The system's CA bundle, where OpenSSL looks for it."""
    import os

    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def judge_certificate(chain: list[bytes], name: str, cafile: str | None,
                      now: float | None = None) -> tuple[dict, bool, list[str], str | None]:
    """(facts, verified, problems, store): the leaf's facts, and whether the chain the server sent
    validates for `name` against the trust store, with each reason it does not."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import verification

    certs = [x509.load_der_x509_certificate(der) for der in chain]
    leaf = certs[0]
    names = _subject_alt_names(leaf)
    facts = {"subject": leaf.subject.rfc4514_string(), "issuer": leaf.issuer.rfc4514_string(), "sans": names,
             "not_before": leaf.not_valid_before_utc.isoformat(), "not_after": leaf.not_valid_after_utc.isoformat(),
             "sha256": leaf.fingerprint(hashes.SHA256()).hex(), "chain_length": len(certs)}
    when = datetime.datetime.fromtimestamp(now if now is not None else time.time(), datetime.timezone.utc)
    store_path = cafile or default_trust_store()
    problems = []
    if not any(_name_matches(name, pattern) for pattern in names):
        problems.append(f"it is for {', '.join(names) or 'no name'}, not {name}")
    if when > leaf.not_valid_after_utc:
        problems.append(f"it expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    elif when < leaf.not_valid_before_utc:
        problems.append(f"it is not valid before {leaf.not_valid_before_utc:%Y-%m-%d}")
    anchors = _load_anchors(store_path)
    if not anchors:
        problems.append("no trust store to verify it against" + (f" ({store_path} is unreadable)" if store_path else ""))
        return facts, False, problems, store_path
    # The chain alone, for a name it carries and at a time it is valid: an untrusted issuer is
    # told apart from a wrong name or an expired certificate.
    chain_name = name if any(_name_matches(name, pattern) for pattern in names) else (
        names[0].replace("*", "wildcard", 1) if names else name)
    chain_time = min(max(when, leaf.not_valid_before_utc), leaf.not_valid_after_utc)
    chain_error = _verify(certs, chain_name, verification.Store(anchors), chain_time)
    if chain_error is not None:
        if leaf.issuer == leaf.subject:
            problems.append("it is self-signed")
        elif not any(anchor.subject == certs[-1].issuer for anchor in anchors):
            problems.append(f"its issuer ({_common_name(certs[-1].issuer)}) is not in the trust store, "
                            "as with an intercepting proxy's own CA")
        else:
            problems.append(f"its chain does not verify: {chain_error}")
    return facts, not problems, problems, store_path


def _verify(certs, name: str, store, when) -> str | None:
    from cryptography.x509 import verification

    try:
        subject = verification.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        try:
            subject = verification.DNSName(name)
        except ValueError as error:
            return str(error)
    try:
        verifier = verification.PolicyBuilder().store(store).time(when).build_server_verifier(subject)
        verifier.verify(certs[0], certs[1:])
    except (verification.VerificationError, ValueError) as error:
        return str(error)
    return None


def _load_anchors(path: str | None) -> list:
    from cryptography import x509

    if not path:
        return []
    try:
        with open(path, "rb") as handle, warnings.catch_warnings():
            # a system bundle may hold an old root with a non-positive serial: still an anchor
            warnings.simplefilter("ignore")
            return x509.load_pem_x509_certificates(handle.read())
    except (OSError, ValueError):
        return []


def _subject_alt_names(cert) -> list[str]:
    from cryptography import x509

    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*extension.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in extension.get_values_for_type(x509.IPAddress))]


def _common_name(name) -> str:
    from cryptography.x509.oid import NameOID

    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def _name_matches(name: str, pattern: str) -> bool:
    """RFC 6125 6.4: exact, or a wildcard standing for the whole left-most label only."""
    name, pattern = name.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return name == pattern


# -- naming the records of a capture ------------------------------------------------------------


HTTP_LINE_MAX = 60  # bytes of an HTTP message's first line that `describe` shows


def describe(payload: bytes) -> str:
    """What a TCP payload is, in a few words: its TLS records (a run of one kind counted, as
    "Application Data x4"), or an HTTP message's first line (`probe/files/_flowjson.pyx` writes that
    one as this does)."""
    if payload.startswith(HTTP_STARTS):
        return payload.split(b"\r\n", 1)[0].split(b"\n", 1)[0][:HTTP_LINE_MAX].decode("latin-1")
    runs: list[list] = []
    for name in tls_records(payload):
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    return ", ".join(name if count == 1 else f"{name} x{count}" for name, count in runs)


def tls_records(payload: bytes) -> list[str]:
    """The names of the TLS records that start this payload (empty if it does not start with one)."""
    names: list[str] = []
    offset = 0
    while offset + 5 <= len(payload):
        content_type, major, length = payload[offset], payload[offset + 1], struct.unpack_from(
            "!H", payload, offset + 3)[0]
        if content_type not in CONTENT_TYPES or major != 3 or length > 18432:  # RFC 8446 5.2's limit
            break
        body = payload[offset + 5:offset + 5 + length]
        names.append(_record_name(content_type, body, length, after_ccs="ChangeCipherSpec" in names))
        offset += 5 + length
    return names


def _record_name(content_type: int, body: bytes, length: int, after_ccs: bool) -> str:
    cut = "" if len(body) == length else " (continues)"
    if content_type == 21:
        if length == 2 and len(body) == 2:
            level = ALERT_LEVELS.get(body[0], str(body[0]))
            return f"Alert ({level}, {ALERT_DESCRIPTIONS.get(body[1], body[1])})"
        return "Encrypted Alert"
    if content_type != 22:
        return CONTENT_TYPES[content_type] + cut
    if after_ccs or len(body) < 4 or body[0] not in HANDSHAKE_TYPES:
        return "Encrypted Handshake Message" + cut
    kind = HANDSHAKE_TYPES[body[0]]
    if body[0] == 1:
        sni = client_hello_sni(body)
        return (f"ClientHello (SNI {sni})" if sni else kind if cut else "ClientHello (no SNI)") + cut
    return kind + cut


def client_hello_sni(handshake: bytes) -> str | None:
    """The server_name of a ClientHello handshake message (RFC 8446 4.1.2, RFC 6066 3), or None."""
    try:
        if handshake[0] != 1:
            return None
        end = min(len(handshake), 4 + int.from_bytes(handshake[1:4], "big"))
        offset = 4 + 2 + 32  # type and length, legacy_version, random
        offset += 1 + handshake[offset]  # legacy_session_id
        offset += 2 + struct.unpack_from("!H", handshake, offset)[0]  # cipher_suites
        offset += 1 + handshake[offset]  # legacy_compression_methods
        extensions_end = min(end, offset + 2 + struct.unpack_from("!H", handshake, offset)[0])
        offset += 2
        while offset + 4 <= extensions_end:
            kind, length = struct.unpack_from("!HH", handshake, offset)
            offset += 4
            if kind == 0:  # server_name: a list of (type, name); type 0 is host_name
                position, list_end = offset + 2, offset + 2 + struct.unpack_from("!H", handshake, offset)[0]
                while position + 3 <= list_end:
                    name_type, name_length = handshake[position], struct.unpack_from("!H", handshake, position + 1)[0]
                    if name_type == 0:
                        return handshake[position + 3:position + 3 + name_length].decode("ascii", "replace")
                    position += 3 + name_length
                return None
            offset += length
    except (IndexError, struct.error):
        return None
    return None
