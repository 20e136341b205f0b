"""asyncssh's per-packet log formatting, skipped when nothing would be logged.

asyncssh builds a message (packet name, byte count, note) for every packet it sends or
receives and only then asks its logger whether its debug level (3 for packets) wants it.
On a bulk transfer through the gateway that is a few per cent of the CPU of the one
thread that carries every byte. :func:`skip_unlogged_packets` wraps the formatting
method so that it returns at once below debug level 3; at level 3 it logs as before.
"""

from __future__ import annotations

from typing import Any

from asyncssh import packet as _packet

_ORIGINAL = _packet.SSHPacketLogger._log_packet


def _log_packet_if_wanted(self: Any, *args: Any) -> None:
    if self.logger._debug_level >= 3:
        _ORIGINAL(self, *args)


def skip_unlogged_packets() -> None:
    """Install the wrapper (idempotent)."""
    _packet.SSHPacketLogger._log_packet = _log_packet_if_wanted  # type: ignore[method-assign,assignment]
