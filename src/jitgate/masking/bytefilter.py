"""A pre-filter over a whole row's raw bytes, before any cell is decoded.

A protocol rewriter (PostgreSQL's DataRow, say) holds a row as bytes: lengths and cells.
Decoding every cell and asking the scanner about it costs a few Python calls per cell;
a :class:`ByteFilter` answers "which cells could hold a finding?" for the whole row in a
few calls into C, so that most cells are never decoded.

Theory of operation. Every detector trigger (:class:`~.detectors.Trigger`) is a necessary
condition for a finding. Two kinds are checked here:

* a *literal* trigger (``@``, a needle such as ``eyJ`` or ``-----BEGIN``) is looked for
  in the raw bytes as it is — one ``bytes.find`` or one regex of literals;
* any other trigger is rewritten for a *class string* of the row: ``bytes.translate``
  maps every ASCII digit to ``0``, capital to ``A``, small letter to ``a`` and every other
  byte to a space (see :data:`CLASSES`). In that alphabet the trigger keeps its shape:
  ``[0-9]{3}[ -]?[0-9]{4}`` becomes ``0{3} ?0{4}``. A trigger whose first character must
  not follow a letter or digit (most digit-led ones: card, SSN, phone, IPv4, IBAN) gets a
  leading space — so ``re`` skips in C from one space-then-digit to the next, never
  trying inside words, hashes or long numbers. Its joined regex is :attr:`ByteFilter.classes`.

Why it is a necessary condition: a trigger's ``rest`` uses only ASCII literals and positive
classes (:func:`byte_safe`), so a match in a cell's text is a run of ASCII characters,
which (in UTF-8 and any encoding that keeps ASCII characters as single bytes) are the same
bytes in the row; mapping them to their classes keeps the match. The character before it,
when the trigger forbids a letter or digit there, is another ASCII character, the last
byte of a non-ASCII one (≥ 0x80) — both a space in the class string — or nothing, at the
cell's start: the rewriter then writes a space into the class string just before each
cell (:meth:`ByteFilter.classes_of` leaves that to it; the byte there is framing). The
class string loses precision (``.`` and ``,`` are both a space), never a match: a hit
only means "decode this cell and scan it".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from jitgate.masking.detectors import Trigger, char_class

CLASSES = bytes(
    48 if 48 <= byte <= 57 else 65 if 65 <= byte <= 90 else 97 if 97 <= byte <= 122 else 32
    for byte in range(256)
)
"""``bytes.translate`` table of the class string: digits to ``0``, capitals to ``A``, small
letters to ``a``, every other byte (punctuation, controls, non-ASCII) to a space."""

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True, slots=True)
class ByteFilter:
    """Which cells of a row could hold a finding: ``classes`` searched in the row's class
    string (``row.translate(CLASSES)``, a space written before each cell), ``literals`` in
    its raw bytes. A cell no match starts in (or in the framing just before it) has none."""

    classes: re.Pattern[bytes] | None
    literals: re.Pattern[bytes] | None
    literal: bytes | None
    """The one literal, when there is just one (``bytes.find`` beats a regex)."""


def byte_filter(triggers: Iterable[Trigger]) -> ByteFilter | None:
    """The filter for ``triggers`` (``None`` if one of them does not hold in bytes)."""
    patterns: dict[str, dict[str, list[str]]] = {}  # lead, then first atom: rests
    literals: dict[bytes, None] = {}
    for trigger in dict.fromkeys(triggers):
        if not (byte_safe(trigger.rest) and context_safe(trigger.not_after)):
            return None
        if not trigger.first.isascii() or not trigger.first:
            return None
        literal = trigger.literal()
        if literal is not None:
            literals[literal.encode()] = None
            continue
        lead = " " if trigger.not_after and _refuses_alnum(trigger.not_after) else ""
        first = _class_of(set(trigger.first))
        rests = patterns.setdefault(lead, {}).setdefault(first, [])
        rest = _classes_pattern(trigger.rest)
        if rest not in rests:
            rests.append(rest)
    if not patterns and not literals:
        return None
    classes = None
    if patterns:
        # Factored by lead and first atom, so that ``re`` tries one branch per position.
        leads = [
            lead + _either([first + _either(rests) for first, rests in firsts.items()])
            for lead, firsts in patterns.items()
        ]
        classes = re.compile("|".join(leads).encode())
    only = next(iter(literals)) if len(literals) == 1 else None
    joined = None
    if literals and only is None:
        joined = re.compile(b"|".join(re.escape(literal) for literal in literals))
    return ByteFilter(classes, joined, only)


def _either(patterns: list[str]) -> str:
    if len(patterns) == 1:
        return patterns[0]
    return "(?:" + "|".join(patterns) + ")"


def _refuses_alnum(not_after: tuple[str, ...]) -> bool:
    """Whether the look-behind class refuses every ASCII letter and digit."""
    refused = re.compile(f"[{''.join(not_after)}]")
    return all(refused.fullmatch(char) for char in _ALNUM)


_QUANTIFIER = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}\??|[?*+]\??")


def _classes_pattern(rest: str) -> str:
    """``rest`` rewritten for the class string: each literal and class by the classes
    of its characters; groups, alternation and quantifiers as they are."""
    out: list[str] = []
    index, size = 0, len(rest)
    while index < size:
        char = rest[index]
        quantifier = _QUANTIFIER.match(rest, index)
        if quantifier is not None:
            out.append(quantifier.group())
            index = quantifier.end()
        elif rest.startswith("(?:", index):
            out.append("(?:")
            index += 3
        elif char in "()|":
            out.append(char)
            index += 1
        elif char == "\\":
            out.append(_class_of({rest[index + 1]}))
            index += 2
        elif char == "[":
            close = index + 1 + (rest[index + 1] == "]")
            while rest[close] != "]":
                close += 2 if rest[close] == "\\" else 1
            members = re.compile(rest[index : close + 1])
            out.append(_class_of({chr(c) for c in range(128) if members.fullmatch(chr(c))}))
            index = close + 1
        else:
            out.append(_class_of({char}))
            index += 1
    return "".join(out)


def _class_of(chars: set[str]) -> str:
    """A class-string atom for a set of characters."""
    return char_class("".join(sorted({chr(CLASSES[ord(c)]) for c in chars})))


def byte_safe(pattern: str) -> bool:
    """Whether ``pattern`` matches the same in a text and in its bytes.

    True for ASCII literals (escaped or not), positive classes of them, groups ``(?:…)``,
    alternation and quantifiers: a match then holds only ASCII characters, which in
    UTF-8 (and any encoding that keeps ASCII as single bytes) are the same bytes. Classes
    such as ``\\w`` or ``.``, negated classes, anchors, look-arounds and back-references
    are refused: they match other characters in text than in bytes, or look past a cell.
    """
    if not pattern.isascii():
        return False
    index, size = 0, len(pattern)
    in_class = False
    while index < size:
        char = pattern[index]
        if char == "\\":
            if index + 1 >= size or pattern[index + 1].isalnum():
                return False
            index += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
        elif char == "[":
            if pattern.startswith("^", index + 1):
                return False
            in_class = True
            if pattern.startswith("]", index + 1):
                index += 1  # a "]" first in a class is a literal
        elif char in ".^$" or (
            char == "("
            and pattern.startswith("?", index + 1)
            and not pattern.startswith("?:", index + 1)
        ):
            return False
        index += 1
    return not in_class


_CONTEXT_ITEM = re.compile(r"\\[wds]|\\[^A-Za-z0-9]|[ -~]-[ -~]|[ -Z^-~]")


def context_safe(items: tuple[str, ...]) -> bool:
    """Whether look-behind class items are ASCII characters and ranges, or ``\\w``,
    ``\\d``, ``\\s`` (whose ASCII part is what the class string can tell apart)."""
    return all(_CONTEXT_ITEM.fullmatch(item) for item in items)
