"""Packet log formatting is skipped below asyncssh's packet debug level, kept at it."""

from __future__ import annotations

import logging

import asyncssh
import pytest
from asyncssh import packet

from jitgate.protocols.ssh.quiet import skip_unlogged_packets


class _Handler(packet.SSHPacketLogger):
    _handler_names = {94: "MSG_CHANNEL_DATA"}

    def __init__(self) -> None:
        self._logger = asyncssh.logging.logger.get_child("test")

    @property
    def logger(self) -> asyncssh.logging.SSHLogger:
        return self._logger


def test_packets_are_logged_only_at_debug_level_3(caplog: pytest.LogCaptureFixture) -> None:
    skip_unlogged_packets()
    handler = _Handler()
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    try:
        asyncssh.set_debug_level(2)
        handler.log_sent_packet(94, 7, b"x" * 10)
        assert not [r for r in caplog.records if "MSG_CHANNEL_DATA" in r.getMessage()]
        asyncssh.set_debug_level(3)
        handler.log_sent_packet(94, 7, b"x" * 10)
        assert any("Sent MSG_CHANNEL_DATA (94), 10 bytes" in r.getMessage() for r in caplog.records)
    finally:
        asyncssh.set_debug_level(1)
