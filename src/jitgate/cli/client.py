"""The CLI's view of the API: server URL and token, requests, errors as one line."""

from __future__ import annotations

import base64
import json
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from jitgate.connections.vault import write_secret_file

if TYPE_CHECKING:
    from jitgate.identity.oidc_flows import TokenSet

DEFAULT_SERVER = "http://127.0.0.1:8009"
#: A saved OIDC login is renewed when its token has less than this many seconds left.
REFRESH_MARGIN = 5.0


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


def issuer_tls_verify() -> ssl.SSLContext:
    """How the CLI verifies the OIDC issuer it logs in with: the system's trust store, plus
    the CA file named by ``JITGATE_CA_FILE`` (a private CA often signs both the gateway's
    and the identity provider's certificates)."""
    context = ssl.create_default_context()
    ca_file = os.environ.get("JITGATE_CA_FILE")
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise CLIError(f"JITGATE_CA_FILE: cannot use {ca_file}: {reason}") from None
    return context


def issuer_error(issuer: str, exc: BaseException) -> str:
    """Why the OIDC issuer could not be used, in one line (a certificate the CLI does not
    trust names the way out)."""
    unverified = _cert_verification_error(exc)
    if unverified is not None:
        return (
            f"cannot verify the TLS certificate of the OIDC issuer {issuer} "
            f"({unverified.verify_message}): set JITGATE_CA_FILE to the CA that signed it"
        )
    return f"cannot reach the OIDC issuer {issuer}: {exc}"


def _cert_verification_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    for _ in range(8):  # httpx → httpcore → ssl
        if seen is None or isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def login_token(tokens: TokenSet) -> str:
    """The JWT the CLI presents from an IdP's answer: the access token when it is a JWT
    (RFC 9068), else the ID token."""
    token = tokens.access_token if tokens.access_token.count(".") == 2 else tokens.id_token
    if not token:
        raise CLIError("the identity provider returned no JWT")
    return token


def _expires_soon(token: str, margin: float = REFRESH_MARGIN) -> bool:
    """Whether a JWT's ``exp`` is past or near (read unverified: only to decide when to
    renew; the gateway verifies the token)."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        exp = float(claims["exp"])
    except (ValueError, TypeError, KeyError):
        return False
    return exp <= time.time() + margin


@dataclass
class APIClient:
    server: str
    token: str | None
    timeout: float = 30.0
    #: The saved ``jitgate login`` the token came from, when it can be renewed with the
    #: identity provider's refresh token (an OIDC login, no ``JITGATE_TOKEN`` override).
    saved: dict[str, Any] | None = None

    @classmethod
    def from_env(cls, server: str | None = None) -> APIClient:
        saved = load_saved()
        server = server or os.environ.get("JITGATE_SERVER") or saved.get("server") or DEFAULT_SERVER
        env_token = os.environ.get("JITGATE_TOKEN")
        renewable = not env_token and saved.get("method") == "oidc"
        renewable = renewable and all(
            saved.get(k) for k in ("refresh_token", "issuer", "client_id")
        )
        return cls(
            server=server.rstrip("/"),
            token=env_token or saved.get("token"),
            saved=saved if renewable else None,
        )

    def refresh_login(self) -> None:
        """Renew the saved OIDC login with its refresh token and save the new tokens."""
        from jitgate.errors import JitgateError
        from jitgate.identity import oidc_flows

        saved = self.saved
        assert saved is not None
        issuer = str(saved["issuer"]).rstrip("/")
        try:
            with httpx.Client(timeout=self.timeout, verify=issuer_tls_verify()) as http:
                response = http.get(issuer + "/.well-known/openid-configuration")
                response.raise_for_status()
                tokens = oidc_flows.refresh(
                    response.json(), saved["client_id"], saved["refresh_token"], http=http
                )
        except JitgateError as exc:
            raise CLIError(
                f"the saved login has expired ({exc.message}): run `jitgate login` again"
            ) from None
        except (httpx.HTTPError, ValueError) as exc:
            raise CLIError(f"cannot renew the login: {issuer_error(issuer, exc)}") from None
        saved.update(token=login_token(tokens), refresh_token=tokens.refresh_token)
        save_credentials(saved)
        self.token = saved["token"]

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
    ) -> Any:
        renewed = False
        if auth:
            if not self.token:
                raise CLIError("not logged in: run `jitgate login` or set JITGATE_TOKEN")
            if self.saved is not None and _expires_soon(self.token):
                self.refresh_login()
                renewed = True
        response = self._send(method, path, json_body, params, auth)
        if response.status_code == 401 and auth and self.saved is not None and not renewed:
            self.refresh_login()  # revoked or expired early: one renewal, then one retry
            response = self._send(method, path, json_body, params, auth)
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

    def _send(
        self,
        method: str,
        path: str,
        json_body: Any,
        params: dict[str, Any] | None,
        auth: bool,
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            with httpx.Client(timeout=self.timeout, verify=tls_verify()) as http:
                return http.request(
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
