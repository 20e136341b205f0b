"""Connection concepts: target types, TLS modes, credentials (which never print)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from jitgate.errors import InvalidInput
from jitgate.recording.options import check_options as check_recording_options


class ConnectionType(StrEnum):
    POSTGRES = "postgres"
    MYSQL = "mysql"
    SSH = "ssh"
    HTTP = "http"
    KUBERNETES = "kubernetes"
    MCP = "mcp"


DEFAULT_PORTS = {
    ConnectionType.POSTGRES: 5432,
    ConnectionType.MYSQL: 3306,
    ConnectionType.SSH: 22,
    ConnectionType.HTTP: 443,
    ConnectionType.KUBERNETES: 6443,
    ConnectionType.MCP: 443,
}


class TLSMode(StrEnum):
    """How the gateway protects its leg to the target (libpq's sslmode vocabulary)."""

    DISABLE = "disable"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


class CredentialKind(StrEnum):
    PASSWORD = "password"
    PRIVATE_KEY = "private_key"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class Credential:
    """A target secret. ``repr``/``str`` never show it; only the data path reads it."""

    kind: CredentialKind
    secret: str = field(repr=False)
    passphrase: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"<{self.kind.value} credential>"

    def to_bytes(self) -> bytes:
        data = {"kind": self.kind.value, "secret": self.secret}
        if self.passphrase is not None:
            data["passphrase"] = self.passphrase
        return json.dumps(data).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Credential:
        data = json.loads(raw)
        return cls(CredentialKind(data["kind"]), data["secret"], data.get("passphrase"))


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    id: str
    name: str
    type: ConnectionType
    host: str
    port: int
    database: str | None
    username: str | None
    tls_mode: TLSMode
    tls_ca: str | None
    tls_server_name: str | None
    tags: dict[str, str]
    options: dict[str, Any]
    description: str | None
    credential_kind: CredentialKind | None
    created_at: datetime
    updated_at: datetime

    @property
    def has_credential(self) -> bool:
        return self.credential_kind is not None


_TAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
_HOST = re.compile(r"[A-Za-z0-9._:\[\]-]{1,255}")


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > 64:
        raise InvalidInput("at most 64 tags")
    for key, value in tags.items():
        if not _TAG_KEY.fullmatch(key):
            raise InvalidInput(f"invalid tag key {key[:64]!r}")
        if not isinstance(value, str) or len(value) > 256 or "\x00" in value:
            raise InvalidInput(f"invalid value for tag {key!r}")
    return dict(tags)


def parse_tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise InvalidInput(f"tag {text[:64]!r} is not KEY=VALUE")
    return key.strip(), value.strip()


def check_host(host: str) -> str:
    if not _HOST.fullmatch(host):
        raise InvalidInput(f"invalid host {host[:64]!r}")
    return host


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    if len(options) > 64:
        raise InvalidInput("at most 64 options")
    for key, value in options.items():
        if not _TAG_KEY.fullmatch(key):
            raise InvalidInput(f"invalid option name {key[:64]!r}")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise InvalidInput(f"option {key!r} must be a string, number or boolean")
        if isinstance(value, str) and len(value) > 16384:
            raise InvalidInput(f"option {key!r} is too long")
    check_recording_options(options)
    return dict(options)
