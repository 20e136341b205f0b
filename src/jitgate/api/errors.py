"""Every API error is ``{"error": {"code": ..., "message": ...}}``; no stack trace escapes."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from jitgate.errors import JitgateError
from jitgate.store.db import describe_failure, is_connectivity_error

log = logging.getLogger("jitgate.api")

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _describe_validation(errors: list[Any]) -> tuple[int, str]:
    parts = []
    status = 422
    for err in errors[:10]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        if err.get("type") == "json_invalid":
            return 400, "request body is not valid JSON"
        if err.get("type") == "extra_forbidden":
            parts.append(f"{where}: unknown field")
        elif err.get("type") == "missing":
            parts.append(f"{where}: field required")
        else:
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return status, "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(JitgateError)
    async def _domain(_request: Request, exc: JitgateError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _describe_validation(list(exc.errors()))
        return error_response(status, "invalid_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, detail, getattr(exc, "headers", None))

    @app.exception_handler(SQLAlchemyError)
    async def _store(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        if not is_connectivity_error(exc):
            return await _unexpected(request, exc)
        log.warning(
            "store unavailable on %s %s: %s",
            request.method,
            request.url.path,
            describe_failure(exc),
        )
        return error_response(503, "unavailable", "the gateway's store is unavailable")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        incident = secrets.token_hex(6)
        log.error(
            "internal error %s on %s %s: %s",
            incident,
            request.method,
            request.url.path,
            type(exc).__name__,
            exc_info=exc,
        )
        return error_response(500, "internal", f"internal error (incident {incident})")
