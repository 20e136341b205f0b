"""A connection's recording options: checked with errors that name them, resolved over the
``recording`` settings, with safe readings for stored values that are not valid."""

from __future__ import annotations

import logging

import pytest

from jitgate.config import RecordingSettings
from jitgate.connections.types import check_options
from jitgate.errors import InvalidInput
from jitgate.recording.options import resolve


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("recording_sample_rows", -1, "from 0 to 1000"),
        ("recording_sample_rows", "lots", "from 0 to 1000"),
        ("recording_sample_bytes", 2 << 20, "from 0 to 1048576"),
        ("recording_retention_days", 0, "from 1 to 36500"),
        ("recording_retention_days", 1.5, "from 1 to 36500"),
        ("recording_retention_days", True, "from 1 to 36500"),
        ("recording_on_failure", "maybe", "'closed' or 'open'"),
        ("recording_fsync", "always", "'close' or 'request'"),
        ("recording", "perhaps", "true or false"),
        ("legal_hold", 2, "true or false"),
    ],
)
def test_invalid_options_are_refused_naming_option_value_and_what_is_allowed(
    key: str, value: object, expected: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_options({key: value})
    message = str(caught.value)
    assert message.startswith(f"connection option {key}: ") and expected in message
    assert repr(str(value)) in message


def test_valid_options_resolve_over_the_settings() -> None:
    options = {
        "recording_sample_rows": "20", "recording_sample_bytes": 0, "legal_hold": "yes",
        "recording_retention_days": 30.0, "recording_on_failure": "OPEN", "recording": None,
    }  # fmt: skip
    assert check_options(options) == options
    resolved = resolve(options, RecordingSettings(fsync="request"))
    assert (resolved.sample_rows, resolved.sample_bytes, resolved.retention_days) == (20, 0, 30)
    assert resolved.legal_hold and resolved.fail_open and resolved.enabled
    assert resolved.fsync == "request"
    defaults = resolve({}, RecordingSettings())
    assert (defaults.on_failure, defaults.retention_days, defaults.legal_hold) == (
        "closed",
        None,
        False,
    )


def test_stored_values_that_are_not_valid_are_read_safely(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "jitgate.recording")
    stored = {"recording_on_failure": "opne", "recording_retention_days": "7 days",
              "legal_hold": "maybe", "recording": "nah"}  # fmt: skip
    resolved = resolve(stored, RecordingSettings(on_failure="open"), connection="old-db")
    assert resolved.on_failure == "closed" and resolved.retention_days is None
    assert resolved.legal_hold and resolved.enabled
    assert "connection old-db: connection option recording_on_failure" in caplog.text
