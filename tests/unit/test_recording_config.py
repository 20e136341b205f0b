"""The ``recording`` configuration section."""

from __future__ import annotations

import pytest

from jitgate.config import ConfigError, load_settings


def test_recording_settings_from_the_environment() -> None:
    settings = load_settings(
        env={
            "JITGATE_RECORDING__SAMPLE_ROWS": "0",
            "JITGATE_RECORDING__ON_FAILURE": "open",
            "JITGATE_RECORDING__EXPORT_TO": "syslog://127.0.0.1:514",
            "JITGATE_RECORDING__EXPORT_SECRET": "123",
        }
    )
    recording = settings.recording
    assert recording.sample_rows == 0 and recording.on_failure == "open"
    assert recording.export_to == "syslog://127.0.0.1:514"
    assert recording.export_secret is not None
    assert recording.export_secret.get_secret_value() == "123"  # a string, never a number


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [("ON_FAILURE", "maybe", "recording.on_failure"), ("SAMPLE_BYTES", "-1", "sample_bytes"),
     ("RETENTION_DAYS", "0", "retention_days"), ("STORAGE", "s3", "recording.storage")],
)  # fmt: skip
def test_invalid_recording_settings_name_the_key(key: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(env={f"JITGATE_RECORDING__{key}": value})
