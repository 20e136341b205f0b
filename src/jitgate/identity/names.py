"""Validation of identity, group, token and connection names.

Names travel through native protocols (PostgreSQL ``user``/``dbname``, SSH
``USER+CONNECTION@GW``), so they are restricted to a conservative alphabet: letters,
digits, ``.``, ``_``, ``-`` and ``@`` (identities only), starting with a letter or digit.
"""

from __future__ import annotations

import re

from jitgate.errors import InvalidInput

_IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_SIMPLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_identity_name(name: str) -> str:
    if not _IDENTITY.fullmatch(name):
        raise InvalidInput(
            f"invalid name {name[:64]!r}: use letters, digits, '.', '_', '-', '@' "
            "(at most 128, starting with a letter or digit)"
        )
    return name


def check_simple_name(name: str, what: str = "name") -> str:
    if not _SIMPLE.fullmatch(name):
        raise InvalidInput(
            f"invalid {what} {name[:64]!r}: use letters, digits, '.', '_', '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return name
