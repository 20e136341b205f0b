"""Uploading closed recordings to S3-compatible object storage, resumably.

Theory of operation
-------------------
A recording is uploaded once its session has closed (sealed or not: a session a gateway
stop interrupted is uploaded as it is). The local file is the write-ahead log and is not
touched until the object is known to be complete and right.

Each recording goes up as one multipart upload of ``part_size`` parts. The store keeps the
upload (table ``recording_uploads``): its upload id, the file's size and SHA-256, and each
part's number, ETag and size, written as soon as that part is acknowledged. A run that
finds an upload already started asks the server which parts it holds (``ListParts``) and
sends only the parts that are not both recorded and listed with the same ETag and size, so
a crash or restart never sends a finished part again. If the server no longer knows the
upload id (aborted, expired, or completed just before a crash) the object is looked up
first — a complete object with the right size and digest is adopted — and otherwise the
upload starts over. If the file no longer matches what was started (size, digest, part
size, bucket or key) the old upload is aborted and a new one begins.

After ``CompleteMultipartUpload`` the object's size and the ``sha256`` metadata written at
its creation are checked against the file; then the session row gets its
``recording_location`` (``s3://bucket/key``), and only after that is the local file deleted
(unless ``keep_local``) and the upload row with it. A crash in between leaves an upload row
whose session has a location: the next run deletes that local copy (readers prefer the
local file meanwhile, and it is the same bytes).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import or_, select, tuple_

from jitgate.recording.s3 import NoSuchObject, NoSuchUpload, ObjectStoreError, Part, S3Bucket
from jitgate.store.db import Store
from jitgate.store.models import RecordingUploadRow, SessionRow, utcnow

log = logging.getLogger("jitgate.recording")

PAGE = 100
#: Failures in a row after which a run gives up (the bucket is likely unreachable).
MAX_FAILURES = 3
_CHUNK = 1 << 20


class UploadError(Exception):
    """The uploaded object does not match the recording (it is uploaded again)."""


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    size: int
    sha256: str


def _digest(path: Path) -> _File:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return _File(path, size, sha.hexdigest())


class Stopped(Exception):
    """The serve process is stopping; the upload goes on at the next start."""


class Uploader:
    def __init__(
        self,
        store: Store,
        root: Path,
        bucket: S3Bucket,
        *,
        part_size: int,
        keep_local: bool = False,
    ) -> None:
        self.store = store
        self.root = root
        self.bucket = bucket
        self.part_size = part_size
        self.keep_local = keep_local
        self._failing: set[str] = set()

    def _pending(self) -> Iterator[SessionRow]:
        """Closed sessions with a recording not uploaded yet, oldest first."""
        after: tuple[datetime, str] | None = None
        while True:
            stmt = (
                select(SessionRow)
                .where(
                    SessionRow.ended_at.is_not(None),
                    SessionRow.recording_path.is_not(None),
                    SessionRow.recording_location.is_(None),
                    or_(
                        SessionRow.recording_state.is_(None),
                        SessionRow.recording_state.not_in(["deleted", "off"]),
                    ),
                )
                .order_by(SessionRow.ended_at, SessionRow.id)
                .limit(PAGE)
            )
            if after is not None:
                stmt = stmt.where(tuple_(SessionRow.ended_at, SessionRow.id) > tuple_(*after))
            with self.store.session() as db:
                rows = list(db.scalars(stmt))
                db.expunge_all()
            yield from rows
            if len(rows) < PAGE:
                return
            last = rows[-1]
            assert last.ended_at is not None
            after = (last.ended_at, last.id)

    def run_once(self, stopping: Callable[[], bool] = lambda: False) -> list[str]:
        """Upload every closed recording not uploaded yet; returns the session ids done.

        One recording failing does not hold the others back; it is tried again at the next
        run. After :data:`MAX_FAILURES` failures in a row the run stops early.
        """
        done: list[str] = []
        failures = 0
        self._finish_interrupted()
        for row in self._pending():
            if stopping() or failures >= MAX_FAILURES:
                break
            try:
                if self.upload(row, stopping):
                    done.append(row.id)
            except Stopped:
                break
            except (ObjectStoreError, UploadError, OSError) as exc:
                # Said once at ERROR while it keeps failing (it is retried every run).
                level = logging.DEBUG if row.id in self._failing else logging.ERROR
                log.log(level, "cannot upload the recording of session %s: %s", row.id, exc)
                if len(self._failing) >= 10_000:
                    self._failing.clear()
                self._failing.add(row.id)
                failures += 1
            else:
                self._failing.discard(row.id)
                failures = 0
        if done:
            log.info("uploaded %d recordings to s3://%s", len(done), self.bucket.name)
        return done

    def upload(self, row: SessionRow, stopping: Callable[[], bool] = lambda: False) -> bool:
        """Upload one closed recording (resuming its upload); False if it has no local file."""
        assert row.recording_path is not None
        path = self.root / row.recording_path
        try:
            file = _digest(path)
        except FileNotFoundError:
            return False
        key = self.bucket.key_for(row.recording_path)
        upload_id, parts = self._resume(row.id, key, file)
        if upload_id is None:  # the object was complete already
            self._finish(row.id, key, path)
            return True
        count = max(1, -(-file.size // self.part_size))
        with path.open("rb") as fh:
            for number in range(1, count + 1):
                if number in parts:
                    continue
                if stopping():
                    raise Stopped
                fh.seek((number - 1) * self.part_size)
                data = fh.read(self.part_size)
                parts[number] = self.bucket.upload_part(key, upload_id, number, data)
                self._save_parts(row.id, parts)
        self.bucket.complete(key, upload_id, [parts[n] for n in sorted(parts)])
        try:
            self._check(key, file)
        except (UploadError, NoSuchObject):
            self._forget(row.id)  # start over next time
            raise
        self._finish(row.id, key, path)
        return True

    def _resume(self, session_id: str, key: str, file: _File) -> tuple[str | None, dict[int, Part]]:
        """The upload to continue and its finished parts; (None, {}) when the object is
        already complete and right."""
        with self.store.session() as db:
            state = db.get(RecordingUploadRow, session_id)
            if state is not None:
                db.expunge(state)
        if state is not None:
            same = (state.bucket, state.key, state.size, state.sha256, state.part_size) == (
                self.bucket.name,
                key,
                file.size,
                file.sha256,
                self.part_size,
            )
            if not same:
                log.warning("%s: the file differs from the upload started; restarting", key)
                self.bucket.named(state.bucket).abort(state.key, state.upload_id)
            else:
                try:
                    listed = {p.number: p for p in self.bucket.list_parts(key, state.upload_id)}
                except NoSuchUpload:
                    try:
                        self._check(key, file)
                        return None, {}
                    except (UploadError, NoSuchObject):
                        log.info("%s: the upload was gone; starting over", key)
                else:
                    parts = {}
                    for item in state.parts:
                        part = Part(int(item["n"]), str(item["etag"]), int(item["size"]))
                        held = listed.get(part.number)
                        if held is not None and held.same_as(part):
                            parts[part.number] = part
                    return state.upload_id, parts
        upload_id = self.bucket.create_upload(key, {"sha256": file.sha256, "session": session_id})
        with self.store.session() as db:
            old = db.get(RecordingUploadRow, session_id)
            if old is not None:
                db.delete(old)
                db.flush()
            db.add(
                RecordingUploadRow(
                    session_id=session_id,
                    bucket=self.bucket.name,
                    key=key,
                    upload_id=upload_id,
                    size=file.size,
                    sha256=file.sha256,
                    part_size=self.part_size,
                    parts=[],
                )
            )
        return upload_id, {}

    def _save_parts(self, session_id: str, parts: dict[int, Part]) -> None:
        with self.store.session() as db:
            state = db.get(RecordingUploadRow, session_id)
            if state is None:
                raise UploadError("the upload's row disappeared (the recording was deleted?)")
            state.parts = [
                {"n": p.number, "etag": p.etag, "size": p.size}
                for p in (parts[n] for n in sorted(parts))
            ]
            state.updated_at = utcnow()

    def _check(self, key: str, file: _File) -> None:
        info = self.bucket.head(key)
        if info.size != file.size or info.metadata.get("sha256") != file.sha256:
            raise UploadError(
                f"s3://{self.bucket.name}/{key}: the object ({info.size} bytes, sha256 "
                f"{info.metadata.get('sha256')}) does not match the recording ({file.size} "
                f"bytes, sha256 {file.sha256})"
            )

    def _forget(self, session_id: str) -> None:
        with self.store.session() as db:
            state = db.get(RecordingUploadRow, session_id)
            if state is not None:
                db.delete(state)

    def _finish(self, session_id: str, key: str, path: Path) -> None:
        """Record where the object is, then let the local copy go.

        The upload row stays until the local file is deleted: a crash in between leaves a
        row whose session has its location already, and the next run finishes the job."""
        with self.store.session() as db:
            row = db.get(SessionRow, session_id)
            gone = row is None or row.recording_path is None
            if row is not None and not gone:
                row.recording_location = self.bucket.location(key)
        if gone:  # retention deleted the recording meanwhile: the object goes too
            self.bucket.delete(key)
            self._forget(session_id)
            return
        self._release(session_id, path)

    def _release(self, session_id: str, path: Path | None) -> None:
        if not self.keep_local and path is not None:
            path.unlink(missing_ok=True)
        self._forget(session_id)

    def _finish_interrupted(self) -> None:
        """Delete the local copies a crash kept after their upload was recorded."""
        stmt = (
            select(RecordingUploadRow.session_id, SessionRow.recording_path)
            .join(SessionRow, SessionRow.id == RecordingUploadRow.session_id)
            .where(SessionRow.recording_location.is_not(None))
        )
        with self.store.session() as db:
            rows = [(str(r[0]), r[1]) for r in db.execute(stmt)]
        for session_id, relative in rows:
            self._release(session_id, self.root / relative if relative else None)
