"""The recording jobs of the serve process: retention, and the audit export when
``recording.export_to`` is configured (its cursor kept in the store)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from jitgate.recording.export import Exporter, StoreCursor, StoreSource, open_sink
from jitgate.recording.retention import apply_retention

if TYPE_CHECKING:
    from jitgate.server.gateway import Gateway

log = logging.getLogger("jitgate.recording")


async def run(gateway: Gateway, stop: asyncio.Event) -> None:
    settings = gateway.settings.recording
    exporter: Exporter | None = None
    if settings.export_to:
        secret = (
            settings.export_secret.get_secret_value().encode() if settings.export_secret else None
        )
        exporter = Exporter(
            StoreSource(gateway.store, gateway.paths.recordings),
            open_sink(settings.export_to, secret=secret),
            StoreCursor(gateway.store, f"serve:{settings.export_to}"[:128]),
        )
    if gateway.store.engine.dialect.name == "sqlite":  # one process owns this store
        try:
            await asyncio.to_thread(gateway.recorder.recover_interrupted)
        except Exception as exc:
            log.warning("could not close interrupted sessions: %s", exc)
    next_retention = 0.0
    next_export = 0.0
    failing = False
    try:
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_retention:
                next_retention = now + settings.housekeeping_interval_seconds
                try:
                    await asyncio.to_thread(
                        apply_retention,
                        gateway.store,
                        gateway.paths.recordings,
                        settings.retention_days,
                    )
                except Exception as exc:  # the store may be briefly unavailable
                    log.warning("recording retention failed: %s", exc)
            if exporter is not None and now >= next_export:
                next_export = now + settings.export_interval_seconds
                try:
                    await asyncio.to_thread(exporter.run_once)
                    if failing:
                        log.info("audit export to %s resumed", settings.export_to)
                    failing = False
                except Exception as exc:  # retried from the saved cursor
                    if not failing:
                        log.error("audit export to %s failed: %s", settings.export_to, exc)
                    failing = True
            wake = min(next_retention, next_export if exporter else next_retention)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.05, wake - time.monotonic()))
        if exporter is not None:  # what was written until the end goes out too
            with contextlib.suppress(Exception):
                await asyncio.to_thread(exporter.run_once)
    finally:
        if exporter is not None:
            exporter.sink.close()
