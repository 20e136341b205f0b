"""Domain errors shared by every layer.

Each error carries a stable machine ``code`` and a human ``message`` that is safe to show
to the caller (it never contains a secret). The API maps them to HTTP statuses, the
protocol adapters to their native error packets (PostgreSQL SQLSTATE, SSH exit status…).
"""

from __future__ import annotations


class JitgateError(Exception):
    code = "error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(JitgateError):
    code = "invalid_request"
    status = 400


class Unauthenticated(JitgateError):
    """No credential, or one that is malformed, forged, expired or revoked."""

    code = "unauthenticated"
    status = 401


class Forbidden(JitgateError):
    code = "forbidden"
    status = 403


class NotFound(JitgateError):
    code = "not_found"
    status = 404


class Conflict(JitgateError):
    code = "conflict"
    status = 409


class Unavailable(JitgateError):
    """A dependency (store, identity provider, upstream) cannot be reached."""

    code = "unavailable"
    status = 503
