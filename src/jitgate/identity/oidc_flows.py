"""The client side of OpenID Connect used by ``jitgate login``: obtain and refresh tokens.

Three flows, each taking the issuer's discovery document (see
:meth:`jitgate.identity.oidc.OIDCValidator.discovery`) and a public client id:

* :func:`device_flow` — RFC 8628 device authorization grant, for terminals without a
  browser: the user opens a URL elsewhere and types a short code.
* :func:`pkce_flow` — authorization code with PKCE (RFC 7636, ``S256``) and a loopback
  redirect (RFC 8252 §7.3): a one-shot HTTP server on ``127.0.0.1`` and a random port
  receives the code. ``state`` is checked, and so is ``iss`` when the provider sends it
  (RFC 9207, mix-up defence). Requesting ``offline_access`` adds ``prompt=consent``, as
  OIDC Core §11 requires for a refresh token.
* :func:`refresh` — the refresh-token grant.

OAuth errors raise :class:`~jitgate.errors.Unauthenticated` carrying the provider's error
code and description (shortened, control characters removed); a provider that cannot be
reached or answers nonsense raises :class:`~jitgate.errors.Unavailable`. Tokens never
appear in messages or in ``repr(TokenSet)``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from jitgate.errors import Unauthenticated, Unavailable

__all__ = [
    "TokenSet",
    "code_challenge",
    "device_flow",
    "new_code_verifier",
    "pkce_flow",
    "refresh",
]

BEARER: Final = "Bearer"
DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL: Final = 5.0
SLOW_DOWN_STEP: Final = 5.0
MAX_ERROR_TEXT: Final = 200
CALLBACK_PATH: Final = "/callback"
CALLBACK_PAGE: Final = (
    "<!DOCTYPE html><html><head><meta charset='utf-8'><title>jitgate login</title></head>"
    "<body><h1>{title}</h1><p>{message}</p><p>You may close this window.</p></body></html>"
)

Prompt = Callable[[str, str, str | None], None]


@dataclass
class TokenSet:
    """Tokens from a token endpoint response. Secrets are left out of ``repr``."""

    access_token: str = field(repr=False)
    id_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    token_type: str = BEARER
    scope: str | None = None


# ---------------------------------------------------------------------------- helpers


def _endpoint(discovery: Mapping[str, Any], name: str) -> str:
    value = discovery.get(name)
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise Unavailable(f"identity provider does not offer {name}")
    return value


def _clean(text: Any) -> str:
    printable = "".join(ch for ch in str(text) if ch.isprintable())
    return printable[:MAX_ERROR_TEXT]


def _oauth_error(body: Mapping[str, Any]) -> Unauthenticated:
    error = _clean(body.get("error", "error"))
    description = body.get("error_description")
    return Unauthenticated(f"{error}: {_clean(description)}" if description else error)


def _post(http: httpx.Client, url: str, data: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """POST a form; returns the status and the JSON object answered."""
    try:
        response = http.post(url, data=dict(data), headers={"accept": "application/json"})
        body = response.json()
    except httpx.HTTPError:
        raise Unavailable("identity provider unreachable") from None
    except ValueError:
        raise Unavailable("identity provider returned invalid JSON") from None
    if not isinstance(body, dict):
        raise Unavailable("identity provider returned invalid JSON")
    return response.status_code, body


def _token_set(body: Mapping[str, Any], previous_refresh: str | None = None) -> TokenSet:
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise Unavailable("identity provider returned no access token")
    expires_in = body.get("expires_in")
    expires_at = None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        expires_at = datetime.now(UTC) + timedelta(seconds=float(expires_in))
    refresh_token = body.get("refresh_token")
    id_token = body.get("id_token")
    return TokenSet(
        access_token=access_token,
        id_token=id_token if isinstance(id_token, str) else None,
        refresh_token=refresh_token if isinstance(refresh_token, str) else previous_refresh,
        expires_at=expires_at,
        token_type=str(body.get("token_type", BEARER)),
        scope=body["scope"] if isinstance(body.get("scope"), str) else None,
    )


def _raise_for_error(status: int, body: Mapping[str, Any]) -> None:
    if "error" in body:
        raise _oauth_error(body)
    if status != HTTPStatus.OK:
        raise Unavailable(f"identity provider answered HTTP {status}")


def _token_request(
    http: httpx.Client, discovery: Mapping[str, Any], data: Mapping[str, str]
) -> dict[str, Any]:
    status, body = _post(http, _endpoint(discovery, "token_endpoint"), data)
    _raise_for_error(status, body)
    return body


# ---------------------------------------------------------------------------- device flow


def device_flow(
    discovery: Mapping[str, Any],
    client_id: str,
    scopes: Sequence[str],
    *,
    http: httpx.Client,
    prompt: Prompt,
    sleep: Callable[[float], None] = time.sleep,
    timeout: float = 600,
    extra_params: Mapping[str, str] | None = None,
) -> TokenSet:
    """RFC 8628: ask for a user code, show it via ``prompt``, poll until the user decides.

    ``prompt(verification_uri, user_code, verification_uri_complete)`` is called once.
    Polling honours ``interval``, ``slow_down`` (+5 s) and ``authorization_pending``;
    ``access_denied``, ``expired_token``, any other error and ``timeout`` (or the code's
    ``expires_in``, whichever is shorter) raise :class:`Unauthenticated`.
    """
    started = time.monotonic()
    request = {"client_id": client_id, "scope": " ".join(scopes), **(extra_params or {})}
    body = _device_authorization(http, discovery, request)
    complete = body.get("verification_uri_complete")
    prompt(
        body["verification_uri"], body["user_code"], complete if isinstance(complete, str) else None
    )
    limit = min(timeout, _seconds(body.get("expires_in"), timeout))
    interval = _seconds(body.get("interval"), DEFAULT_INTERVAL)
    poll = {"grant_type": DEVICE_CODE_GRANT, "device_code": body["device_code"]}
    return _poll_device(
        http, discovery, {**poll, "client_id": client_id}, interval, started, limit, sleep
    )


def _device_authorization(
    http: httpx.Client, discovery: Mapping[str, Any], request: Mapping[str, str]
) -> dict[str, Any]:
    """POST to the device authorization endpoint; the answer has the three required strings."""
    status, body = _post(http, _endpoint(discovery, "device_authorization_endpoint"), request)
    _raise_for_error(status, body)
    required = ("device_code", "user_code", "verification_uri")
    if not all(isinstance(body.get(name), str) and body[name] for name in required):
        raise Unavailable("identity provider returned an invalid device authorization")
    return body


def _seconds(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default


def _poll_device(
    http: httpx.Client,
    discovery: Mapping[str, Any],
    data: Mapping[str, str],
    interval: float,
    started: float,
    limit: float,
    sleep: Callable[[float], None],
) -> TokenSet:
    """Poll the token endpoint until tokens, a final error, or ``limit`` seconds.

    Time counts as the larger of the real time since ``started`` (monotonic) and the time
    asked of ``sleep``, so an injected ``sleep`` that returns at once still ends the loop.
    """
    slept = 0.0
    while max(slept, time.monotonic() - started) + interval <= limit:
        sleep(interval)
        slept += interval
        status, body = _post(http, _endpoint(discovery, "token_endpoint"), data)
        if status == HTTPStatus.OK and "error" not in body:
            return _token_set(body)
        error = body.get("error")
        if error == "slow_down":
            interval += SLOW_DOWN_STEP
        elif error != "authorization_pending":
            _raise_for_error(status, body)
    raise Unauthenticated("device authorization timed out")


# ---------------------------------------------------------------------------- PKCE flow


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_code_verifier() -> str:
    """A PKCE code verifier: 64 characters of base64url (384 random bits)."""
    return secrets.token_urlsafe(48)


def code_challenge(verifier: str) -> str:
    """The ``S256`` code challenge for ``verifier``."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass
class _Callback:
    """What the loopback server received; set once, then ``done`` is set."""

    state: str
    issuer: str | None
    done: threading.Event = field(default_factory=threading.Event)
    code: str | None = None
    error: str | None = None

    def accept(self, query: Mapping[str, list[str]]) -> tuple[HTTPStatus, str, str]:
        """Check one callback request; returns the status, title and message to show."""
        value = {k: v[0] for k, v in query.items() if v}
        if self.done.is_set() or not secrets.compare_digest(value.get("state", ""), self.state):
            return HTTPStatus.BAD_REQUEST, "Login failed", "This response was not expected."
        if self.issuer is not None and "iss" in value and value["iss"] != self.issuer:
            self.error = "the response came from a different identity provider"
        elif "error" in value:
            self.error = str(_oauth_error(value))
        elif value.get("code"):
            self.code = value["code"]
        else:
            self.error = "the identity provider sent no authorization code"
        self.done.set()
        if self.error is not None:
            return HTTPStatus.OK, "Login failed", self.error
        return HTTPStatus.OK, "Login complete", "jitgate received your login."


def _handler(callback: _Callback) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a silent connection cannot hold the single-threaded server

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != CALLBACK_PATH:
                self._answer(HTTPStatus.NOT_FOUND, "Not found", "")
                return
            self._answer(*callback.accept(parse_qs(url.query)))

        def _answer(self, status: HTTPStatus, title: str, message: str) -> None:
            page = CALLBACK_PAGE.format(title=html.escape(title), message=html.escape(message))
            body = page.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default stderr access log (query strings hold the code)."""

    return Handler


class _LoopbackServer(HTTPServer):
    """HTTPServer without the reverse DNS lookup of ``server_bind``."""

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


def _authorization_url(endpoint: str, params: Mapping[str, str]) -> str:
    separator = "&" if urlsplit(endpoint).query else "?"
    return endpoint + separator + urlencode(params)


@contextmanager
def _loopback(host: str, callback: _Callback) -> Iterator[str]:
    """Serve the callback on ``host`` and a free port meanwhile; yields the redirect URI."""
    server = _LoopbackServer((host, 0), _handler(callback))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}{CALLBACK_PATH}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _authorization_params(
    client_id: str, scopes: Sequence[str], redirect_uri: str, state: str, verifier: str
) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(scopes),
        "state": state,
        "code_challenge": code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    if "offline_access" in scopes:
        params["prompt"] = "consent"  # OIDC Core 11: no refresh token without it
    return params


def pkce_flow(
    discovery: Mapping[str, Any],
    client_id: str,
    scopes: Sequence[str],
    *,
    http: httpx.Client,
    open_browser: Callable[[str], Any],
    timeout: float = 300,
    host: str = "127.0.0.1",
    extra_params: Mapping[str, str] | None = None,
) -> TokenSet:
    """Authorization code + PKCE with a loopback redirect; ``open_browser(url)`` starts it.

    Waits at most ``timeout`` seconds for the browser to come back to
    ``http://<host>:<port>/callback``, then exchanges the code at the token endpoint.
    """
    deadline = time.monotonic() + timeout
    authorize = _endpoint(discovery, "authorization_endpoint")
    verifier, state = new_code_verifier(), secrets.token_urlsafe(32)
    issuer = discovery.get("issuer")
    callback = _Callback(state, issuer if isinstance(issuer, str) else None)
    with _loopback(host, callback) as redirect_uri:
        params = _authorization_params(client_id, scopes, redirect_uri, state, verifier)
        open_browser(_authorization_url(authorize, {**params, **(extra_params or {})}))
        if not callback.done.wait(max(0.0, deadline - time.monotonic())):
            raise Unauthenticated("login timed out waiting for the browser")
    if callback.error is not None or callback.code is None:
        raise Unauthenticated(callback.error or "login failed")
    exchange = {
        "grant_type": "authorization_code",
        "code": callback.code,
        "redirect_uri": redirect_uri,
        "client_id": client_id,
        "code_verifier": verifier,
    }
    return _token_set(_token_request(http, discovery, exchange))


# ---------------------------------------------------------------------------- refresh


def refresh(
    discovery: Mapping[str, Any],
    client_id: str,
    refresh_token: str,
    *,
    http: httpx.Client,
) -> TokenSet:
    """Exchange ``refresh_token`` for fresh tokens (keeping it when none is returned)."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    return _token_set(_token_request(http, discovery, data), previous_refresh=refresh_token)
