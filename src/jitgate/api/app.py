"""The REST API application (FastAPI): ``/api/v1/…``, ``/healthz``, ``/readyz``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

import jitgate
from jitgate.api import errors
from jitgate.api.limits import BodyLimitMiddleware
from jitgate.api.ratelimit import LoginLimiter
from jitgate.api.routes import (
    access,
    audit,
    connections,
    identity,
    integrations,
    masking,
    policies,
    sessions,
    ssh_keys,
    tokens,
)
from jitgate.server.gateway import Gateway


def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(
        title="jitgate",
        version=jitgate.__version__,
        description="Just-in-time access gateway API.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.gateway = gateway
    app.state.login_limiter = LoginLimiter()
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=gateway.settings.api.max_body_bytes)
    for module in (
        identity,
        tokens,
        connections,
        policies,
        access,
        integrations,
        masking,
        sessions,
        audit,
        ssh_keys,
    ):
        app.include_router(module.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        problem = await run_in_threadpool(gateway.store.check)
        if problem is None:
            return JSONResponse({"status": "ready", "store": "ok"})
        body = {"status": "unavailable", "store": "down", "reason": problem}
        return JSONResponse(body, status_code=503)

    @app.get("/api/v1/keys", tags=["health"])
    async def keys() -> dict[str, Any]:
        """The public signing keys (JWKS) of every gateway node, past and present: this
        node's current key first. They sign recording seals and delegated tokens."""
        from jitgate.recording.keys import jwks

        return {"keys": await run_in_threadpool(jwks, gateway.store, gateway.signing_key)}

    return app
