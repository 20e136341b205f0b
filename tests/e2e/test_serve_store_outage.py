"""A real `jitgate serve` whose PostgreSQL store goes away (a cut TCP path) and comes back:
`/readyz` and the API answer 503 with a reason while it is gone, and recover after."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support.cutproxy import CutProxy
from tests.support.served import start_gateway, stop, wait_ready


@pytest.fixture
def proxy_to_store(fresh_pg_url: str) -> Iterator[tuple[CutProxy, str]]:
    url = make_url(fresh_pg_url)
    assert url.host == "127.0.0.1" and url.port
    proxy = CutProxy(url.port)
    yield proxy, url.set(port=proxy.port).render_as_string(hide_password=False)
    proxy.close()


def _until(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_store_outage_answers_503_and_recovers(
    tmp_path: Path, proxy_to_store: tuple[CutProxy, str]
) -> None:
    proxy, url = proxy_to_store
    data_dir = tmp_path / "data"
    proc = start_gateway(
        data_dir, extra_config=f"database_url: {url}\ntokens:\n  cache_seconds: 0\n"
    )
    try:
        api = wait_ready(proc, data_dir, timeout=60)
        token = (data_dir / "admin.token").read_text().strip()
        http = httpx.Client(base_url=api, timeout=30, headers={"Authorization": f"Bearer {token}"})
        assert http.get("/readyz").status_code == 200
        assert http.get("/api/v1/connections").status_code == 200

        proxy.outage()
        ready = http.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "unavailable" and ready.json()["reason"]
        for method, path in (
            ("GET", "/api/v1/connections"),
            ("GET", "/api/v1/whoami"),
            ("POST", "/api/v1/users"),
        ):
            body = {"name": "carol"} if method == "POST" else None
            answer = http.request(method, path, json=body)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["error"]["code"] == "unavailable", answer.text
            assert "Traceback" not in answer.text
        assert http.get("/healthz").status_code == 200  # the process itself is alive

        proxy.restore()
        _until(lambda: http.get("/readyz").status_code == 200)
        assert http.get("/api/v1/connections").status_code == 200
        created = http.post("/api/v1/users", json={"name": "carol"})
        assert created.status_code == 201, created.text
        http.close()
    finally:
        code, _out, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err
