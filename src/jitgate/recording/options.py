"""A connection's recording options: checked when the connection is saved, resolved
against the ``recording`` settings when a session starts or retention runs.

========================== ============================================ ==============
option                     value                                        default
========================== ============================================ ==============
``recording``              true / false                                 ``enabled``
``recording_on_failure``   ``closed`` (refuse requests) or ``open``     ``on_failure``
``recording_fsync``        ``close`` or ``request``                     ``fsync``
``recording_sample_rows``  result rows kept per statement, 0 … 1000     ``sample_rows``
``recording_sample_bytes`` bytes of those rows, 0 … 1 MiB               ``sample_bytes``
``recording_retention_days`` days after a session ends, 1 … 36500       ``retention_days``
``legal_hold``             true / false (never delete its recordings)   false
========================== ============================================ ==============

:func:`check_options` raises :class:`~jitgate.errors.InvalidInput` naming the option, the
value and what is allowed. A stored value that is not valid (saved before these checks)
is logged and replaced by its safe reading when resolved: recording on, fail closed,
fsync before each request, no sample, nothing deleted, held.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jitgate.errors import InvalidInput

if TYPE_CHECKING:
    from jitgate.config import RecordingSettings

log = logging.getLogger("jitgate.recording")

MAX_SAMPLE_ROWS = 1000
MAX_SAMPLE_BYTES = 1 << 20
MAX_RETENTION_DAYS = 36500

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("true or false")


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower() if isinstance(value, str) else None
        if text not in allowed:
            raise ValueError(" or ".join(repr(a) for a in allowed))
        return text

    return parse


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif (isinstance(value, float) and value.is_integer()) or (
            isinstance(value, str) and value.strip().lstrip("-").isdigit()
        ):
            number = int(value)
        if number is None or not low <= number <= high:
            raise ValueError(f"a whole number from {low} to {high}")
        return number

    return parse


#: Each option, how it is read, and what a value that cannot be read is taken as.
_PARSERS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "recording": (_flag, True),
    "recording_on_failure": (_choice("closed", "open"), "closed"),
    "recording_fsync": (_choice("close", "request"), "request"),
    "recording_sample_rows": (_integer(0, MAX_SAMPLE_ROWS), 0),
    "recording_sample_bytes": (_integer(0, MAX_SAMPLE_BYTES), 0),
    "recording_retention_days": (_integer(1, MAX_RETENTION_DAYS), None),
    "legal_hold": (_flag, True),
}


def _parse(key: str, value: Any) -> Any:
    parser, _safe = _PARSERS[key]
    try:
        return parser(value)
    except ValueError as exc:
        raise InvalidInput(
            f"connection option {key}: {str(value)[:64]!r} is not valid (expected {exc})"
        ) from None


def check_options(options: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidInput` for the first recording option that is not valid.
    ``None`` (or an empty string) means "use the ``recording`` setting"."""
    for key, value in options.items():
        if key in _PARSERS and value not in (None, ""):
            _parse(key, value)


@dataclass(frozen=True, slots=True)
class RecordingOptions:
    """What applies to one connection's sessions."""

    enabled: bool
    on_failure: str
    fsync: str
    sample_rows: int
    sample_bytes: int
    retention_days: int | None
    legal_hold: bool

    @property
    def fail_open(self) -> bool:
        return self.on_failure == "open"


def resolve(
    options: Mapping[str, Any] | None, settings: RecordingSettings, *, connection: str = "?"
) -> RecordingOptions:
    """The connection's options over the settings' defaults."""
    options = options or {}
    defaults: dict[str, Any] = {
        "recording": settings.enabled,
        "recording_on_failure": settings.on_failure,
        "recording_fsync": settings.fsync,
        "recording_sample_rows": settings.sample_rows,
        "recording_sample_bytes": settings.sample_bytes,
        "recording_retention_days": settings.retention_days,
        "legal_hold": False,
    }
    values = dict(defaults)
    for key, (_parser, safe) in _PARSERS.items():
        value = options.get(key)
        if value in (None, ""):
            continue
        try:
            values[key] = _parse(key, value)
        except InvalidInput as exc:
            log.error("connection %s: %s; taken as %r", connection, exc, safe)
            values[key] = safe
    return RecordingOptions(
        enabled=values["recording"],
        on_failure=values["recording_on_failure"],
        fsync=values["recording_fsync"],
        sample_rows=values["recording_sample_rows"],
        sample_bytes=values["recording_sample_bytes"],
        retention_days=values["recording_retention_days"],
        legal_hold=values["legal_hold"],
    )
