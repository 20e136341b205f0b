"""Built-in detectors for personal and payment data inside free text and JSON.

A detector is cheap to *skip*: it declares how many ASCII digits a cell must hold
(``min_digits``) and/or which substrings must occur (``needles``) before its regex runs;
the :class:`~jitgate.masking.scanner.Scanner` checks those with plain ``str``/``bytes``
operations first. Only then does one precompiled regex propose candidates, and a
validator (Luhn and IIN ranges, SSA rules, IBAN length and mod-97) keeps the real
values; IP addresses live in :mod:`~jitgate.masking.network`, phone numbers in
:mod:`~jitgate.masking.phone`. Every regex is anchored by look-behinds that stop
it from restarting inside a run it already rejected, so scanning stays linear in the cell.

Regex shape matters for speed: CPython's ``re`` skips quickly to candidate positions only
when a pattern *starts* with a literal or a character set, so patterns here start with one
(``[0-9]``, ``@``…) and put their "not preceded by" look-behind right after it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import NamedTuple

from jitgate.masking.findings import Claims, Finding
from jitgate.masking.validators import (
    IBAN_LENGTHS,
    LONG_NUMBER_BRANDS,
    card_brand,
    iban_valid,
    luhn_valid,
    ssn_valid,
)

_ASCII_DIGITS = b"0123456789"
DIGITS = "0123456789"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class Trigger(NamedTuple):
    """One shape of a detector's trigger: a necessary condition, split for the scanner.

    A match starts with one of the characters ``first``; the character before it is none
    of the class items ``not_after`` (``"\\w"``, ``"\\."``, ``"A-Z"``…: a look-behind; empty:
    anything may precede); then comes ``rest``. ``rest`` is written with ASCII literals and
    positive character classes only (see :func:`~.scanner.byte_safe`), and ``not_after``
    with ASCII items, so the same trigger also runs over raw result bytes (see
    :func:`~.scanner.byte_trigger`).
    """

    first: str
    rest: str = ""
    not_after: tuple[str, ...] = ()

    @property
    def behind(self) -> str:
        """The look-behind that follows the first character (empty without ``not_after``)."""
        return context(self.first, self.not_after)

    def pattern(self) -> str:
        return char_class(self.first) + self.behind + self.rest

    def literal(self) -> str | None:
        """The trigger as a plain string, if it is one (a needle, ``@``)."""
        if len(self.first) != 1 or self.not_after:
            return None
        out = [self.first]
        rest, index = self.rest, 0
        while index < len(rest):
            char = rest[index]
            if char == "\\" and index + 1 < len(rest) and not rest[index + 1].isalnum():
                out.append(rest[index + 1])
                index += 2
            elif char not in ".^$*+?{}[]\\|()":
                out.append(char)
                index += 1
            else:
                return None  # a class, a group or a quantifier: not a literal
        return "".join(out)


def context(first: str, not_after: tuple[str, ...]) -> str:
    """A look-behind, placed right after a character of ``first``: the character before
    that one is none of ``not_after``."""
    if not not_after:
        return ""
    return f"(?<![{''.join(not_after)}]{char_class(first)})"


def char_class(chars: str) -> str:
    """A regex class matching exactly the characters of ``chars``."""
    unique = "".join(sorted(set(chars)))
    if len(unique) == 1:
        return re.escape(unique)
    return "[" + "".join("\\" + c if c in "\\]^-[" else c for c in unique) + "]"


def compile_trigger(triggers: tuple[Trigger, ...]) -> re.Pattern[str]:
    """The detector-level regex of ``triggers`` (with look-behinds)."""
    return re.compile("|".join(f"(?:{t.pattern()})" for t in triggers))


def needle_triggers(needles: tuple[str, ...]) -> tuple[Trigger, ...]:
    """Triggers that are literal substrings."""
    return tuple(Trigger(needle[0], re.escape(needle[1:])) for needle in needles if needle)


def digit_count(text: str) -> int:
    """Number of ASCII digits in ``text`` (UTF-8 keeps them single bytes, so bytes work)."""
    raw = text.encode("utf-8", "surrogatepass")
    return len(raw) - len(raw.translate(None, _ASCII_DIGITS))


class Detector(ABC):
    """Finds one type of sensitive value in a cell's text."""

    type: str
    """Detector type reported in findings and selected by rules (``card``, ``secret``…)."""
    min_digits: int = 0
    """Fewest ASCII digits a cell must contain for this detector to possibly match."""
    needles: tuple[str, ...] = ()
    """If not empty, at least one must occur in the cell for this detector to run."""
    triggers: tuple[Trigger, ...] = ()
    """Cheap shapes one of which every cell holding a finding of this detector matches (a
    necessary condition, never a sufficient one); empty: only the gates above."""
    trigger: re.Pattern[str] | None = None
    """``triggers`` compiled (:func:`compile_trigger`), for a test on one detector."""
    raw_too: bool = False
    """Also run over the cell as it is, before the copy with escapes blanked (see
    :func:`~.scanner.unescaped`): for a detector that reads escapes itself (a secret's
    value with an escaped quote in it)."""

    @abstractmethod
    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        """Validated findings in ``text``; ``claims`` holds what stronger detectors took."""

    def spans_whole(self, text: str) -> bool:
        """Whether the first finding :meth:`find` yields for ``text`` is all of ``text`` —
        a cheaper test than :meth:`find` for the scanner's fast path (see
        :meth:`~.scanner.Scanner.whole`). ``False`` promises nothing: the cell is scanned."""
        return False


class CardDetector(Detector):
    """Payment card numbers: 13–19 digits, plain or in consistent space/dash groups."""

    type = "card"
    min_digits = 13
    # Plain runs hold eight digits in a row; grouped ones start "dddd-dddd" or "dddd dddd";
    # the first digit does not follow a word character, "." or "+" (see _pattern).
    triggers = (Trigger(DIGITS, "[0-9]{3}[ -]?[0-9]{4}", (r"\w", r"\.", "+")),)
    trigger = compile_trigger(triggers)
    _pattern = re.compile(
        r"[0-9](?<![\w.+][0-9])(?<![0-9]-[0-9])"
        r"(?:[0-9]{12,18}"
        r"|[0-9]{3}(?P<sep>[ -])[0-9]{4}(?:(?P=sep)[0-9]{4}){1,2}(?:(?P=sep)[0-9]{1,4})?"
        r"|[0-9]{3}(?P<sep2>[ -])[0-9]{6}(?P=sep2)[0-9]{4,5})"
        r"(?![\w]|[./-][0-9])"
    )

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        position = 0
        rejected = 0  # where the last rejected run ended
        while (match := self._pattern.search(text, position)) is not None:
            start = match.start()
            candidate = match.group()
            separator = match.group("sep") or match.group("sep2")
            skip = 0
            while True:
                digits = candidate.replace(separator, "") if separator else candidate
                brand = card_brand(digits)
                if (
                    brand is not None
                    and luhn_valid(digits)
                    and not claims.overlaps(start, start + len(candidate))
                    # Inside a rejected run, a card must end on a full group: "5526 3613
                    # 3336 8203 67%" holds no "3613 3336 8203 67".
                    and not (
                        start < rejected
                        and separator
                        and len(candidate) - candidate.rindex(separator) - 1 < 3
                    )
                ):
                    why = f"{len(digits)} digits, IIN {brand}, Luhn ok"
                    yield Finding(self.type, start, start + len(candidate), candidate, why)
                    break
                if brand in LONG_NUMBER_BRANDS and len(digits) == 19:
                    # 4-4-4-4-3 is how these brands print 19 digits: one number that
                    # fails Luhn, not a card followed by a CVV, nor one after a group.
                    candidate = ""
                    skip = match.end()
                    break
                # A trailing group may be a CVV or the start of the next number glued on
                # ("…1111 123", "…1111 4111 …"): retry without it.
                if not separator or candidate.count(separator) < 3:
                    candidate = ""
                    break
                candidate = candidate[: candidate.rindex(separator)]
            # Go on right after a card; after a rejected run, from its next group, which
            # may start a card of its own ("1234 4111 1111 1111 1111").
            if not candidate:
                rejected = max(rejected, match.end())
            position = start + len(candidate) if candidate else max(skip, start + 1)


# File names such as icon@2x.png look like addresses; these suffixes are not TLDs.
_FILE_SUFFIXES = frozenset(
    (
        "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "heic",
        "avif", "pdf", "css", "js", "mjs", "ts", "tsx", "jsx", "json", "txt", "log", "html",
        "htm", "xml", "yaml", "yml", "csv", "gz", "tgz", "bz2", "xz", "mp3", "mp4", "wav",
        "webm", "woff", "woff2", "ttf", "otf", "map", "lock", "java", "class", "jar",
    )
)  # fmt: skip


_LOCAL = r"[\w%+-]+(?:[.'][\w%+-]+)*"
_DOMAIN = (
    r"(?P<domain>(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?P<tld>[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59}))"
)


class EmailDetector(Detector):
    """E-mail addresses: a practical RFC 5322 subset, Unicode (IDN) letters allowed.

    Anchored on each ``@``: the domain is matched forwards, the local part backwards
    (at most 64 characters), so text without ``@`` costs one ``str`` search.
    """

    type = "email"
    needles = ("@",)
    triggers = (Trigger("@"),)
    trigger = compile_trigger(triggers)
    _local = re.compile(_LOCAL + r"\Z")
    _domain = re.compile(_DOMAIN + r"(?![\w-]|\.[^\W_])")
    # The whole text one address as find() reads it: its first "@" at most 64 characters
    # in, all before it a local part (so find's backward search starts at 0 and finds it
    # there), all after it a domain. Why find's domain match then ends at the text's end
    # too: it could only stop at a "." the domain goes on after, and every "." of a
    # domain is followed by a letter or digit, which its look-ahead refuses to stop at.
    _whole = re.compile(r"(?=[^@]{1,64}@)" + _LOCAL + "@" + _DOMAIN)
    _local_chars = frozenset("%+.-_")
    _max_local = 64

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        domain_at, local_before, glue = self._domain.match, self._local.search, self._local_chars
        at = text.find("@")
        while at != -1:
            domain = domain_at(text, at + 1)
            if domain is not None and domain.group("tld").lower() not in _FILE_SUFFIXES:
                local = local_before(text, at - self._max_local if at > self._max_local else 0, at)
                # A local part right after "." or "-"… is the tail of something else.
                if local is not None and (
                    (start := local.start()) == 0 or text[start - 1] not in glue
                ):
                    end = domain.end()
                    why = f"address at {domain.group('domain')}"
                    yield Finding(self.type, start, end, text[start:end], why)
            at = text.find("@", at + 1)

    def spans_whole(self, text: str) -> bool:
        whole = self._whole.fullmatch(text)
        return whole is not None and whole.group("tld").lower() not in _FILE_SUFFIXES


class SsnDetector(Detector):
    """US Social Security numbers ``AAA-GG-SSSS`` (dashes or spaces) under SSA rules.

    With ``bare=True`` (set by a column rule) a plain nine-digit value counts too.
    """

    type = "ssn"
    min_digits = 9
    _grouped = re.compile(
        r"[0-9](?<![\w.-][0-9])[0-9]{2}(?P<sep>[- ])[0-9]{2}(?P=sep)[0-9]{4}(?![\w]|[.-][0-9])"
    )
    _bare = re.compile(r"[0-9](?<![\w.-][0-9])[0-9]{8}(?![\w]|[.-][0-9])")

    _not_after = (r"\w", r"\.", r"\-")
    _grouped_triggers = (Trigger(DIGITS, "[0-9]{2}[- ][0-9]{2}[- ][0-9]{4}", _not_after),)
    _bare_triggers = (Trigger(DIGITS, "(?:[0-9]{2}[- ][0-9]{2}[- ][0-9]{4}|[0-9]{8})", _not_after),)
    _grouped_trigger = compile_trigger(_grouped_triggers)
    _bare_trigger = compile_trigger(_bare_triggers)

    def __init__(self, *, bare: bool = False) -> None:
        self.bare = bare
        self.triggers = self._bare_triggers if bare else self._grouped_triggers
        self.trigger = self._bare_trigger if bare else self._grouped_trigger

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        for match in self._grouped.finditer(text):
            digits = match.group().replace(match.group("sep"), "")
            if ssn_valid(digits):
                start, end = match.span()
                yield Finding(self.type, start, end, match.group(), "area, group, serial valid")
        if self.bare:
            for match in self._bare.finditer(text):
                if ssn_valid(match.group()):
                    start, end = match.span()
                    why = "nine digits in an SSN column, area, group, serial valid"
                    yield Finding(self.type, start, end, match.group(), why)


class IbanDetector(Detector):
    """IBANs, compact or printed in groups of four: country length table and mod-97."""

    type = "iban"
    min_digits = 2
    # Country, check digits and at least two groups of four (see _pattern).
    triggers = (Trigger(UPPER, "[A-Z][0-9]{2}(?: ?[A-Z0-9]{4}){2}", ("A-Z", "a-z", "0-9")),)
    trigger = compile_trigger(triggers)
    _pattern = re.compile(
        r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
        r"(?![A-Za-z0-9])"
    )

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        position = 0
        while (match := self._pattern.search(text, position)) is not None:
            position = match.end()
            candidate = match.group()
            expected = IBAN_LENGTHS.get(candidate[:2])
            if expected is None:
                continue
            compact = candidate.replace(" ", "")
            if len(compact) > expected:
                # Printed IBAN followed by another group of four: cut at the country length.
                prefix = _prefix_with_alnum(candidate, expected)
                if prefix is None:
                    continue
                candidate = prefix
                compact = compact[:expected]
            if iban_valid(compact):
                start = match.start()
                why = f"{compact[:2]} length {expected}, mod-97 ok"
                yield Finding(self.type, start, start + len(candidate), candidate, why)
                # Cut at its country's length: the next IBAN may start right after it.
                position = start + len(candidate)


def _prefix_with_alnum(candidate: str, count: int) -> str | None:
    """The prefix of a space-grouped candidate holding ``count`` characters, if it ends a group."""
    seen = 0
    for index, char in enumerate(candidate):
        if char != " ":
            seen += 1
            if seen == count:
                rest = candidate[index + 1 :]
                return candidate[: index + 1] if not rest or rest[0] == " " else None
    return None
