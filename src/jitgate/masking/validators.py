"""Checksums and number-plan rules that turn a pattern match into a validated value.

These run only on candidates a detector's regex already found, so they are plain Python:
Luhn for payment cards, the issuer (IIN/BIN) table of the major card brands, the ISO 13616
IBAN country-length table with ISO 7064 mod-97, and the SSA rules for US Social Security
numbers. :data:`VALIDATORS` names the ones an operator may attach to a custom detector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

# Each digit replaced by the digit sum of its double (Luhn's doubled positions).
_DOUBLE = bytes.maketrans(b"0123456789", b"0246813579")


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check of an all-digit string."""
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    reverse = digits.encode("ascii")[::-1]
    doubled = reverse[1::2].translate(_DOUBLE)
    # Sums of the digit bytes minus the b"0" offsets: no per-digit Python loop.
    return (sum(reverse[0::2]) + sum(doubled) - 48 * len(reverse)) % 10 == 0


# (first prefix, last prefix, brand, allowed lengths); prefixes compared on equal length.
_ANY_16_19 = frozenset(range(16, 20))
_IIN_RANGES: tuple[tuple[str, str, str, frozenset[int]], ...] = (
    ("4", "4", "Visa", frozenset({13, 16, 19})),
    ("51", "55", "Mastercard", frozenset({16})),
    ("2221", "2720", "Mastercard", frozenset({16})),
    ("34", "34", "American Express", frozenset({15})),
    ("37", "37", "American Express", frozenset({15})),
    ("6011", "6011", "Discover", _ANY_16_19),
    ("644", "649", "Discover", _ANY_16_19),
    ("65", "65", "Discover", _ANY_16_19),
    ("622126", "622925", "Discover", _ANY_16_19),
    ("3528", "3589", "JCB", _ANY_16_19),
    ("300", "305", "Diners Club", frozenset(range(14, 20))),
    ("3095", "3095", "Diners Club", frozenset(range(14, 20))),
    ("36", "36", "Diners Club", frozenset(range(14, 20))),
    ("38", "39", "Diners Club", frozenset(range(14, 20))),
    ("62", "62", "UnionPay", _ANY_16_19),
    ("81", "81", "UnionPay", _ANY_16_19),
    ("5018", "5018", "Maestro", frozenset(range(13, 20))),
    ("5020", "5020", "Maestro", frozenset(range(13, 20))),
    ("5038", "5038", "Maestro", frozenset(range(13, 20))),
    ("5893", "5893", "Maestro", frozenset(range(13, 20))),
    ("6304", "6304", "Maestro", frozenset(range(13, 20))),
    ("6759", "6759", "Maestro", frozenset(range(13, 20))),
    ("6761", "6763", "Maestro", frozenset(range(13, 20))),
)


LONG_NUMBER_BRANDS = frozenset({"UnionPay", "Maestro", "Discover", "JCB", "Diners Club"})
"""Brands that issue 17–19 digit numbers, printed 4-4-4-4-3 (a Visa number followed by three
more digits is more likely a card and its CVV)."""


def _expand_ranges() -> dict[str, tuple[str, frozenset[int]]]:
    table: dict[str, tuple[str, frozenset[int]]] = {}
    for first, last, brand, lengths in _IIN_RANGES:
        width = len(first)
        for prefix in range(int(first), int(last) + 1):
            table[str(prefix).zfill(width)] = (brand, lengths)
    return table


_IIN_TABLE = _expand_ranges()
_IIN_WIDTHS = sorted({len(prefix) for prefix in _IIN_TABLE}, reverse=True)


def card_brand(digits: str) -> str | None:
    """The brand whose IIN range and length admit ``digits``, or ``None``."""
    length = len(digits)
    for width in _IIN_WIDTHS:  # most specific prefix first
        entry = _IIN_TABLE.get(digits[:width])
        if entry is not None and length in entry[1]:
            return entry[0]
    return None


def card_valid(digits: str) -> bool:
    """A payment card number: a known brand's IIN range and length, and Luhn."""
    return 13 <= len(digits) <= 19 and card_brand(digits) is not None and luhn_valid(digits)


# ISO 13616 registry: total IBAN length per country code.
IBAN_LENGTHS: Mapping[str, int] = MappingProxyType(
    {
        "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
        "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
        "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
        "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
        "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
        "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
        "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
        "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
        "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
        "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
        "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
    }
)  # fmt: skip


# A -> "10" … Z -> "35", as mod-97 reads letters.
_LETTER_VALUES = str.maketrans({chr(ord("A") + i): str(10 + i) for i in range(26)})


def mod97_valid(value: str) -> bool:
    """ISO 7064 mod-97-10 as IBANs use it: first four characters moved to the end."""
    compact = value.upper()
    if len(compact) < 5 or not compact.isascii() or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int(rearranged.translate(_LETTER_VALUES)) % 97 == 1


def iban_valid(compact: str) -> bool:
    """An IBAN without separators: known country, that country's length, check digits
    02–98 (ISO 13616 never computes 00, 01 or 99), mod-97."""
    expected = IBAN_LENGTHS.get(compact[:2])
    return (
        expected is not None
        and len(compact) == expected
        and compact[2:4].isdigit()
        and "02" <= compact[2:4] <= "98"
        and mod97_valid(compact)
    )


# Numbers the SSA never issued but that circulate widely (a wallet insert, an advert).
KNOWN_INVALID_SSNS = frozenset({"078051120", "219099999"})


def ssn_valid(digits: str) -> bool:
    """A US SSN of nine digits under the SSA rules (area, group, serial)."""
    if len(digits) != 9 or not digits.isdigit() or not digits.isascii():
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return (
        area != "000"
        and area != "666"
        and area[0] != "9"
        and group != "00"
        and serial != "0000"
        and digits not in KNOWN_INVALID_SSNS
    )


def _digits_of(value: str) -> str:
    return "".join(char for char in value if "0" <= char <= "9")


def _alnum_of(value: str) -> str:
    return "".join(char for char in value if char.isascii() and char.isalnum())


VALIDATORS: Mapping[str, Callable[[str], bool]] = MappingProxyType(
    {
        "luhn": lambda text: luhn_valid(_digits_of(text)),
        "card": lambda text: card_valid(_digits_of(text)),
        "mod97": lambda text: mod97_valid(_alnum_of(text)),
        "iban": lambda text: iban_valid(_alnum_of(text).upper()),
        "ssn": lambda text: ssn_valid(_digits_of(text)),
    }
)
"""Validators a custom detector may name: each takes the matched text."""
