"""An S3-compatible bucket through boto3: the few calls that recordings need.

boto3 is an optional dependency (the ``s3`` extra) and is imported only when object
storage is configured. Its errors are mapped to :class:`ObjectStoreError` here, at the
boundary; :class:`NoSuchUpload` and :class:`NoSuchObject` say what callers act on.
Clients talk path-style to a configured ``endpoint_url`` (what S3-compatible servers
expect) and compute checksums only where the API requires them; every part is sent with
its ``Content-MD5``, which the server checks.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jitgate.config import S3Settings


class ObjectStoreError(Exception):
    """The object storage refused or could not be reached (usually worth a retry)."""


class NoSuchUpload(ObjectStoreError):
    """The multipart upload is gone (completed, aborted, or expired by a lifecycle rule)."""


class NoSuchObject(ObjectStoreError):
    """There is no object under this key."""


@dataclass(frozen=True, slots=True)
class Part:
    number: int
    etag: str
    size: int

    def same_as(self, other: Part) -> bool:
        return (self.number, self.size, self.etag.strip('"')) == (
            other.number,
            other.size,
            other.etag.strip('"'),
        )


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    metadata: Mapping[str, str]


def parse_location(location: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key)."""
    if not location.startswith("s3://") or "/" not in location[5:]:
        raise ValueError(f"not an s3:// location: {location!r}")
    bucket, _, key = location[5:].partition("/")
    return bucket, key


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        return str(error.get("Code", ""))
    return ""


class S3Bucket:
    """One bucket and key prefix; ``client`` is a boto3 S3 client."""

    def __init__(self, client: Any, name: str, prefix: str = "") -> None:
        self.client = client
        self.name = name
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    @classmethod
    def from_settings(cls, settings: S3Settings) -> S3Bucket:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ObjectStoreError(
                "recording.storage 's3' needs boto3 (install jitgate with the 's3' extra)"
            ) from exc
        config = Config(
            connect_timeout=min(settings.timeout_seconds, 10),
            read_timeout=settings.timeout_seconds,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"} if settings.endpoint_url else None,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        secret = settings.secret_access_key
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=config,
        )
        return cls(client, settings.bucket, settings.prefix)

    def named(self, name: str) -> S3Bucket:
        """The same client on another bucket (a recording uploaded under older settings)."""
        return self if name == self.name else S3Bucket(self.client, name, self.prefix)

    def key_for(self, relative: str) -> str:
        return self.prefix + relative.lstrip("/")

    def location(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.name, **kwargs)
        except ClientError as exc:
            code = _code(exc)
            where = f"s3://{self.name}/{kwargs.get('Key', '')}"
            if code == "NoSuchUpload":
                raise NoSuchUpload(f"{where}: the multipart upload is gone") from exc
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NoSuchObject(f"{where}: no such object") from exc
            raise ObjectStoreError(f"{where}: {method} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(f"s3://{self.name}: {method} failed: {exc}") from exc

    # ------------------------------------------------------------ multipart upload

    def create_upload(self, key: str, metadata: Mapping[str, str]) -> str:
        answer = self._call(
            "create_multipart_upload",
            Key=key,
            Metadata=dict(metadata),
            ContentType="application/x-ndjson",
        )
        return str(answer["UploadId"])

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> Part:
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        answer = self._call(
            "upload_part",
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ContentMD5=md5,
        )
        return Part(number, str(answer["ETag"]), len(data))

    def list_parts(self, key: str, upload_id: str) -> list[Part]:
        parts: list[Part] = []
        marker = 0
        while True:
            answer = self._call("list_parts", Key=key, UploadId=upload_id, PartNumberMarker=marker)
            for item in answer.get("Parts", []):
                parts.append(Part(int(item["PartNumber"]), str(item["ETag"]), int(item["Size"])))
            if not answer.get("IsTruncated"):
                return parts
            marker = int(answer["NextPartNumberMarker"])

    def complete(self, key: str, upload_id: str, parts: list[Part]) -> None:
        self._call(
            "complete_multipart_upload",
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]},
        )

    def abort(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(NoSuchUpload):
            self._call("abort_multipart_upload", Key=key, UploadId=upload_id)

    # ---------------------------------------------------------------------- objects

    def head(self, key: str) -> ObjectInfo:
        answer = self._call("head_object", Key=key)
        return ObjectInfo(int(answer["ContentLength"]), dict(answer.get("Metadata") or {}))

    def get(self, key: str) -> bytes:
        answer = self._call("get_object", Key=key)
        from botocore.exceptions import BotoCoreError

        try:
            return bytes(answer["Body"].read())
        except BotoCoreError as exc:
            raise ObjectStoreError(f"s3://{self.name}/{key}: read failed: {exc}") from exc
        finally:
            answer["Body"].close()

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=key)
