"""TLS material for the lab, made with `openssl` in the lab's workdir (removed with it).

Two certificate authorities, each with one server certificate for every name the scenarios use:
the lab's own (the server's nginx presents its certificate; clients are given its CA file, as
`curl --cacert`), and an interception CA that only the TLS-intercepting box presents, trusted by
nobody unless told (Kazakhstan's "Qaznet Trust Network" of 2019 in miniature). Keys are P-256,
valid for two days: a lab lives for minutes.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

SERVER_NAMES = ("www.example.com", "example.com", "blocked.example", "www.blocked.example")
VALID_DAYS = 2
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Issued:
    """A CA certificate and one server certificate it signed, with that certificate's key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_pki(folder: Path, ca_name: str, names: Sequence[str] = SERVER_NAMES) -> Issued:
    """A fresh CA called `ca_name` in `folder`, and a certificate for `names` (the first is its
    subject; all are subjectAltNames) signed by it."""
    folder.mkdir(mode=0o755, parents=True, exist_ok=False)
    ca_key, ca_file = folder / "ca.key", folder / "ca.crt"
    key_file, csr, cert_file = folder / "server.key", folder / "server.csr", folder / "server.crt"
    _openssl("req", "-x509", *_KEY, "-keyout", ca_key, "-out", ca_file, "-days", VALID_DAYS,
             "-subj", f"/CN={ca_name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", *_KEY, "-keyout", key_file, "-out", csr, "-subj", f"/CN={names[0]}")
    extensions = folder / "server.ext"
    extensions.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid:always\n"
        f"subjectAltName = {', '.join(f'DNS:{name}' for name in names)}\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca_file, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert_file, "-days", VALID_DAYS, "-extfile", extensions)
    for public in (ca_file, cert_file):
        public.chmod(0o644)
    return Issued(ca_file, cert_file, key_file)


def _openssl(*args: object) -> None:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]}: {done.stderr.strip()}")
