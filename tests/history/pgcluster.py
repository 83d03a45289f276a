"""A throwaway PostgreSQL cluster for the tests, from Debian's `postgresql` package.

`initdb` in a new temporary directory, as the `postgres` user when the tests run as root
(PostgreSQL refuses to run as root), listening on a free port of 127.0.0.1 and on a unix
socket in that directory; `stop()` ends the server (by its data directory) and removes the
directory, whatever the tests did. No system service is used or touched.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

PASSWORD = "s3cret-Pw.42"  # the `probe` role's; tests check it is never printed


def bindir() -> str | None:
    """Where Debian puts the server's programs (/usr/lib/postgresql/VERSION/bin), newest first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]), reverse=True)
    return os.path.dirname(found[0]) if found else None


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


class Cluster:
    def __init__(self, durable: bool = False):
        self.durable = durable  # False: no fsync, for speed (tests); True: PostgreSQL's defaults
        self.bin = bindir()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server programs (apt-get install postgresql)")
        self.as_postgres = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="probe-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.started = False
        if self.as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    def _run(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        command = list(argv)
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr or done.stdout}")
        return done

    def start(self) -> "Cluster":
        try:
            self._run(f"{self.bin}/initdb", "-D", self.data, "-U", "postgres", "--auth-local=trust",
                      "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
            options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} "
                       "-c max_connections=60")
            if not self.durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            # -w: pg_ctl returns once the server accepts connections (it polls, as pg_isready does)
            self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-w", "-t", "60", "-o", options,
                      "-l", os.path.join(self.dir, "server.log"), "start")
            self.started = True
            ready = self._run(f"{self.bin}/pg_isready", "-h", self.dir, "-p", str(self.port), check=False)
            if ready.returncode != 0:
                raise RuntimeError(f"pg_isready: {ready.stdout}")
            self.sql(f"CREATE ROLE probe LOGIN PASSWORD '{PASSWORD}'")
        except BaseException:
            self.stop()
            raise
        return self

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement as the superuser over the unix socket; its output, unaligned."""
        return self._run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-p",
                         str(self.port), "-U", "postgres", "-d", database, "-c", statement).stdout.strip()

    def new_database(self, name: str) -> str:
        self.sql(f"CREATE DATABASE {name} OWNER probe")
        return name

    def socket_url(self, database: str, user: str = "postgres") -> str:
        """A URL through the unix socket (trust: no password)."""
        return f"postgresql://{user}@/{database}?host={self.dir}&port={self.port}"

    def tcp_url(self, database: str, password: str | None = PASSWORD) -> str:
        """A URL through 127.0.0.1 as `probe`, with a password (scram-sha-256)."""
        secret = f":{password}" if password is not None else ""
        return f"postgresql://probe{secret}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            if self.started:
                self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
                self.started = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running(durable: bool = False):
    """A started cluster, stopped and removed at the end, whatever happened; a pytest skip where
    Debian's server is not installed."""
    if bindir() is None:
        import pytest

        pytest.skip("no PostgreSQL server (apt-get install postgresql; .ci/run does)")
    cluster = Cluster(durable).start()
    try:
        yield cluster
    finally:
        cluster.stop()
