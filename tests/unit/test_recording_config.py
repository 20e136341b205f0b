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


def test_s3_storage_settings_from_the_environment() -> None:
    settings = load_settings(
        env={
            "JITGATE_RECORDING__STORAGE": "s3",
            "JITGATE_RECORDING__S3__BUCKET": "audit-2026",
            "JITGATE_RECORDING__S3__ENDPOINT_URL": "http://127.0.0.1:9000",
            "JITGATE_RECORDING__S3__SECRET_ACCESS_KEY": "0123",
            "JITGATE_RECORDING__S3__PART_SIZE": str(16 << 20),
        }
    )
    s3 = settings.recording.s3
    assert settings.recording.storage == "s3" and s3 is not None
    assert (s3.bucket, s3.prefix, s3.part_size, s3.keep_local) == (
        "audit-2026",
        "recordings/",
        16 << 20,
        False,
    )
    assert s3.secret_access_key is not None
    assert s3.secret_access_key.get_secret_value() == "0123"  # a string, never a number
    assert s3.access_key_id is None  # then the standard AWS sources are used


def test_s3_parts_are_at_least_five_mebibytes() -> None:
    env = {"JITGATE_RECORDING__STORAGE": "s3", "JITGATE_RECORDING__S3__BUCKET": "audit"}
    with pytest.raises(ConfigError, match=r"recording\.s3\.part_size"):
        load_settings(env={**env, "JITGATE_RECORDING__S3__PART_SIZE": str(1 << 20)})


def test_a_webhook_export_without_a_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="export_secret"):
        load_settings(env={"JITGATE_RECORDING__EXPORT_TO": "https://audit.example.com/in"})
    settings = load_settings(
        env={
            "JITGATE_RECORDING__EXPORT_TO": "https://audit.example.com/in",
            "JITGATE_RECORDING__EXPORT_SECRET": "k",
        }
    )
    assert settings.recording.export_to == "https://audit.example.com/in"
