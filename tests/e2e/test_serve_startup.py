"""`jitgate serve` start-up: one clear line and status 2 for what stops it; gateways that
start together against one store take turns with migrations and the first admin."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from jitgate.connections.vault import MasterKey
from jitgate.server.tls import generate_self_signed
from tests.support.served import start_gateway, stop, wait_ready


def _fails(data_dir: Path, extra_config: str = "") -> str:
    proc = start_gateway(data_dir, extra_config=extra_config)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _garbage_master_key(d: Path) -> str:
    d.mkdir(parents=True)
    (d / "master.key").write_text("not-a-key\n")
    return f"error: master key file {d / 'master.key'}: "


def _unreadable_master_key(d: Path) -> str:
    (d / "master.key").mkdir(parents=True)  # unreadable even for root
    return f"error: master key file {d / 'master.key'}: cannot read it"


def _broken_signing_key(d: Path) -> str:
    d.mkdir(parents=True)
    (d / "signing.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n")
    return f"error: signing key file {d / 'signing.key'}: not an Ed25519 private key"


def _broken_ssh_host_key(d: Path) -> str:
    (d / "ssh").mkdir(parents=True)
    (d / "ssh" / "host_ed25519_key").write_text("junk\n")
    return f"error: SSH host key file {d / 'ssh' / 'host_ed25519_key'}: cannot use it"


@pytest.mark.parametrize(
    "prepare",
    [_garbage_master_key, _unreadable_master_key, _broken_signing_key, _broken_ssh_host_key],
)
def test_broken_state_files_stop_startup_with_one_line(
    tmp_path: Path, prepare: Callable[[Path], str]
) -> None:
    data_dir = tmp_path / "data"
    expected = prepare(data_dir)
    assert _fails(data_dir).startswith(expected)


def test_tls_files_that_do_not_load_are_named(tmp_path: Path) -> None:
    cert, key = tmp_path / "gw.crt", tmp_path / "gw.key"
    generate_self_signed(cert, key)
    other_cert, other_key = tmp_path / "other.crt", tmp_path / "other.key"
    generate_self_signed(other_cert, other_key)
    config = f"tls:\n  cert_file: {cert}\n  key_file: {{key}}\n"

    (tmp_path / "junk.key").write_text("junk\n")
    line = _fails(tmp_path / "a", config.format(key=tmp_path / "junk.key"))
    assert (
        line
        == f"error: tls.key_file: {tmp_path / 'junk.key'} is not an unencrypted PEM private key"
    )
    line = _fails(tmp_path / "b", config.format(key=other_key))
    assert line.startswith(f"error: tls.key_file: {other_key} does not match the certificate")
    line = _fails(tmp_path / "c", config.format(key=tmp_path / "missing.key"))
    assert line == f"error: tls.key_file: {tmp_path / 'missing.key'} does not exist"


def test_unreachable_store_is_named_without_its_password(tmp_path: Path) -> None:
    port = _closed_port()
    line = _fails(
        tmp_path / "data", f"database_url: postgresql://jit:s3cret-pw@127.0.0.1:{port}/jitgate\n"
    )
    assert line.startswith(
        f"error: database_url: cannot use the store at postgresql://jit:***@127.0.0.1:{port}/"
    )
    assert "Connection refused" in line and "s3cret-pw" not in line


def test_busy_api_port_is_named(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        config = tmp_path / "busy.yaml"
        config.write_text(
            f"api:\n  port: {port}\nlisteners:\n  postgres:\n    port: 0\n  ssh:\n    port: 0\n"
        )
        proc = start_gateway(tmp_path / "data", config)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "Traceback" not in err
    assert f"error: api.port: cannot listen on 127.0.0.1:{port}" in err


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_gateways_starting_together_on_one_fresh_postgres(
    tmp_path: Path, fresh_pg_url: str
) -> None:
    dirs = [tmp_path / "one" / "data", tmp_path / "two" / "data"]
    for d in dirs:
        d.parent.mkdir()
    master_key = f"master_key: {MasterKey.generate().encode()}\n"  # shared credentials key
    procs = [
        start_gateway(d, extra_config=f"database_url: {fresh_pg_url}\n" + master_key) for d in dirs
    ]
    try:
        apis = [wait_ready(p, d, timeout=90) for p, d in zip(procs, dirs, strict=True)]
        for api in apis:
            assert httpx.get(api + "/readyz").status_code == 200
        token_files = [d / "admin.token" for d in dirs if (d / "admin.token").exists()]
        assert len(token_files) == 1
        token = token_files[0].read_text().strip()
        for api in apis:  # the one admin, seen by both gateways
            users = httpx.get(
                api + "/api/v1/users", headers={"Authorization": f"Bearer {token}"}
            ).json()
            assert [u["name"] for u in users["items"]] == ["admin"]
        with psycopg.connect(fresh_pg_url) as conn:
            assert conn.execute("SELECT count(*) FROM identities").fetchone() == (1,)
            assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
    finally:
        results = [stop(p) for p in procs]
    for code, _out, err in results:
        assert code == 0, err
