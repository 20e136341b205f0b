"""How a sensitive value is replaced: redact, partial, keyed hash token, or SQL NULL.

Replacements are built so that masking is idempotent: none of them is detected again
(a marker has no digits or ``@``, a partial keeps at most four characters, a hash token
``tok_…`` is recognised by :class:`MaskedValues` and left alone).

Non-text columns cannot hold a marker: a ``numeric`` column gets SQL NULL, or with
``on_numeric: zero`` a string of zeros of the same shape (``partial`` keeps the last four
digits: ``0000000000001111``) that every client decodes; ``hash`` and every ``other``
column (dates, uuid, inet, binary…) get NULL.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from enum import StrEnum


class Strategy(StrEnum):
    REDACT = "redact"
    PARTIAL = "partial"
    HASH = "hash"
    NULL = "null"


class TypeClass(StrEnum):
    """What a protocol rewriter knows about a column's type."""

    TEXT = "text"
    JSON = "json"
    """A JSON document (``json``/``jsonb``): masked so that it stays valid JSON."""
    NUMERIC = "numeric"
    OTHER = "other"


class NumericFallback(StrEnum):
    """What ``redact``/``partial`` write into a numeric column."""

    NULL = "null"
    ZERO = "zero"


DEFAULT_MARKER = "[REDACTED:{type}]"
TOKEN_PREFIX = "tok_"
_TOKEN_BYTES = 10
_KEEP = 4
_PARTIAL_MIN = 8  # below this many characters, keeping four would reveal half: mask all
_FORBIDDEN_MARKER_CHARS = re.compile(r"[\"'\\\x00-\x1f\x7f0-9@]")


def validate_marker(marker: str) -> str:
    """Reject markers that would break JSON/CSV cells or be detected again."""
    if not marker or len(marker) > 64:
        raise ValueError("the redaction marker must be 1 to 64 characters")
    rest = marker.replace("{type}", "")
    if "{" in rest or "}" in rest:
        raise ValueError("the redaction marker may only use the {type} placeholder")
    if _FORBIDDEN_MARKER_CHARS.search(rest):
        raise ValueError(
            "the redaction marker may not contain quotes, backslashes, control characters, "
            "digits or '@'"
        )
    return marker


def redact(kind: str, marker: str) -> str:
    return marker.replace("{type}", kind)


def partial(kind: str, value: str) -> str:
    """Keep the last four letters/digits (e-mail: first character and domain).

    IP addresses keep nothing but their shape: the tail of an address (``db8::1``) is
    itself an address, which a second pass would mask again.
    """
    if kind == "email":
        local, at, domain = value.rpartition("@")
        if at and local:
            return f"{local[0]}***@{domain}"
    enough = kind != "ip" and sum(char.isalnum() for char in value) >= _PARTIAL_MIN
    keep = _KEEP if enough else 0
    chars = list(value)
    for index in range(len(chars) - 1, -1, -1):
        if chars[index].isalnum():
            if keep:
                keep -= 1
            else:
                chars[index] = "*"
    return "".join(chars)


_SEPARATORS = re.compile(r"[\s().-]+")


def normalize(kind: str, value: str) -> str:
    """The form hashed for ``kind``: separators of numbers dropped, e-mail lower-cased."""
    if kind in ("card", "ssn", "iban", "phone"):
        return _SEPARATORS.sub("", value).upper()
    if kind == "email":
        return value.lower()
    return value


def hash_token(key: bytes, kind: str, value: str) -> str:
    """``tok_`` + base32 of the first 10 bytes of HMAC-SHA256(key, normalized value)."""
    digest = _keyed(key).copy()
    digest.update(normalize(kind, value).encode("utf-8", "surrogatepass"))
    number = int.from_bytes(digest.digest()[:_TOKEN_BYTES], "big")
    # Ten bytes are 80 bits, 16 base32 characters without padding: 8 pairs of them, each
    # pair 10 bits (what base64.b32encode writes, lower-cased, at a fraction of its cost).
    pairs = _BASE32_PAIRS
    return (
        TOKEN_PREFIX
        + pairs[number >> 70]
        + pairs[number >> 60 & 1023]
        + pairs[number >> 50 & 1023]
        + pairs[number >> 40 & 1023]
        + pairs[number >> 30 & 1023]
        + pairs[number >> 20 & 1023]
        + pairs[number >> 10 & 1023]
        + pairs[number & 1023]
    )


_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648's alphabet, lower-cased
_BASE32_PAIRS = tuple(first + second for first in _BASE32 for second in _BASE32)


@functools.lru_cache(maxsize=16)
def _keyed(key: bytes) -> hmac.HMAC:
    """HMAC-SHA256 with ``key`` absorbed, to copy per value (a masker's key is fixed)."""
    return hmac.new(key, digestmod=hashlib.sha256)


def numeric_zero(value: str, strategy: Strategy) -> str:
    """Digits zeroed, shape kept; ``partial`` keeps the last four digits."""
    keep = _KEEP if strategy is Strategy.PARTIAL else 0
    chars = list(value)
    for index in range(len(chars) - 1, -1, -1):
        if chars[index].isdigit():
            if keep:
                keep -= 1
            else:
                chars[index] = "0"
    return "".join(chars)


class MaskedValues:
    """Recognises values this masker already wrote, so a second pass leaves them alone."""

    def __init__(self, marker: str) -> None:
        head, placeholder, tail = marker.partition("{type}")
        marker_pattern = re.escape(head) + (r"[\w.-]*" + re.escape(tail) if placeholder else "")
        # A partial output: at least four "*" and at most four letters or digits kept.
        partial_pattern = r"(?=(?:[^*]*\*){4})[^0-9A-Za-z]*(?:[0-9A-Za-z][^0-9A-Za-z]*){0,4}"
        self._pattern = re.compile(
            rf"(?:{marker_pattern}|{TOKEN_PREFIX}[a-z2-7]{{16}}|{partial_pattern})"
        )
        self.fullmatch = self._pattern.fullmatch
        """The match of a whole string, for a caller that tests many (``None``: not one)."""

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and self._pattern.fullmatch(value) is not None
