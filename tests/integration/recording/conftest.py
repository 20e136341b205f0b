"""The in-process PostgreSQL gateway with its REST API served over real HTTP, and the
``jitgate`` CLI run as a subprocess against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from jitgate.api.app import create_app
from jitgate.recording import consumers
from tests.fixtures.gateway import serve_app
from tests.fixtures.postgres_gateway import PgGateway

JITGATE = [sys.executable, "-m", "jitgate.cli.main"]


@dataclass
class Console:
    """The gateway's API (as admin) and a way to run the CLI against it."""

    url: str
    http: httpx.Client
    token: str

    def get(self, path: str, **params: object) -> httpx.Response:
        return self.http.get(path, params=params, headers={"Authorization": f"Bearer {self.token}"})

    def cli(
        self, *args: str, timeout: float = 60, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "JITGATE_SERVER": self.url, "JITGATE_TOKEN": self.token}
        env.pop("JITGATE_CONFIG", None)
        result = subprocess.run(
            [*JITGATE, *args], capture_output=True, text=True, timeout=timeout, env=env
        )
        if check and result.returncode != 0:
            raise AssertionError(f"jitgate {' '.join(args)} failed: {result.stderr}")
        return result


@pytest.fixture(scope="session")
def console(pg_gateway: PgGateway) -> Iterator[Console]:
    with (
        serve_app(create_app(pg_gateway.gateway)) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        yield Console(url, http, pg_gateway.admin_token)


@pytest.fixture
def forget_consumers(pg_gateway: PgGateway) -> Iterator[None]:
    """Remove the export consumers a test registered on the shared gateway, even when it
    failed: a consumer left behind would hold recordings back from later tests' retention."""
    yield
    for consumer in consumers.consumers(pg_gateway.gateway.store):
        consumers.remove(pg_gateway.gateway.store, consumer.name, caller=None)


def tamper(path: Path, line: int, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (same length: one byte) in one line of a recording."""
    lines = path.read_bytes().splitlines(keepends=True)
    assert old in lines[line - 1], lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_bytes(b"".join(lines))
