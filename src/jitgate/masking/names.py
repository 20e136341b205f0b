"""Which mask profile names exist, and who uses one: checked where a name is given.

A connection's ``mask_profile`` option and a policy's ``@mask("…")`` name a profile; an
unknown name is refused when it is written (400 ``invalid_mask_profile``), not found out
when a session starts. A stored profile that a connection or a policy names cannot be
deleted (409 ``mask_profile_in_use``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jitgate.errors import Conflict, JitgateError
from jitgate.masking.rules import BUILTIN_PROFILES, MaskingConfigError
from jitgate.policy.cedar import PolicyDocument, parse_document
from jitgate.store.models import ConnectionRow, MaskProfileRow, PolicyRow

MASK_OPTION = "mask_profile"
REVISION = "mask_profiles"
"""Revision counter bumped by every change to a stored profile or to a connection's default
profile: open sessions compare it (cheaply, per result) to rebuild their maskers."""


class MaskProfileInUse(Conflict):
    code = "mask_profile_in_use"


def check_profile_names(session: Session, names: Iterable[Any]) -> None:
    """Raise :class:`MaskingConfigError` for a name that is no built-in or stored profile
    (``None`` and ``""``: no profile)."""
    for name in names:
        if name is None or name == "":
            continue
        if not isinstance(name, str):
            raise MaskingConfigError("a mask profile name must be a string")
        if name in BUILTIN_PROFILES or session.get(MaskProfileRow, name) is not None:
            continue
        stored = session.scalars(select(MaskProfileRow.name)).all()
        known = sorted({*BUILTIN_PROFILES, *stored})
        raise MaskingConfigError(f"unknown mask profile {name[:128]!r}; known: {', '.join(known)}")


def check_connection_options(session: Session, options: dict[str, Any]) -> None:
    if MASK_OPTION in options:
        check_profile_names(session, [options[MASK_OPTION]])


def policy_mask_names(annotations: Iterable[tuple[str, dict[str, str]]]) -> list[str]:
    """The ``@mask`` profile names of a parsed policy document."""
    return [notes["mask"] for _effect, notes in annotations if "mask" in notes]


def profile_users(session: Session, name: str) -> list[str]:
    """Connections and policies that name the profile ``name``."""
    users = [
        f"connection {row.name}"
        for row in session.scalars(select(ConnectionRow))
        if (row.options or {}).get(MASK_OPTION) == name
    ]
    for row in session.scalars(select(PolicyRow)):
        if "mask" not in row.text:
            continue
        try:
            annotations = parse_document(PolicyDocument(row.name, row.text))
        except (ValueError, JitgateError):
            continue
        if name in policy_mask_names(annotations):
            users.append(f"policy {row.name}")
    return users


def check_unused(session: Session, name: str) -> None:
    users = profile_users(session, name)
    if users:
        shown = ", ".join(users[:10]) + (" …" if len(users) > 10 else "")
        raise MaskProfileInUse(f"mask profile {name[:128]!r} is in use by {shown}")
