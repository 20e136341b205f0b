"""Recordings in S3-compatible object storage (``recording.storage: s3``).

A moto server process on a loopback port stands in for S3 here: it speaks the S3 REST
API (multipart uploads, ListParts, object metadata, the 5 MiB minimum part size) to the
gateway's real boto3 client. Sessions are real psql sessions through the in-process
gateway; the uploader is the one ``jitgate serve`` runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from sqlalchemy import select, update

from jitgate.api.app import create_app
from jitgate.recording import housekeeping
from jitgate.recording.export import Cursor, StoreSource
from jitgate.recording.recorder import SessionMeta
from jitgate.recording.retention import apply_retention
from jitgate.recording.s3 import ObjectStoreError, Part, S3Bucket
from jitgate.recording.upload import Uploader
from jitgate.store.models import RecordingUploadRow, SessionRow, utcnow
from tests.fixtures.gateway import serve_app
from tests.fixtures.postgres_gateway import PgGateway, run_pg_gateway, unique
from tests.integration.postgres.test_psql import psql
from tests.integration.recording.conftest import Console
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres

BUCKET = "jitgate-recordings"
PREFIX = "rec/"
MiB = 1 << 20
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on a free loopback port, with an empty bucket."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the S3 stand-in did not start") from None
                time.sleep(0.05)
        _client(url).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _client(url: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def s3_gateway(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgGateway]:
    recording = {
        "storage": "s3",
        "s3": {
            "endpoint_url": s3_endpoint,
            "bucket": BUCKET,
            "prefix": PREFIX,
            "region": "us-east-1",
            "part_size": 5 * MiB,
            "upload_interval_seconds": 0.1,
            **CREDENTIALS,
        },
    }
    data_dir = tmp_path_factory.mktemp("s3-gateway") / "data"
    with run_pg_gateway(data_dir, settings_overrides={"recording": recording}) as gw:
        yield gw


@pytest.fixture(scope="module")
def s3_console(s3_gateway: PgGateway) -> Iterator[Console]:
    with (
        serve_app(create_app(s3_gateway.gateway)) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        yield Console(url, http, s3_gateway.admin_token)


def _bucket(gw: PgGateway) -> S3Bucket:
    bucket = gw.gateway.recording_storage.bucket
    assert bucket is not None
    return bucket


def _uploader(gw: PgGateway, bucket: S3Bucket | None = None) -> Uploader:
    return Uploader(
        gw.gateway.store, gw.gateway.paths.recordings, bucket or _bucket(gw), part_size=5 * MiB
    )


def _row(gw: PgGateway, session_id: str) -> SessionRow:
    with gw.gateway.store.session() as db:
        row = db.get(SessionRow, session_id)
        assert row is not None
        db.expunge(row)
        return row


def _object(gw: PgGateway, row: SessionRow) -> bytes:
    assert row.recording_path is not None
    key = PREFIX + row.recording_path
    assert row.recording_location == f"s3://{BUCKET}/{key}"
    return bytes(_bucket(gw).client.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _psql_session(gw: PgGateway, pg: PgCluster, *, options: dict[str, Any] | None = None) -> str:
    name = gw.add_connection(pg).name
    if options:
        gw.gateway.connections.update(name, options=options)
    out = psql(gw, name, "-c", "SELECT 'evidence-41' AS word", "-c", "SELECT 2 + 2")
    assert out.stdout.split() == ["evidence-41", "4"]
    return gw.session(name).id


def test_an_uploaded_recording_is_read_and_verified_from_the_bucket(
    s3_gateway: PgGateway, pg_scram: PgCluster, s3_console: Console
) -> None:
    gw = s3_gateway
    session_id = _psql_session(gw, pg_scram)
    row = _row(gw, session_id)
    local = gw.recording_path(row)
    original = local.read_bytes()

    assert session_id in _uploader(gw).run_once()
    row = _row(gw, session_id)
    assert not local.exists()  # keep_local is off
    assert _object(gw, row) == original
    head = _bucket(gw).head(PREFIX + str(row.recording_path))
    assert head.size == len(original) and head.metadata["sha256"]
    with gw.gateway.store.session() as db:
        assert db.get(RecordingUploadRow, session_id) is None
    assert _uploader(gw).run_once() == []  # nothing twice

    # The API and the CLI read it from the bucket now.
    shown_row = s3_console.get(f"/api/v1/sessions/{session_id}").json()
    assert shown_row["recording_location"] == f"s3://{BUCKET}/{PREFIX}{row.recording_path}"
    events = s3_console.get(f"/api/v1/sessions/{session_id}/events").json()["items"]
    texts = [e.get("text") for e in events if e["type"] == "request"]
    assert texts == ["SELECT 'evidence-41' AS word", "SELECT 2 + 2"]
    assert events[-1]["type"] == "seal"
    tail = s3_console.get(f"/api/v1/sessions/{session_id}/tail")
    assert tail.status_code == 200 and "event: seal" in tail.text
    verified = s3_console.get(f"/api/v1/sessions/{session_id}/verify").json()
    assert verified["valid"] and verified["signature"] == "valid"
    done = s3_console.cli("audit", "verify", session_id)
    assert done.returncode == 0 and "recording intact" in done.stdout, done.stderr
    shown = s3_console.cli("sessions", "show", session_id, check=True)
    assert "evidence-41" in shown.stdout
    export = StoreSource(
        gw.gateway.store,
        gw.gateway.paths.recordings,
        storage=gw.gateway.recording_storage,
    )
    records, _ = export.fetch(Cursor(), 10_000)
    assert [r["seq"] for r in records if r.get("session") == session_id] == list(
        range(1, len(events) + 1)
    )

    # One changed byte in the object: verify names the event it is in.
    lines = original.splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines, 1) if b"evidence-41" in line)
    lines[number - 1] = lines[number - 1].replace(b"evidence-41", b"evidence-42", 1)
    _bucket(gw).client.put_object(
        Bucket=BUCKET, Key=PREFIX + str(row.recording_path), Body=b"".join(lines)
    )
    verified = s3_console.get(f"/api/v1/sessions/{session_id}/verify").json()
    assert not verified["valid"] and verified["first_bad_event"] == number
    failed = s3_console.cli("audit", "verify", session_id)
    assert failed.returncode != 0 and f"event {number}" in failed.stderr


def test_retention_deletes_the_object_and_legal_hold_keeps_it(
    s3_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    gw = s3_gateway
    due = _psql_session(gw, pg_scram, options={"recording_retention_days": 7})
    held = _psql_session(gw, pg_scram, options={"recording_retention_days": 7, "legal_hold": True})
    uploaded = _uploader(gw).run_once()
    assert due in uploaded and held in uploaded
    with gw.gateway.store.session() as db:
        db.execute(
            update(SessionRow)
            .where(SessionRow.id.in_([due, held]))
            .values(ended_at=utcnow() - timedelta(days=8))
        )
    due_key = PREFIX + str(_row(gw, due).recording_path)
    storage = gw.gateway.recording_storage
    deleted = apply_retention(gw.gateway.store, gw.gateway.paths.recordings, None, storage=storage)
    assert deleted == [due]
    row = _row(gw, due)
    assert (row.recording_state, row.recording_location, row.recording_path) == (
        "deleted",
        None,
        None,
    )
    listed = _bucket(gw).client.list_objects_v2(Bucket=BUCKET, Prefix=due_key)
    assert listed.get("KeyCount", 0) == 0
    assert _object(gw, _row(gw, held))  # kept under legal hold


def _big_recording(gw: PgGateway, size: int) -> str:
    """A sealed recording of ``size`` bytes or more, written by the gateway's recorder."""
    meta = SessionMeta(
        protocol="ssh",
        connection_id=None,
        connection_name=unique("big-terminal"),
        identity_id="00000000-0000-0000-0000-000000000000",
        identity_name="admin",
        actor_id=None,
        actor_name=None,
        auth_method="token",
        token_id=None,
        client_addr="127.0.0.1",
        client_program="test",
    )

    async def record() -> str:
        session = await gw.gateway.recorder.open(meta)
        chunk = os.urandom(MiB // 2).hex()  # 1 MiB of output per event
        for _ in range(size // len(chunk) + 1):
            session.event("term", {"t": 0.0, "s": "o", "d": chunk})
        await session.close("done", 0, 0)
        return session.session_id

    return gw.call(record())


class _Flaky(S3Bucket):
    """The gateway's bucket, counting the parts it sends, failing at one part number."""

    def __init__(self, bucket: S3Bucket, fail_at: int | None = None) -> None:
        super().__init__(bucket.client, bucket.name, bucket.prefix)
        self.fail_at = fail_at
        self.sent: list[int] = []

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> Part:
        if number == self.fail_at:
            raise ObjectStoreError("the connection was reset (test)")
        part = super().upload_part(key, upload_id, number, data)
        self.sent.append(number)
        return part


def _stored_parts(gw: PgGateway, session_id: str) -> tuple[str, list[dict[str, Any]]]:
    with gw.gateway.store.session() as db:
        state = db.get(RecordingUploadRow, session_id)
        assert state is not None
        return state.upload_id, list(state.parts)


@pytest.mark.parametrize("upload_vanishes", [False, True], ids=["resumed", "restarted"])
def test_an_interrupted_upload_goes_on_from_the_next_part(
    s3_gateway: PgGateway, upload_vanishes: bool
) -> None:
    gw = s3_gateway
    session_id = _big_recording(gw, 11 * MiB)  # three parts of 5 MiB at most
    row = _row(gw, session_id)
    local = gw.recording_path(row)
    original = local.read_bytes()
    assert len(original) > 10 * MiB
    key = PREFIX + str(row.recording_path)

    failing = _Flaky(_bucket(gw), fail_at=2)
    with pytest.raises(ObjectStoreError):
        _uploader(gw, failing).upload(row)
    assert failing.sent == [1]
    upload_id, parts = _stored_parts(gw, session_id)
    assert [p["n"] for p in parts] == [1] and parts[0]["size"] == 5 * MiB
    listed = _bucket(gw).client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"]) for p in listed] == [(1, parts[0]["etag"])]
    assert local.exists() and _row(gw, session_id).recording_location is None
    if upload_vanishes:  # aborted by someone, or expired by a lifecycle rule
        _bucket(gw).client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)

    again = _Flaky(_bucket(gw))  # a restarted uploader: a new object, state from the store
    assert _uploader(gw, again).upload(_row(gw, session_id))
    assert again.sent == ([1, 2, 3] if upload_vanishes else [2, 3])
    assert _object(gw, _row(gw, session_id)) == original
    assert not local.exists()
    with gw.gateway.store.session() as db:
        assert db.get(RecordingUploadRow, session_id) is None
    # And the gateway reads it back whole from the bucket.
    verified = gw.gateway.recording_storage.read(_row(gw, session_id))
    assert verified == original


class _Crash(BaseException):
    """The gateway process dying at a chosen point."""


class _CrashBeforeCleanup(Uploader):
    def _release(self, session_id: str, path: Path | None) -> None:
        raise _Crash


def test_a_crash_after_the_upload_is_recorded_leaves_no_local_copy(
    s3_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    gw = s3_gateway
    session_id = _psql_session(gw, pg_scram)
    local = gw.recording_path(_row(gw, session_id))
    original = local.read_bytes()
    crashing = _CrashBeforeCleanup(
        gw.gateway.store, gw.gateway.paths.recordings, _bucket(gw), part_size=5 * MiB
    )
    with pytest.raises(_Crash):
        crashing.upload(_row(gw, session_id))
    assert _object(gw, _row(gw, session_id)) == original and local.exists()

    assert _uploader(gw).run_once() == []  # nothing to upload, only the copy to delete
    assert not local.exists()
    with gw.gateway.store.session() as db:
        assert db.get(RecordingUploadRow, session_id) is None
    assert gw.gateway.recording_storage.read(_row(gw, session_id)) == original


def test_serve_uploads_closed_recordings_in_the_background(
    s3_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    gw = s3_gateway

    async def start() -> tuple[asyncio.Event, asyncio.Task[None]]:
        stop = asyncio.Event()
        return stop, asyncio.get_running_loop().create_task(housekeeping.run(gw.gateway, stop))

    async def finish(stop: asyncio.Event, job: asyncio.Task[None]) -> None:
        stop.set()
        await asyncio.wait_for(job, 10)

    stop, job = gw.call(start())
    try:
        session_id = _psql_session(gw, pg_scram)
        local = gw.recording_path(_row(gw, session_id))
        deadline = time.monotonic() + 10
        # The location is recorded first, then the local copy goes.
        while _row(gw, session_id).recording_location is None or local.exists():
            assert time.monotonic() < deadline, "the recording was not uploaded"
            time.sleep(0.05)
    finally:
        gw.call(finish(stop, job))
    with gw.gateway.store.session() as db:
        pending = db.scalars(
            select(SessionRow.id).where(
                SessionRow.ended_at.is_not(None),
                SessionRow.recording_path.is_not(None),
                SessionRow.recording_location.is_(None),
            )
        ).all()
    assert pending == []
