"""Questions about how PostgreSQL's lexer reads a query text, beyond classification.

:func:`has_escapable_backslash` tells whether a text holds a backslash inside a standard
``'...'`` string. Only there does ``standard_conforming_strings`` change the meaning of a
text: off, the server reads ``\\'`` as a quote inside the string, while the parser used for
inspection (PostgreSQL's own, with the setting on, as libpg_query builds it) ends the
string at that quote. ``E'...'`` strings, dollar quotes, identifiers and comments read
the same either way.
"""

from __future__ import annotations

from pglast import parser as libpg_query


def has_escapable_backslash(text: str) -> bool:
    """True if a standard string literal in ``text`` contains a backslash (or the text
    cannot be scanned: then nobody can say, and the answer is the careful one)."""
    if "\\" not in text:
        return False
    try:
        tokens = libpg_query.scan(text)
    except Exception:  # a lexing error: cannot tell
        return True
    for token in tokens:
        if token.name == "SCONST":
            literal = text[token.start : token.end + 1]
            if literal[:1] == "'" and "\\" in literal:
                return True
    return False
