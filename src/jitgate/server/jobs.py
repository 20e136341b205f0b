"""Background jobs of the serve process: ending grants and expiring requests on time,
and hearing of grant changes made by other nodes."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from jitgate.access.events import GrantsChanged
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


class RemoteGrantChanges:
    """Grant changes made by other gateway nodes sharing the store (PostgreSQL).

    Every grant change bumps the store's ``grants`` revision; a node sees its own changes
    as access events at once, and another node's when the revision moves without one of
    its own (checked every second, with the housekeeping): then every session re-checks
    its grants, so a grant revoked on node B ends the sessions that depend on it on node A.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.store_revision: int | None = None
        self.local_revision = gateway.access.events.revision

    def check(self) -> bool:
        """Publish a change made elsewhere; True if one was seen."""
        events = self.gateway.access.events
        local = events.revision  # read first: a local change after it shows next time
        current = self.gateway.access.revision()
        before = current if self.store_revision is None else self.store_revision
        # When this node changed grants too, the store may also hold a change of another
        # node's: re-checking is cheap, missing a revocation is not.
        remote = current != before and (local == self.local_revision or current - before > 1)
        self.store_revision, self.local_revision = current, local
        if remote:
            events.grants_changed(GrantsChanged(None, None))
            self.local_revision = events.revision  # that event is not a change of ours
        return remote


async def access_housekeeping(gateway: Gateway, stop: asyncio.Event) -> None:
    """End grants at their end time (sessions depending on them are closed by the listeners,
    which hear of it through the access events) and expire pending requests."""
    watch = RemoteGrantChanges(gateway) if gateway.store.dialect != "sqlite" else None
    while not stop.is_set():
        sleep = MAX_SLEEP
        try:
            if watch is not None:
                await asyncio.to_thread(watch.check)
            await asyncio.to_thread(gateway.access.expire_due)
            deadline = await asyncio.to_thread(gateway.access.next_deadline)
            if deadline is not None:
                sleep = min(MAX_SLEEP, max(MIN_SLEEP, (deadline - utcnow()).total_seconds()))
        except Exception as exc:  # the store may be briefly unavailable: try again
            log.warning("access housekeeping failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), sleep)
