"""The recording jobs of the serve process: the node's heartbeat and the recovery of
sessions stopped gateways left open (:mod:`jitgate.recording.recovery`), retention, the
audit export when ``recording.export_to`` is configured (its cursor kept in the store),
and the upload of closed recordings when ``recording.storage`` is ``s3`` (see
:mod:`jitgate.recording.upload`).

:func:`start` runs before the listeners accept anyone: it makes this process a node of
the store, so that every session it records is stamped with it, and publishes the node's
signing key (:mod:`jitgate.recording.keys`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from jitgate.recording import handoff, keys, recovery
from jitgate.recording.export import Exporter, StoreCursor, StoreSource, open_sink
from jitgate.recording.retention import apply_retention
from jitgate.recording.upload import Uploader
from jitgate.store.models import SessionRow

if TYPE_CHECKING:
    from jitgate.server.gateway import Gateway

log = logging.getLogger("jitgate.recording")


def start(gateway: Gateway) -> recovery.Node:
    """Make this process a node of the store and publish its signing key there (before
    its listeners start: what it seals can be checked on every node)."""
    node = recovery.register(gateway.store, gateway.paths.root)
    keys.publish(gateway.store, gateway.signing_key, node_id=node.id)
    return node


def _recover(gateway: Gateway, node: recovery.Node) -> None:
    root = gateway.paths.recordings

    def locate(session_id: str) -> Path | None:
        with gateway.store.session() as db:
            relative = db.scalar(
                select(SessionRow.recording_path).where(SessionRow.id == session_id)
            )
        return root / relative if relative else None

    # What the writer processes of stopped gateways left in their spool rings goes into
    # the recordings first: recovery seals them as they are.
    if not handoff.drain_leftovers(root, locate):
        return  # a stopped gateway's writer is still at work: recover at the next beat
    recovered = recovery.recover_interrupted(
        gateway.store,
        gateway.paths.recordings,
        node,
        started_before=gateway.recorder.created_at,
        stale_after=gateway.settings.recording.node_stale_seconds,
        signing_key=gateway.signing_key,
    )
    gateway.access.withdraw_interrupted(recovered)  # their held statements cannot run


def _beat(gateway: Gateway, node: recovery.Node) -> None:
    recovery.heartbeat(gateway.store, node)
    _recover(gateway, node)


async def run(gateway: Gateway, stop: asyncio.Event, node: recovery.Node | None = None) -> None:
    """The jobs, until ``stop`` is set; ``node`` is what :func:`start` returned (started
    here when not given: sessions recorded before then are not stamped)."""
    if node is None:
        node = await asyncio.to_thread(start, gateway)
    settings = gateway.settings.recording
    exporter: Exporter | None = None
    export_cursor = f"serve:{settings.export_to}"[:128] if settings.export_to else None
    if settings.export_to:
        secret = (
            settings.export_secret.get_secret_value().encode() if settings.export_secret else None
        )
        exporter = Exporter(
            StoreSource(gateway.store, gateway.paths.recordings, storage=gateway.recording_storage),
            open_sink(settings.export_to, secret=secret),
            StoreCursor(gateway.store, f"serve:{settings.export_to}"[:128]),
        )
    uploader: Uploader | None = None
    bucket = gateway.recording_storage.bucket
    if settings.storage == "s3" and settings.s3 is not None and bucket is not None:
        uploader = Uploader(
            gateway.store,
            gateway.paths.recordings,
            bucket,
            part_size=settings.s3.part_size,
            keep_local=settings.s3.keep_local,
        )
    next_beat = 0.0
    next_retention = 0.0
    next_export = 0.0
    next_upload = 0.0
    failing = False
    try:
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_beat:  # first: interrupted sessions are closed before export
                next_beat = now + recovery.HEARTBEAT_SECONDS
                try:
                    await asyncio.to_thread(_beat, gateway, node)
                except Exception as exc:  # the store may be briefly unavailable
                    log.warning("node heartbeat or session recovery failed: %s", exc)
            if now >= next_retention:
                next_retention = now + settings.housekeeping_interval_seconds
                try:
                    await asyncio.to_thread(
                        apply_retention,
                        gateway.store,
                        gateway.paths.recordings,
                        settings.retention_days,
                        storage=gateway.recording_storage,
                        export_cursor=export_cursor,
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
            if uploader is not None and now >= next_upload:
                assert settings.s3 is not None
                next_upload = now + settings.s3.upload_interval_seconds
                try:
                    await asyncio.to_thread(uploader.run_once, stop.is_set)
                except Exception as exc:  # the store may be briefly unavailable
                    log.warning("recording upload failed: %s", exc)
            wake = min(
                next_beat,
                next_retention,
                next_export if exporter else next_retention,
                next_upload if uploader else next_retention,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.05, wake - time.monotonic()))
        if exporter is not None:  # what was written until the end goes out too
            with contextlib.suppress(Exception):
                await asyncio.to_thread(exporter.run_once)
    finally:
        if exporter is not None:
            exporter.sink.close()
            with contextlib.suppress(Exception):  # the next node need not wait for it
                await asyncio.to_thread(exporter.cursors.release)


def stopped(gateway: Gateway, node: recovery.Node) -> None:
    """This run is over: other nodes may close what it left open at once."""
    try:
        recovery.stopped(gateway.store, node)
    except Exception as exc:
        log.warning("could not record the node's stop: %s", exc)
