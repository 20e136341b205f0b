"""The CLI's view of the API: server URL and token, requests, errors as one line."""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from jitgate.connections.vault import write_secret_file

DEFAULT_SERVER = "http://127.0.0.1:8009"


class CLIError(Exception):
    """Shown to the user as ``error: <message>`` with a non-zero exit status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "jitgate" / "credentials.json"


def load_saved() -> dict[str, Any]:
    path = credentials_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_credentials(data: dict[str, Any]) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_secret_file(path, json.dumps(data, indent=2) + "\n")
    return path


def tls_verify() -> ssl.SSLContext | bool:
    """How the CLI verifies an ``https://`` API: the CA file named by ``JITGATE_CA_FILE``
    (for the gateway's own certificate), else the system's trust store."""
    ca_file = os.environ.get("JITGATE_CA_FILE")
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CLIError(f"JITGATE_CA_FILE: cannot use {ca_file}: {reason}") from None


def _cert_verification_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    for _ in range(8):  # httpx → httpcore → ssl
        if seen is None or isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@dataclass
class APIClient:
    server: str
    token: str | None
    timeout: float = 30.0

    @classmethod
    def from_env(cls, server: str | None = None) -> APIClient:
        saved = load_saved()
        server = server or os.environ.get("JITGATE_SERVER") or saved.get("server") or DEFAULT_SERVER
        token = os.environ.get("JITGATE_TOKEN") or saved.get("token")
        return cls(server=server.rstrip("/"), token=token)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if auth:
            if not self.token:
                raise CLIError("not logged in: run `jitgate login` or set JITGATE_TOKEN")
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            with httpx.Client(timeout=self.timeout, verify=tls_verify()) as http:
                response = http.request(
                    method, self.server + path, json=json_body, params=params, headers=headers
                )
        except httpx.HTTPError as exc:
            unverified = _cert_verification_error(exc)
            if unverified is not None:
                raise CLIError(
                    f"cannot verify the TLS certificate of {self.server} "
                    f"({unverified.verify_message}): set JITGATE_CA_FILE to the gateway's "
                    "CA or certificate file"
                ) from None
            raise CLIError(f"cannot reach the jitgate server at {self.server}: {exc}") from None
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_error:
            message = f"HTTP {response.status_code}"
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                message = body["error"].get("message") or message
            raise CLIError(message)
        return body

    def paged(
        self, path: str, params: dict[str, Any] | None = None, limit: int | None = None
    ) -> list[Any]:
        items: list[Any] = []
        query = dict(params or {})
        while True:
            page = self.request("GET", path, params=query)
            items.extend(page["items"])
            if limit is not None and len(items) >= limit:
                return items[:limit]
            if not page.get("next_cursor"):
                return items
            query["cursor"] = page["next_cursor"]
