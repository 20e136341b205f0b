"""ASGI middleware bounding request bodies (Content-Length and streamed).

An oversized body is answered with 413 and a JSON error. Before answering, up to
``DRAIN_FACTOR`` times the limit of the body is read and discarded, so that an ordinary
client that is still sending sees the response instead of a connection reset; beyond
that the connection is simply closed.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DRAIN_FACTOR = 4


async def _drain(receive: Receive, budget: int) -> None:
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    await _drain(receive, self.max_bytes * DRAIN_FACTOR)
                    await _reject(send, self.max_bytes)
                    return
        # Buffer the (bounded) body, then replay it to the app in one message.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            body = message.get("body", b"")
            seen += len(body)
            more = message.get("more_body", False)
            if seen > self.max_bytes:
                if more:
                    await _drain(receive, self.max_bytes * DRAIN_FACTOR - seen)
                await _reject(send, self.max_bytes)
                return
            chunks.append(body)
            if not more:
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reject(send: Send, limit: int) -> None:
    body: dict[str, Any] = {
        "error": {"code": "payload_too_large", "message": f"request body exceeds {limit} bytes"}
    }
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
