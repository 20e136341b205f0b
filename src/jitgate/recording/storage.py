"""Where a recording's bytes are: the local file, or its object in S3-compatible storage.

The local file in the data dir is always the write-ahead log of a session (see
:mod:`jitgate.recording.log`). With ``recording.storage: s3``, a closed recording is
uploaded (:mod:`jitgate.recording.upload`) and the session row's ``recording_location``
says where (``s3://bucket/key``); the local file is deleted then, unless ``keep_local``.
:meth:`RecordingStorage.read` serves a recording from the local file while it exists and
from the object store otherwise — the whole object: a recording is bounded by its session.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from jitgate.recording.s3 import NoSuchObject, ObjectStoreError, S3Bucket, parse_location
from jitgate.store.db import Store
from jitgate.store.models import RecordingUploadRow, SessionRow

if TYPE_CHECKING:
    from jitgate.config import RecordingSettings

log = logging.getLogger("jitgate.recording")


class RecordingUnavailable(Exception):
    """The session has no recording that can be read (off, deleted, or lost)."""


def iter_events(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip():
            yield orjson.loads(line)


def _lines_of(fh: BinaryIO) -> Iterator[bytes]:
    with fh:
        yield from fh


class RecordingStorage:
    """Reads and deletes recordings wherever they are; ``bucket`` is None for local only."""

    def __init__(self, root: Path, store: Store, bucket: S3Bucket | None = None) -> None:
        self.root = root
        self.store = store
        self.bucket = bucket

    @classmethod
    def from_settings(
        cls, root: Path, store: Store, settings: RecordingSettings
    ) -> RecordingStorage:
        bucket = None
        if settings.storage == "s3" and settings.s3 is not None:
            bucket = S3Bucket.from_settings(settings.s3)
        return cls(root, store, bucket)

    def local_path(self, row: SessionRow) -> Path | None:
        """The recording's file in the data dir (whether or not it still exists)."""
        if not row.recording_path:
            return None
        path = (self.root / row.recording_path).resolve()
        if self.root.resolve() not in path.parents:
            return None
        return path

    def read(self, row: SessionRow) -> bytes:
        """The recording's bytes. Raises :class:`RecordingUnavailable` when there is none,
        :class:`ObjectStoreError` when the object store cannot be read just now."""
        path = self._path(row)
        with contextlib.suppress(FileNotFoundError):
            return path.read_bytes()
        return self._fetch(row)

    def lines(self, row: SessionRow) -> Iterator[bytes]:
        """The recording's lines: streamed from the local file while there is one (an open
        file stays readable if the uploader deletes it), else from the fetched object."""
        path = self._path(row)
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            return iter(self._fetch(row).splitlines())
        return _lines_of(fh)

    def readable(self, row: SessionRow) -> bool:
        """Whether the recording can be read now, from the data dir or the object store.
        Raises :class:`ObjectStoreError` when the object store cannot tell just now."""
        try:
            path = self._path(row)
            if path.exists():
                return True
            self._fetch(row)
        except RecordingUnavailable:
            return False
        return True

    def events(self, row: SessionRow) -> Iterator[dict[str, Any]]:
        return iter_events(self.lines(row))

    def _path(self, row: SessionRow) -> Path:
        path = self.local_path(row)
        if path is None:
            raise RecordingUnavailable("this session has no recording")
        return path

    def _fetch(self, row: SessionRow) -> bytes:
        location = row.recording_location
        if location is None:  # it may have been uploaded since the row was read
            with self.store.session() as db:
                location = db.scalar(
                    select(SessionRow.recording_location).where(SessionRow.id == row.id)
                )
        if not location:
            raise RecordingUnavailable("the recording of this session is not available")
        bucket, key = self._object(location)
        try:
            return bucket.get(key)
        except NoSuchObject:
            gone = f"the recording of this session is gone ({location})"
            raise RecordingUnavailable(gone) from None

    def _object(self, location: str) -> tuple[S3Bucket, str]:
        name, key = parse_location(location)
        if self.bucket is None:
            raise ObjectStoreError(
                f"the recording is in object storage ({location}) but recording.storage is not 's3'"
            )
        return self.bucket.named(name), key

    def delete(self, db: Session, row: SessionRow) -> None:
        """Delete the local file, the uploaded object and any upload in progress.

        Raises OSError or :class:`ObjectStoreError`; the row is then left as it was.
        """
        upload = db.get(RecordingUploadRow, row.id)
        if upload is not None and row.recording_location is not None:
            db.delete(upload)  # complete already; only its local copy was left to delete
        elif upload is not None:
            if self.bucket is None:
                raise ObjectStoreError("an upload to object storage is open but s3 is off")
            self.bucket.named(upload.bucket).abort(upload.key, upload.upload_id)
            db.delete(upload)
        if row.recording_location:
            bucket, key = self._object(row.recording_location)
            bucket.delete(key)
        path = self.local_path(row)
        if path is not None:
            path.unlink(missing_ok=True)
        row.recording_location = None
