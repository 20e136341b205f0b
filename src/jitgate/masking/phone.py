"""Phone number detection with the ``phonenumbers`` library (libphonenumber's port).

Validation is by far the most expensive step of all detectors, so this module works hard
at calling the library only for digit runs that can be phone numbers at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import phonenumbers

from jitgate.masking.detectors import DIGITS, Detector, Trigger, compile_trigger
from jitgate.masking.findings import Claims, Finding


class PhoneDetector(Detector):
    """Phone numbers validated by ``phonenumbers`` (``PhoneNumberMatcher``, leniency VALID;
    a national number in unusual groups must also pass STRICT_GROUPING: grouped the way the
    country writes its numbers).

    The matcher is slow, so it only sees short windows around cheap candidates: a digit
    run with phone separators, 7–15 digits, not a date, not already claimed by a card,
    SSN, IBAN or IP, and — unless written with ``+`` or an international call prefix —
    whose digits fit the default region's national number pattern (from the library's
    own metadata), so timestamps and numeric IDs never reach it. A match glued to a longer
    token (``INV-…``, ``….00``) is dropped. Results are cached per window text, since the
    same number tends to repeat down a column. Two windows skip the matcher, with the
    same outcome: digit groups glued to a longer token (all it could find would be
    dropped) and a whole ``+`` number that ``parse`` and ``is_valid_number`` accept (what
    the matcher would take). A cell with more than ``max_windows``
    candidates (a huge blob of numbers) fails closed: the rest count unvalidated.
    """

    type = "phone"
    min_digits = 7
    # Every finding comes from a _candidate run: this is that pattern without what follows.
    triggers = (Trigger(DIGITS, "[0-9 ().-]{5,}[0-9]", (r"\w", r"\.", "/", r"\-")),)
    trigger = compile_trigger(triggers)
    # Not inside a MAC address or a time ("…:1b:56 3530 0474", "07:39:27.2 73"): no hex
    # digit and colon right before, no colon and hex digit right after.
    _candidate = re.compile(
        r"[0-9](?<![\w./-][0-9])(?<![0-9A-Fa-f]:[0-9])[0-9 ().-]{5,}[0-9]"
        r"(?!(?!x[0-9])\w|[.-][0-9]|:[0-9A-Fa-f])"
    )
    _date_like = re.compile(
        r"[0-9]{4}[-/.][0-9]{1,2}[-/.][0-9]{1,2}\b|[0-9]{1,2}[-/.][0-9]{1,2}[-/.][0-9]{2,4}$"
    )
    _digit_group = re.compile(r"[0-9]+")
    _card_shaped = re.compile(r"[0-9]{4}(?P<sep>[ -])[0-9]{4,6}(?:(?P=sep)[0-9]{1,5}){1,3}")
    _joined = re.compile(r"[0-9]+(?:[-.][0-9]+)*")
    _international_window = re.compile(r"\+[0-9]+(?:[ -][0-9]+)*")
    _lead = re.compile(r"[+(][ (]?\Z|[ (]\Z")
    _extension = re.compile(r"(?i)[ ,]*(?:ext\.?|extension|x|#)[ .]*[0-9]{1,6}\b|\)")

    def __init__(
        self, region: str = "US", *, max_windows: int = 10_000, cache_size: int = 4096
    ) -> None:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if region not in phonenumbers.SUPPORTED_REGIONS or metadata is None:
            raise ValueError(f"unknown phone region {region!r}")
        self.region = region
        self.max_windows = max_windows
        general = metadata.general_desc
        # Any valid number of the region's country code fits one of its number types'
        # patterns (stricter than the general one): a necessary condition, checked first.
        self._national = _valid_numbers(phonenumbers.country_code_for_region(region)) or re.compile(
            (general.national_number_pattern if general else None) or r"[0-9]+"
        )
        self._national_prefix = metadata.national_prefix or ""
        possible = set((general.possible_length if general else None) or range(7, 16))
        # Lengths a national number of the region can have, with or without its prefix.
        self._national_lengths = frozenset(
            possible | {length + len(self._national_prefix) for length in possible}
        )
        self._international = re.compile(metadata.international_prefix or "00")
        self._cache: dict[str, list[tuple[int, int, str, str]]] = {}
        nanp = phonenumbers.country_code_for_region(region) == 1
        self._usual_groups = frozenset({(3, 3, 4), (1, 3, 3, 4)} if nanp else ())
        self._cache_size = cache_size

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        budget = [self.max_windows]
        covers = claims.covers
        for run_start, run_end in self._runs(text):
            if covers(run_start, run_end):
                continue  # all a stronger finding's (a card, an SSN, an IP): nothing left
            if self._card_shaped.fullmatch(text, run_start, run_end):
                continue  # grouped like a card number: a Luhn failure is not a phone
            yield from self._run_findings(text, run_start, run_end, claims, budget)

    def _check(self, text: str, start: int, end: int, claims: Claims) -> list[Finding]:
        """Validated numbers in the window around ``start:end``: with the "+" or "(" before
        and an extension after, not the neighbouring numbers the matcher could join."""
        before = self._lead.search(text, max(0, start - 4), start)
        window_start = before.start() if before else start
        after = self._extension.match(text, end)
        window_end = after.end() if after else end
        claimed = claims.between(window_start, window_end)
        if not (before or after or claimed) and self._all_glued(text, start, end, claims):
            return []  # whatever the library found in it would be dropped below
        window = text[window_start:window_end]
        if claimed:  # blank what stronger detectors took, so it cannot join a number
            chars = list(window)
            for claim_start, claim_end in claimed:
                low = max(claim_start, window_start) - window_start
                high = min(claim_end, window_end) - window_start
                chars[low:high] = " " * (high - low)
            window = "".join(chars)
        found = []
        for match_start, match_end, raw, why in self._match(window):
            match_start, match_end = window_start + match_start, window_start + match_end
            if not self._glued(text, match_start, match_end, claims) and not _among_numbers(
                text, match_start, match_end, claims
            ):
                found.append(Finding(self.type, match_start, match_end, raw, why))
        return found

    def _all_glued(self, text: str, start: int, end: int, claims: Claims) -> bool:
        """Whether every number found in ``text[start:end]`` (no claim in it) would be
        :meth:`_glued`, so the library need not look: digit groups joined by single ``-``
        or ``.`` glued to a longer token on one side (``978-3-16-148410``, an ISBN's
        tail). Inside it, each number starts right after a digit, or a ``-``/``.`` after
        one, and ends right before the same, so it is glued on the inner sides too."""
        return self._joined.fullmatch(text, start, end) is not None and (
            _glued_before(text, start, claims) or _glued_after(text, end, claims)
        )

    def _match(self, window: str) -> list[tuple[int, int, str, str]]:
        cached = self._cache.get(window)
        if cached is not None:
            return cached
        found = self._whole_international(window)
        if found is None:
            found = self._matches(window)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[window] = found
        return found

    def _whole_international(self, window: str) -> list[tuple[int, int, str, str]] | None:
        """What :meth:`_matches` finds in ``+`` and digit groups joined by single spaces or
        hyphens (most international numbers) when they are one valid number; ``None``:
        not known, ask the matcher.

        For such a window (at most 15 digits) the matcher's one candidate is all of it (no
        date, time, bracket or page-reference shape, nothing before or after it), and it
        takes the candidate when ``parse`` and ``is_valid_number`` accept it: with ``+`` no
        national prefix is required, and there is no ``x`` to check. Only a rejection makes
        it look further (for inner numbers), so that case is left to it.
        """
        if self._international_window.fullmatch(window) is None:
            return None
        try:
            number = phonenumbers.parse(window, self.region, keep_raw_input=True)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_valid_number(number):
            return None
        return [(0, len(window), window, _why(number))]

    def _matches(self, window: str) -> list[tuple[int, int, str, str]]:
        """Valid numbers the library's matcher finds in ``window``, grouping checked."""
        found = []
        matcher = phonenumbers.PhoneNumberMatcher(
            window, self.region, leniency=phonenumbers.Leniency.VALID
        )
        for match in matcher:
            if not self._plainly_grouped(match.raw_string) and not any(
                phonenumbers.PhoneNumberMatcher(
                    match.raw_string, self.region, leniency=phonenumbers.Leniency.STRICT_GROUPING
                )
            ):
                continue  # valid digits, grouped as no one writes this country's numbers
            found.append((match.start, match.end, match.raw_string, _why(match.number)))
        return found

    def _plainly_grouped(self, raw: str) -> bool:
        """Whether a valid number is written in a way that needs no grouping check (which
        costs as much again): international (its country's own groups, or none), one run
        of digits, or the region's usual groups (3-3-4 in the NANP)."""
        if raw.startswith(("+", "00")):
            return True
        groups = tuple(len(group) for group in self._digit_group.findall(raw))
        return len(groups) == 1 or groups in self._usual_groups

    def _runs(self, text: str) -> Iterator[tuple[int, int]]:
        """Candidate runs, cut where a sentence ends (". "): two numbers, not one."""
        for run in self._candidate.finditer(text):
            start, end = run.span()
            cut = text.find(". ", start, end)
            while cut >= 0:
                if cut > start:
                    yield start, cut
                start = cut + 2
                cut = text.find(". ", start, end)
            if start < end:
                yield start, end

    def _run_findings(
        self, text: str, run_start: int, run_end: int, claims: Claims, budget: list[int]
    ) -> Iterator[Finding]:
        """Numbers in a run of consecutive digit groups (7–15 digits, phone-shaped).

        A run such as ``$65,793.72. 616-332-5339`` or ``+4915123452078 17.0.1`` holds
        more than one number, so sequences of its groups are tried left to right, the
        longest plausible one first and, if the library rejects it, the next shorter one;
        a rejected start moves on by one group. ``budget`` counts library calls left for
        the cell: past it, the longest plausible span counts unvalidated (fail closed).
        """
        spans = [match.span() for match in self._digit_group.finditer(text, run_start, run_end)]
        groups = [text[start:end] for start, end in spans]
        if sum(map(len, groups)) < 7:
            return  # fewer than seven digits in all: no phone number
        national_lengths = self._national_lengths
        first = 0
        while first < len(groups):
            start = spans[first][0]
            international: bool | None = None  # worked out when first needed
            country: tuple[int, frozenset[int], int] | None = None
            length = 0
            plausible: list[int] = []
            for last in range(first, len(groups)):
                length += len(groups[last])
                if length > 15:
                    break
                # Cheap length test first: most runs are dates, times and IDs.
                if length < 7:
                    continue
                if international is None:
                    plus = start > 0 and text[start - 1] == "+"
                    international = plus or bool(
                        self._international.match("".join(groups[first : first + 3]))
                    )
                    # After "+", the country code tells the lengths its numbers have.
                    country = _country_lengths("".join(groups[first : first + 2])) if plus else None
                if not (international or length in national_lengths):
                    continue
                if country is not None and length - country[0] not in country[1]:
                    continue
                end = spans[last][1]
                if (
                    (
                        self._national_shaped("".join(groups[first : last + 1]))
                        if not international
                        else country is None
                        or _valid_for_code(
                            country[2], "".join(groups[first : last + 1])[country[0] :]
                        )
                    )
                    and not self._date_like.match(text, start, end)
                    and not claims.overlaps(start, end)
                ):
                    plausible.append(last)
            found: list[Finding] = []
            for last in plausible[::-1][:2]:
                if budget[0] <= 0:
                    while start > 0 and text[start - 1] in "+(":
                        start -= 1
                    end = spans[plausible[-1]][1]
                    why = "plausible number, not validated (validation budget of the cell spent)"
                    found = [Finding(self.type, start, end, text[start:end], why)]
                    break
                budget[0] -= 1
                found = self._check(text, start, spans[last][1], claims)
                if found:
                    break
            if not found:
                first += 1
                continue
            yield from found
            ends = found[-1].end
            first += 1
            while first < len(groups) and spans[first][0] < ends:
                first += 1

    def _national_shaped(self, digits: str) -> bool:
        """Digits that fit the default region's national number pattern (prefix allowed)."""
        if self._national.fullmatch(digits):
            return True
        prefix = self._national_prefix
        return (
            bool(prefix)
            and digits.startswith(prefix)
            and (self._national.fullmatch(digits[len(prefix) :]) is not None)
        )

    @staticmethod
    def _glued(text: str, start: int, end: int, claims: Claims) -> bool:
        """Whether the match continues a longer token: ``INV-415…``, ``…2671.00``, ``#…``.

        A neighbour that another finding claimed will be masked, so it does not count.
        """
        return _glued_before(text, start, claims) or _glued_after(text, end, claims)


def _glued_before(text: str, start: int, claims: Claims) -> bool:
    if start > 0 and not claims.overlaps(start - 1, start):
        before = text[start - 1]
        if before.isalnum() or before in "#_":
            return True
        if before in "-./" and start > 1 and text[start - 2].isalnum():
            return True
    return False


def _glued_after(text: str, end: int, claims: Claims) -> bool:
    if end < len(text) and not claims.overlaps(end, end + 1):
        after = text[end]
        if after.isdigit():
            return True
        if after in "-./" and end + 1 < len(text) and text[end + 1].isdigit():
            return True
    return False


def _why(number: phonenumbers.PhoneNumber) -> str:
    code = number.country_code or 0
    return f"valid number, country code +{code} ({phonenumbers.region_code_for_country_code(code)})"


def _among_numbers(text: str, start: int, end: int, claims: Claims) -> bool:
    """Whether digit groups go on, one space away, on both sides (``…0189 1902 296 6211
    5136…``): a stretch of a longer run of numbers, not a phone number of its own."""
    return (
        start > 1
        and text[start - 1] == " "
        and text[start - 2].isdigit()
        and not claims.overlaps(start - 2, start - 1)
        and end + 1 < len(text)
        and text[end] == " "
        and text[end + 1].isdigit()
        and not claims.overlaps(end + 1, end + 2)
    )


_COUNTRY_LENGTHS: dict[int, frozenset[int]] = {}
_VALID_NUMBERS: dict[int, re.Pattern[str] | None] = {}
_NUMBER_TYPES = (
    "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number",
    "voip", "pager", "uan", "voicemail",
)  # fmt: skip


def _valid_numbers(code: int) -> re.Pattern[str] | None:
    """One regex for the national numbers of country code ``code`` that fit a number type
    of one of its regions (what ``is_valid_number`` asks of the region it picks, so a
    necessary condition); ``None``: not known."""
    if code in _VALID_NUMBERS:
        return _VALID_NUMBERS[code]
    patterns: list[str] = []
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ()):
        metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region)
        if metadata is None:
            patterns = []
            break
        for name in _NUMBER_TYPES:
            desc = getattr(metadata, name, None)
            if desc is not None and desc.national_number_pattern:
                patterns.append(desc.national_number_pattern)
    compiled = (
        re.compile("|".join(f"(?:{p})" for p in dict.fromkeys(patterns))) if patterns else None
    )
    _VALID_NUMBERS[code] = compiled
    return compiled


def _valid_for_code(code: int, national: str) -> bool:
    """Whether ``national`` (digits after country code ``code``) may be a valid number."""
    pattern = _valid_numbers(code)
    return pattern is None or pattern.fullmatch(national) is not None


def _country_lengths(digits: str) -> tuple[int, frozenset[int], int] | None:
    """(length of the country code ``digits`` start with, the lengths of that country's
    fixed-line and mobile national numbers, the code); ``None``: no known country code."""
    for size in (1, 2, 3):
        if len(digits) < size:
            return None
        code = int(digits[:size])
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code)
        if not regions:
            continue
        lengths = _COUNTRY_LENGTHS.get(code)
        if lengths is None:
            found: set[int] = set()
            for region in regions:
                metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
                    code, region
                )
                if metadata is None:
                    continue
                for desc in (metadata.fixed_line, metadata.mobile, metadata.general_desc):
                    if desc is not None and desc.possible_length:
                        found.update(n for n in desc.possible_length if n > 0)
                    if found and desc is metadata.mobile:
                        break  # fixed-line and mobile lengths known: enough
            lengths = _COUNTRY_LENGTHS[code] = frozenset(found or range(4, 15))
        return size, lengths, code
    return None
