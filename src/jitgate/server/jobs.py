"""Background jobs of the serve process: ending grants and expiring requests on time."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from jitgate.recording.recovery import Node
from jitgate.server.gateway import Gateway
from jitgate.store.models import utcnow

log = logging.getLogger("jitgate.jobs")

MAX_SLEEP = 1.0  # also picks up grants created or changed on other nodes
MIN_SLEEP = 0.02


def start_node(gateway: Gateway) -> Node:
    """Make this process a node of the store, before the listeners accept sessions."""
    from jitgate.recording import housekeeping

    return housekeeping.start(gateway)


def stop_node(gateway: Gateway, node: Node) -> None:
    from jitgate.recording import housekeeping

    housekeeping.stopped(gateway, node)


async def recording_housekeeping(gateway: Gateway, stop: asyncio.Event, node: Node) -> None:
    """Say this node is alive and close sessions that stopped nodes left open, delete
    recordings past their retention (legal holds kept), run the audit export configured
    in ``recording.export_to`` and upload closed recordings to object storage
    (``recording.storage: s3``); see :mod:`jitgate.recording.housekeeping`."""
    from jitgate.recording import housekeeping

    await housekeeping.run(gateway, stop, node)


async def access_housekeeping(gateway: Gateway, stop: asyncio.Event) -> None:
    """End grants at their end time (sessions depending on them are closed by the listeners,
    which hear of it through the access events) and expire pending requests."""
    while not stop.is_set():
        sleep = MAX_SLEEP
        try:
            await asyncio.to_thread(gateway.access.expire_due)
            deadline = await asyncio.to_thread(gateway.access.next_deadline)
            if deadline is not None:
                sleep = min(MAX_SLEEP, max(MIN_SLEEP, (deadline - utcnow()).total_seconds()))
        except Exception as exc:  # the store may be briefly unavailable: try again
            log.warning("access housekeeping failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), sleep)
