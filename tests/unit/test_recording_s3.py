"""Object keys, locations and part comparison for recordings in object storage (no I/O)."""

from __future__ import annotations

import pytest

from jitgate.recording.s3 import Part, S3Bucket, parse_location


@pytest.mark.parametrize(
    ("prefix", "key"),
    [("recordings/", "recordings/2026/11/29/s.jsonl"), ("/a/b", "a/b/2026/11/29/s.jsonl"),
     ("", "2026/11/29/s.jsonl"), ("/", "2026/11/29/s.jsonl")],
)  # fmt: skip
def test_keys_are_the_prefix_and_the_relative_path(prefix: str, key: str) -> None:
    bucket = S3Bucket(client=None, name="audit", prefix=prefix)
    assert bucket.key_for("2026/11/29/s.jsonl") == key
    assert parse_location(bucket.location(key)) == ("audit", key)
    assert bucket.named("audit") is bucket
    assert bucket.named("older").location(key) == f"s3://older/{key}"


@pytest.mark.parametrize("location", ["file:///x", "s3://bucket-only", "bucket/key"])
def test_only_s3_locations_parse(location: str) -> None:
    with pytest.raises(ValueError, match="not an s3:// location"):
        parse_location(location)


def test_parts_compare_by_number_size_and_unquoted_etag() -> None:
    sent = Part(1, '"9b2cf535f27731c974343645a3985328"', 5 << 20)
    assert sent.same_as(Part(1, "9b2cf535f27731c974343645a3985328", 5 << 20))
    assert not sent.same_as(Part(1, '"9b2cf535f27731c974343645a3985328"', 4 << 20))
    assert not sent.same_as(Part(2, '"9b2cf535f27731c974343645a3985328"', 5 << 20))
    assert not sent.same_as(Part(1, '"00000000000000000000000000000000"', 5 << 20))
