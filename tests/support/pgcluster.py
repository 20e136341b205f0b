"""A throwaway PostgreSQL cluster (initdb + pg_ctl) for tests and benchmarks.

The cluster lives in a temporary directory, listens on a free loopback port, keeps its
socket in its own directory, and is removed on stop. ``auth`` picks the pg_hba method for
TCP connections (``trust``, ``scram-sha-256``, ``md5``, ``password``); the superuser's
password is set either way. When running as root, the server runs as the ``postgres``
system user (PostgreSQL refuses to run as root).
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
import time
from dataclasses import dataclass, field
from pathlib import Path


def pg_bindir() -> Path:
    env = os.environ.get("PG_BINDIR")
    if env:
        return Path(env)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    return Path(candidates[0]).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgCluster:
    auth: str = "trust"
    superuser: str = "postgres"
    password: str = "pg-super-secret"
    port: int = field(default_factory=free_port)
    settings: dict[str, str] = field(default_factory=dict)
    ssl: bool = False
    root: Path = field(init=False)
    _run_as: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.bindir = pg_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="jitgate-pg-"))
        self.datadir = self.root / "data"
        if os.geteuid() == 0:
            self._run_as = "postgres"
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            os.chmod(self.root, 0o755)  # noqa: S103 - the server user must enter it

    # ------------------------------------------------------------- process

    def _cmd(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = list(args)
        if self._run_as:
            argv = ["runuser", "-u", self._run_as, "--", *argv]
        return subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            cwd=self.root,
        )

    def start(self) -> PgCluster:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        self._cmd(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            self.superuser,
            "--pwfile",
            str(pwfile),
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale",
            "C.UTF-8",
            "--no-sync",
        )
        pwfile.unlink()
        self._write_hba()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
            "password_encryption": "'md5'" if self.auth == "md5" else "'scram-sha-256'",
            **self.settings,
        }
        if self.ssl:
            self._make_server_cert()
            conf.update(ssl="on", ssl_cert_file="'server.crt'", ssl_key_file="'server.key'")
        with (self.datadir / "postgresql.auto.conf").open("a") as fh:
            for key, value in conf.items():
                fh.write(f"{key} = {value}\n")
        self._cmd(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        # Re-set the password under the final password_encryption (md5 or SCRAM).
        self.psql(f"ALTER ROLE {self.superuser} PASSWORD '{self.password}'")
        return self

    def _write_hba(self) -> None:
        (self.datadir / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all all 127.0.0.1/32 {self.auth}\n"
            f"host all all ::1/128 {self.auth}\n"
            f"hostssl replication all 127.0.0.1/32 {self.auth}\n"
        )

    def _make_server_cert(self) -> None:
        from jitgate.server.tls import generate_self_signed

        cert, key = self.datadir / "server.crt", self.datadir / "server.key"
        generate_self_signed(cert, key, ("localhost", "127.0.0.1"))
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            for path in (cert, key):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.ca_cert = cert.read_text()

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._cmd(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-m",
                "immediate",
                "-w",
                "stop",
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------- clients

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL over the local socket as the superuser (trust); return tuples-only output."""
        result = self._cmd(
            str(self.bindir / "psql"),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.root),
            "-p",
            str(self.port),
            "-U",
            self.superuser,
            "-d",
            dbname,
            "-c",
            sql,
        )
        return result.stdout.strip()

    def dsn(
        self, dbname: str = "postgres", user: str | None = None, password: str | None = None
    ) -> str:
        user = user or self.superuser
        pw = password if password is not None else self.password
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user} password={pw}"

    def url(self, dbname: str = "postgres") -> str:
        return (
            f"postgresql+psycopg://{self.superuser}:{self.password}@127.0.0.1:{self.port}/{dbname}"
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.psql("SELECT 1")
                return
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not become ready")
