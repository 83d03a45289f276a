"""Certificates and an in-memory TLS server for the TLS tests: real OpenSSL on both ends, no network."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str = "probe test CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


def make_leaf(ca: Issued | None, names: list[str], days: tuple[int, int] = (-1, 30)) -> Issued:
    """A server certificate for `names`, issued by `ca` (None: self-signed), valid from NOW+days[0]
    to NOW+days[1]."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = ca.cert.subject if ca else _name(names[0])
    builder = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW + datetime.timedelta(days=days[0]))
               .not_valid_after(NOW + datetime.timedelta(days=days[1]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    if ca is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    return Issued(builder.sign(ca.key if ca else key, hashes.SHA256()), key)


def write_pem(directory: Path, name: str, *issued: Issued) -> str:
    path = directory / name
    path.write_bytes(b"".join(item.pem() for item in issued))
    return str(path)


class MemoryServer:
    """A TLS server over MemoryBIO: feed it the client's bytes, it answers as OpenSSL would, and
    once the handshake is done it answers any request with `response`."""

    def __init__(self, tmp: Path, leaf: Issued, response: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"):
        cert = write_pem(tmp, "server.pem", leaf)
        key = tmp / "server.key"
        key.write_bytes(leaf.key_pem())
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, str(key))
        context.set_alpn_protocols(["http/1.1"])
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.response, self.answered, self.handshaken = response, False, False
        self.received = b""

    def feed(self, data: bytes) -> bytes:
        self.incoming.write(data)
        if not self.handshaken:
            try:
                self.tls.do_handshake()
                self.handshaken = True
            except ssl.SSLWantReadError:
                return self.outgoing.read()
        try:
            while chunk := self.tls.read(65536):  # b"" once the client's close_notify is read
                self.received += chunk
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        if b"\r\n\r\n" in self.received and not self.answered:
            self.answered = True
            self.tls.write(self.response)
        return self.outgoing.read()
