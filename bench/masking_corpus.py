"""Seeded, labelled corpus of result cells for the masking accuracy benchmark.

Each :class:`LabelledCell` is a cell's text plus the exact spans of the sensitive values
planted in it (type and ``[start, end)``). Cells come in five shapes: free-text sentences,
JSON documents, CSV-ish lines, *hard negatives* (values that look sensitive but are not:
order numbers, timestamps, UUIDs, Luhn-failing 16-digit numbers, hex hashes, versions,
IP-like version strings, phone-like IDs that ``phonenumbers`` rejects, invalid SSNs,
IBANs with a bad checksum, ``x@2x.png``, 19-digit numbers failing Luhn, MAC addresses, times
and counters side by side, ISBNs, coordinates…) and *clean* cells without any candidate
character (names, statuses, prose), which measure the cost of the pre-filter.

Values are generated, not sampled from a list: card numbers carry a real IIN and a Luhn
check digit, IBANs a computed mod-97 checksum, phone numbers are accepted by
``phonenumbers.is_valid_number``, JWT headers decode to JSON with ``alg``.

Run ``python -m bench.masking_corpus --count 5`` to see a few cells.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers

TYPES = ("card", "email", "ssn", "phone", "iban", "ip", "secret")


@dataclass(frozen=True, slots=True)
class Planted:
    """A labelled value: ``text`` is what goes into the cell, ``inner`` the sensitive part."""

    type: str
    text: str
    inner: tuple[int, int]


@dataclass(frozen=True, slots=True)
class LabelledCell:
    text: str
    spans: tuple[tuple[int, int, str], ...]
    shape: str


def _plain(kind: str, text: str) -> Planted:
    return Planted(kind, text, (0, len(text)))


# -- sensitive values -----------------------------------------------------------------------

_CARD_PREFIXES = (
    ("4", 16), ("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16),
    ("34", 15), ("37", 15), ("6011", 16), ("65", 16), ("3530", 16), ("3589", 16),
    ("36", 14), ("300", 14), ("62", 16), ("62", 19), ("6759", 16), ("5018", 16),
)  # fmt: skip


def luhn_complete(partial: str) -> str:
    total = 0
    for index, char in enumerate(reversed(partial)):
        digit = int(char)
        if index % 2 == 0:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return partial + str((10 - total % 10) % 10)


def card_digits(rng: random.Random) -> str:
    prefix, length = rng.choice(_CARD_PREFIXES)
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return luhn_complete(body)


def format_card(rng: random.Random, digits: str) -> str:
    style = rng.choice(("plain", "space", "dash"))
    if style == "plain":
        return digits
    separator = " " if style == "space" else "-"
    if len(digits) in (14, 15):  # Diners 4-6-4, Amex 4-6-5
        groups = [digits[:4], digits[4:10], digits[10:]]
    else:
        groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    return separator.join(groups)


def card(rng: random.Random) -> Planted:
    return _plain("card", format_card(rng, card_digits(rng)))


_FIRST = ("john", "maria", "li", "ahmed", "olga", "jose", "priya", "kenji", "anna", "sam")
_LAST = ("smith", "garcia", "wang", "khan", "novak", "silva", "patel", "tanaka", "o'brien")
_DOMAINS = (
    "example.com", "mail.example.org", "corp.example.co.uk", "example.io", "münchen.de",
    "xn--mnchen-3ya.de", "exämple.com", "uni.example.edu", "example.travel", "sub.example.net",
)  # fmt: skip


def email(rng: random.Random) -> Planted:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    local = rng.choice(
        (f"{first}.{last}", f"{first}{rng.randint(1, 99)}", f"{first}+{rng.choice(('news', 'x'))}",
         f"{first[0]}{last}", f"{first}_{last}", f"{first}-{last}", "josé.núñez")
    )  # fmt: skip
    return _plain("email", f"{local}@{rng.choice(_DOMAINS)}")


def ssn(rng: random.Random) -> Planted:
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    digits = f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
    if digits in ("078051120", "219099999"):
        digits = "123456789"
    separator = rng.choice(("-", "-", " "))
    return _plain("ssn", separator.join((digits[:3], digits[3:5], digits[5:])))


_PHONE_REGIONS = ("GB", "DE", "FR", "IN", "BR", "AU", "JP")


def _random_valid_number(rng: random.Random) -> phonenumbers.PhoneNumber:
    while True:
        if rng.random() < 0.6:
            national = f"{rng.randint(201, 989)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
            number = phonenumbers.parse(national, "US")
        else:
            region = rng.choice(_PHONE_REGIONS)
            example = phonenumbers.example_number_for_type(
                region, phonenumbers.PhoneNumberType.MOBILE
            )
            national = str(example.national_number)
            tail = "".join(rng.choice(string.digits) for _ in range(4))
            number = phonenumbers.parse(f"+{example.country_code}{national[:-4]}{tail}")
        if phonenumbers.is_valid_number(number):
            return number


def phone(rng: random.Random) -> Planted:
    number = _random_valid_number(rng)
    if number.country_code == 1:
        digits = str(number.national_number)
        area, exchange, line = digits[:3], digits[3:6], digits[6:]
        text = rng.choice(
            (
                f"({area}) {exchange}-{line}",
                f"{area}-{exchange}-{line}",
                f"+1 {area} {exchange} {line}",
                f"{area}.{exchange}.{line}",
                f"+1-{area}-{exchange}-{line}",
                f"+1{digits}",
            )
        )
    else:
        style = rng.choice(
            (phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164)
        )
        text = phonenumbers.format_number(number, style)
    return _plain("phone", text)


_IBAN_SHAPES = {  # country: BBAN as (count, alphabet) runs
    "DE": ((18, string.digits),),
    "FR": ((10, string.digits), (11, string.ascii_uppercase + string.digits), (2, string.digits)),
    "GB": ((4, string.ascii_uppercase), (14, string.digits)),
    "NL": ((4, string.ascii_uppercase), (10, string.digits)),
    "ES": ((20, string.digits),),
    "IT": ((1, string.ascii_uppercase), (22, string.digits)),
    "BE": ((12, string.digits),),
    "CH": ((17, string.digits),),
    "PL": ((24, string.digits),),
    "NO": ((11, string.digits),),
    "SA": ((20, string.digits),),
}


def iban_compact(rng: random.Random, *, valid: bool = True) -> str:
    country = rng.choice(sorted(_IBAN_SHAPES))
    bban = "".join(
        rng.choice(alphabet) for count, alphabet in _IBAN_SHAPES[country] for _ in range(count)
    )
    numeric = "".join(str(int(char, 36)) for char in bban + country + "00")
    check = 98 - int(numeric) % 97
    if not valid:
        check = (check + rng.randint(1, 96)) % 97 or 1
        if check == 98 - int(numeric) % 97:
            check = check % 96 + 1
    return f"{country}{check:02d}{bban}"


def iban(rng: random.Random) -> Planted:
    compact = iban_compact(rng)
    if rng.random() < 0.5:
        return _plain("iban", compact)
    return _plain("iban", " ".join(compact[i : i + 4] for i in range(0, len(compact), 4)))


def ip(rng: random.Random) -> Planted:
    if rng.random() < 0.7:
        return _plain("ip", str(ipaddress.IPv4Address(rng.getrandbits(32))))
    address = ipaddress.IPv6Address(
        (0x2001_0DB8 << 96) | rng.getrandbits(64) if rng.random() < 0.5 else rng.getrandbits(128)
    )
    return _plain("ip", address.compressed if rng.random() < 0.7 else address.exploded)


_B64URL = string.ascii_letters + string.digits + "-_"
_B64 = string.ascii_letters + string.digits + "+/"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _random(rng: random.Random, alphabet: str, count: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(count))


def jwt(rng: random.Random) -> str:
    header = _b64url(
        json.dumps({"alg": rng.choice(("HS256", "RS256", "ES256")), "typ": "JWT"}).encode()
    )
    payload = _b64url(
        json.dumps(
            {"sub": str(rng.randint(1, 10**6)), "iat": rng.randint(10**9, 2 * 10**9)}
        ).encode()
    )
    return f"{header}.{payload}.{_random(rng, _B64URL, 43)}"  # fmt: skip


def pem_block(rng: random.Random, newline: str = "\n") -> str:
    label = rng.choice(("RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"))
    lines = [_random(rng, _B64, 64) for _ in range(rng.randint(3, 8))]
    return newline.join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"])


def secret(rng: random.Random) -> Planted:
    style = rng.choice(("aws", "jwt", "pem", "bearer", "password", "github", "slack", "stripe"))
    if style == "aws":
        return _plain("secret", "AKIA" + _random(rng, string.ascii_uppercase + string.digits, 16))
    if style == "jwt":
        return _plain("secret", jwt(rng))
    if style == "pem":
        return _plain("secret", pem_block(rng))
    if style == "github":
        return _plain("secret", "ghp_" + _random(rng, string.ascii_letters + string.digits, 36))
    if style == "slack":
        return _plain(
            "secret", f"xoxb-{rng.randint(10**10, 10**11)}-{_random(rng, _B64URL[:62], 24)}"
        )
    if style == "stripe":
        return _plain("secret", "sk_live_" + _random(rng, string.ascii_letters + string.digits, 24))
    value = _random(rng, string.ascii_letters + string.digits, rng.randint(10, 20))
    if style == "bearer":
        prefix = rng.choice(("Authorization: Bearer ", "bearer "))
    else:
        prefix = rng.choice(("password=", "db_password: ", "secret=", "api_key="))
    return Planted("secret", prefix + value, (len(prefix), len(prefix) + len(value)))


GENERATORS: dict[str, Callable[[random.Random], Planted]] = {
    "card": card, "email": email, "ssn": ssn, "phone": phone, "iban": iban, "ip": ip,
    "secret": secret,
}  # fmt: skip


# -- hard negatives ---------------------------------------------------------------------------


def _luhn_failing_card(rng: random.Random) -> str:
    digits = card_digits(rng)
    last = str((int(digits[-1]) + rng.randint(1, 9)) % 10)
    return format_card(rng, digits[:-1] + last)


def _phone_like_id(rng: random.Random) -> str:
    while True:
        candidate = rng.choice(
            (f"{rng.randint(0, 1)}{rng.randint(10**8, 10**9 - 1)}",
             f"{rng.randint(100, 199)}-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
             f"0{rng.randint(10**8, 10**9 - 1)}")
        )  # fmt: skip
        matches = phonenumbers.PhoneNumberMatcher(
            candidate, "US", leniency=phonenumbers.Leniency.VALID
        )
        if not any(True for _ in matches):
            return candidate


def _invalid_ssn(rng: random.Random) -> str:
    return rng.choice(
        (f"000-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
         f"666-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
         f"{rng.randint(900, 999)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
         f"{rng.randint(100, 599)}-00-{rng.randint(1000, 9999)}",
         f"{rng.randint(100, 599)}-{rng.randint(10, 99)}-0000", "078-05-1120", "219-09-9999")
    )  # fmt: skip


def _timestamp(rng: random.Random) -> str:
    year, month, day = rng.randint(2000, 2030), rng.randint(1, 12), rng.randint(1, 28)
    hour, minute, second = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    date = f"{year}-{month:02d}-{day:02d}"
    time = f"{hour:02d}:{minute:02d}:{second:02d}"
    return rng.choice(
        (
            f"{date}T{time}Z",
            f"{date} {time}.{rng.randint(0, 999999):06d}",
            date,
            f"{month:02d}/{day:02d}/{year}",
            f"{day:02d}.{month:02d}.{year}",
            str(rng.randint(10**9, 2 * 10**9)),  # Unix seconds
            str(rng.randint(10**12, 2 * 10**12)),  # Unix milliseconds
            date.replace("-", "") + time.replace(":", ""),
            time,
        )
    )


def _version(rng: random.Random) -> str:
    a, b, c, d = (rng.randint(0, 20) for _ in range(4))
    return rng.choice(
        (
            f"v{a}.{b}.{c}",
            f"{a}.{b}.{c}.{d}.{rng.randint(0, 9)}",
            f"version {a}.{b}.{c}.{d}",  # IP-like version strings
            f"v{a}.{b}.{c}.{d}",
            f"release {a}.{b}.{c}.{d}",
            f"build {a}.{b}.{c}.{d}",
            f"10.0.{rng.randint(10000, 22000)}.{d}",
            f"{a}.{b}.{c}-rc{d}",
        )
    )


def _hash(rng: random.Random) -> str:
    return _random(rng, "0123456789abcdef", rng.choice((32, 40, 64)))


def _lookalike_email(rng: random.Random) -> str:
    name = rng.choice(_FIRST)
    return rng.choice(
        (
            "icon@2x.png",
            "logo@3x.jpg",
            f"{name}@localhost",
            f"@{name}",
            f"{name}@host",
            f"pkg@{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}",
        )
    )


def _long_luhn_failing(rng: random.Random) -> str:
    """A 19-digit UnionPay or Maestro number failing Luhn, printed 4-4-4-4-3: its first 16
    digits pass Luhn one time in ten, which must not make it a card and a CVV."""
    prefix = rng.choice(("62", "6759", "5018"))
    body = prefix + "".join(rng.choice(string.digits) for _ in range(18 - len(prefix)))
    digits = luhn_complete(body)
    digits = digits[:-1] + str((int(digits[-1]) + rng.randint(1, 9)) % 10)
    separator = rng.choice((" ", "-"))
    return separator.join(digits[index : index + 4] for index in range(0, 19, 4))


def _log_line_numbers(rng: random.Random) -> str:
    """Times, MAC addresses and counters side by side, as log lines print them."""
    mac = ":".join(f"{rng.getrandbits(8):02x}" for _ in range(6))
    stamp = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    return rng.choice(
        (
            f"{mac} {rng.randint(10, 99)} {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
            f"{stamp}.{rng.randint(0, 999999):06d} {rng.randint(10, 99)}:{rng.randint(10, 99)}",
            f"{rng.randint(10000, 99999)} {rng.randint(10000, 99999)}",
            f"{rng.randint(1, 20)}.{rng.randint(0, 20)}.{rng.randint(0, 9)} "
            f"{rng.randint(1, 20)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}-rc{rng.randint(1, 9)}",
            f"{rng.randint(10000, 99999)}. {rng.randint(100, 999)}.{rng.randint(0, 99):02d}",
        )
    )


NEGATIVES: dict[str, Callable[[random.Random], str]] = {
    "order": lambda rng: rng.choice(
        (
            f"ORD-{rng.randint(2019, 2025)}-{rng.randint(0, 999999):06d}",
            f"#A{rng.randint(10**6, 10**7)}",
            f"PO-{rng.randint(10000, 99999)}-{rng.randint(10, 99)}",
            f"INV{rng.randint(10**5, 10**6)}",
        )
    ),
    "timestamp": _timestamp,
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    "luhn_fail": _luhn_failing_card,
    "hash": _hash,
    "version": _version,
    "phone_like_id": _phone_like_id,
    "invalid_ssn": _invalid_ssn,
    "bad_iban": lambda rng: iban_compact(rng, valid=False),
    "email_lookalike": _lookalike_email,
    "amount": lambda rng: rng.choice(
        (
            f"${rng.randint(1, 99999):,}.{rng.randint(0, 99):02d}",
            f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d} EUR",
            f"{rng.randint(1, 100)}%",
            f"{rng.randint(10000, 99999)}",
        )
    ),
    "mac": lambda rng: ":".join(f"{rng.getrandbits(8):02x}" for _ in range(6)),
    "long_luhn_fail": _long_luhn_failing,
    "log_numbers": _log_line_numbers,
    "isbn": lambda rng: (
        f"978-{rng.randint(0, 9)}-{rng.randint(10, 99)}-"
        f"{rng.randint(100000, 999999)}-{rng.randint(0, 9)}"
    ),
    "coordinates": lambda rng: f"{rng.uniform(-90, 90):.6f}, {rng.uniform(-180, 180):.6f}",
    "uuid_hex": lambda rng: uuid.UUID(int=rng.getrandbits(128), version=4).hex.upper(),
}


# -- cells ---------------------------------------------------------------------------------

_WORDS = [
    "the", "customer", "asked", "about", "delivery", "status", "and", "refund", "policy",
    "while", "agent", "noted", "a", "follow", "up", "for", "next", "week", "please", "confirm",
    "shipping", "address", "account", "notes", "escalated",
]  # fmt: skip
_SENTENCES = (
    "Customer {} called about the late delivery.",
    "Please contact {} regarding the renewal.",
    "Updated profile: {}.",
    "Refund issued; reference {} noted by agent.",
    "Escalation from {} (see ticket).",
    "Value on file: {}",
    "{} was added to the account notes.",
)
_CLEAN = (
    "Alice Johnson",
    "pending",
    "shipped",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit",
    "The quick brown fox jumps over the lazy dog",
    "refund requested by customer",
    "ACTIVE",
    "Berlin",
    "premium tier",
    "Thank you for your order. We will notify you when it ships.",
)


class _Builder:
    """Concatenates pieces and records where planted values land."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.spans: list[tuple[int, int, str]] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def plant(self, planted: Planted, *, json_string: bool = False) -> None:
        if json_string:
            encoded = json.dumps(planted.text, ensure_ascii=False)[1:-1]
            before = json.dumps(planted.text[: planted.inner[0]], ensure_ascii=False)[1:-1]
            inner = json.dumps(
                planted.text[planted.inner[0] : planted.inner[1]], ensure_ascii=False
            )
            start = self.length + len(before)
            self.spans.append((start, start + len(inner) - 2, planted.type))
            self.add(encoded)
            return
        start = self.length + planted.inner[0]
        self.spans.append((start, self.length + planted.inner[1], planted.type))
        self.add(planted.text)

    def cell(self, shape: str) -> LabelledCell:
        return LabelledCell("".join(self.parts), tuple(self.spans), shape)


def _values(rng: random.Random, count: int) -> list[Planted]:
    return [GENERATORS[rng.choice(TYPES)](rng) for _ in range(count)]


def _negative(rng: random.Random) -> str:
    return NEGATIVES[rng.choice(sorted(NEGATIVES))](rng)


def free_text_cell(rng: random.Random) -> LabelledCell:
    builder = _Builder()
    items: list[Planted | str] = [*_values(rng, rng.randint(1, 3))]
    items += [_negative(rng) for _ in range(rng.randint(0, 2))]
    rng.shuffle(items)
    for index, item in enumerate(items):
        if index:
            builder.add(" ")
        head, _, tail = rng.choice(_SENTENCES).partition("{}")
        builder.add(head)
        if isinstance(item, Planted):
            builder.plant(item)
        else:
            builder.add(item)
        builder.add(tail)
    return builder.cell("free_text")


_ESCAPED_PREFIXES = ("\n", "\t", "line one\n", '"', "note:\r\n", "\u00e9\n", "tab\t")


def _after_escape(rng: random.Random, value: Planted) -> Planted:
    """The value after text that JSON writes with an escape (``\\n``, ``\\t``, ``\\"``):
    ``"x\\n4111…"`` must not read as a word glued to the number."""
    prefix = rng.choice(_ESCAPED_PREFIXES)
    inner = (value.inner[0] + len(prefix), value.inner[1] + len(prefix))
    return Planted(value.type, prefix + value.text, inner)


def json_cell(rng: random.Random) -> LabelledCell:
    builder = _Builder()
    builder.add("{")
    fields: list[tuple[str, Planted | str]] = [("id", str(rng.randint(1, 10**6)))]
    fields += [
        (f"{value.type}_{index}", _after_escape(rng, value) if rng.random() < 0.3 else value)
        for index, value in enumerate(_values(rng, rng.randint(1, 3)))
    ]
    fields += [(f"ref_{index}", _negative(rng)) for index in range(rng.randint(0, 2))]
    fields.append(("note", " ".join(rng.sample(_WORDS, 5))))
    for index, (name, value) in enumerate(fields):
        if index:
            builder.add(", ")
        builder.add(f'"{name}": "')
        if isinstance(value, Planted):
            builder.plant(value, json_string=True)
        else:
            builder.add(json.dumps(value)[1:-1])
        builder.add('"')
    builder.add("}")
    return builder.cell("json")


def csv_cell(rng: random.Random) -> LabelledCell:
    builder = _Builder()
    columns: list[Planted | str] = [str(rng.randint(1, 10**6)), rng.choice(_FIRST).title()]
    columns += [*_values(rng, rng.randint(1, 3)), _negative(rng)]
    for index, value in enumerate(columns):
        if index:
            builder.add(",")
        if isinstance(value, Planted):
            builder.plant(value)
        else:
            builder.add(value)
    return builder.cell("csv")


def negative_cell(rng: random.Random) -> LabelledCell:
    pieces = [_negative(rng) for _ in range(rng.randint(1, 3))]
    return LabelledCell(rng.choice((" ", ", ", " | ", "; ")).join(pieces), (), "negative")


def clean_cell(rng: random.Random) -> LabelledCell:
    return LabelledCell(rng.choice(_CLEAN), (), "clean")


SHAPES: dict[str, tuple[Callable[[random.Random], LabelledCell], float]] = {
    "free_text": (free_text_cell, 0.25),
    "json": (json_cell, 0.2),
    "csv": (csv_cell, 0.15),
    "negative": (negative_cell, 0.2),
    "clean": (clean_cell, 0.2),
}


def generate(count: int, seed: int = 5) -> list[LabelledCell]:
    """``count`` labelled cells, the same ones for the same seed."""
    rng = random.Random(seed)
    makers = [maker for maker, _ in SHAPES.values()]
    weights = [weight for _, weight in SHAPES.values()]
    return [rng.choices(makers, weights)[0](rng) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    for cell in generate(args.count, args.seed):
        print(
            json.dumps(
                {"shape": cell.shape, "text": cell.text, "spans": cell.spans}, ensure_ascii=False
            )
        )


if __name__ == "__main__":
    main()
