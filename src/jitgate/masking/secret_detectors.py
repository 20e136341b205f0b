"""Detectors for credentials that leak into data: cloud keys, private keys, tokens, passwords.

All report the detector type ``secret``. Their cheap gates are literal substrings that
every such value carries (``AKIA``, ``-----BEGIN``, ``eyJ``, ``Bearer``, ``=``/``:`` for
assignments, ``_``/``-`` for vendor-prefixed tokens), so plain prose skips them. Where
only the value is secret (``password=…``, ``Authorization: Bearer …``) only the value is
reported, so the masked text keeps its shape (``password=[REDACTED:secret]``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator

from jitgate.masking.detectors import Detector
from jitgate.masking.findings import Claims, Finding

SECRET = "secret"


class AwsKeyDetector(Detector):
    """AWS access key ids (``AKIA…``/``ASIA…``) and the secret keys written next to them.

    A 40-character secret access key is only taken near an access key id or after an
    ``aws_secret_access_key``-style name: alone, it is indistinguishable from other base64.
    """

    type = SECRET
    needles = ("AKIA", "ASIA", "ecret", "ECRET")
    _key_id = re.compile(r"A(?<![A-Za-z0-9]A)[KS]IA[A-Z0-9]{16}(?![A-Za-z0-9])")
    _named_secret = re.compile(
        r"(?i:aws_?secret(?:_?access)?_?key|secret_?access_?key)[\"']?\s*(?:=|:|=>)\s*[\"']?"
        r"(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
    )
    _base64_40 = re.compile(r"[A-Za-z0-9/+](?<![A-Za-z0-9/+=].)[A-Za-z0-9/+]{39}(?![A-Za-z0-9/+=])")
    _near = 256

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        key_ids = list(self._key_id.finditer(text))
        for match in key_ids:
            start, end = match.span()
            yield Finding(self.type, start, end, match.group(), "AWS access key id")
        if "ecret" in text or "ECRET" in text:
            for match in self._named_secret.finditer(text):
                start, end = match.span("value")
                yield Finding(self.type, start, end, match.group("value"), "AWS secret key")
        for key_id in key_ids:
            low = max(0, key_id.start() - self._near)
            high = min(len(text), key_id.end() + self._near)
            for match in self._base64_40.finditer(text, low, high):
                value = match.group()
                if _mixed(value):
                    start, end = match.span()
                    yield Finding(
                        self.type, start, end, value, "AWS secret key next to an access key id"
                    )


def _mixed(value: str) -> bool:
    """Upper case, lower case and a digit: random key material, not a hex hash or a word."""
    return (
        any(char.isupper() for char in value)
        and any(char.islower() for char in value)
        and any(char.isdigit() for char in value)
    )


class PrivateKeyDetector(Detector):
    """PEM/OpenSSH/PGP private key blocks, also with JSON-escaped newlines or truncated."""

    type = SECRET
    raw_too = True
    needles = ("-----BEGIN",)
    _pattern = re.compile(
        r"-----BEGIN (?P<label>[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?)-----"
        r"(?:.{0,65536}?-----END (?P=label)-----|[A-Za-z0-9+/=\s\\:,.-]{0,65536})",
        re.DOTALL,
    )

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        for match in self._pattern.finditer(text):
            start, end = match.span()
            why = f"{match.group('label')} block"
            yield Finding(self.type, start, end, match.group(), why)


class JwtDetector(Detector):
    """JSON Web Tokens: three base64url parts whose header decodes to JSON with ``alg``."""

    type = SECRET
    needles = ("eyJ",)
    _pattern = re.compile(
        r"(?P<header>eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{4,4096})\.[A-Za-z0-9_-]{2,65536}"
        r"\.[A-Za-z0-9_-]{0,8192}(?![A-Za-z0-9_-])"
    )

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        for match in self._pattern.finditer(text):
            algorithm = _jwt_algorithm(match.group("header"))
            if algorithm is not None:
                start, end = match.span()
                yield Finding(self.type, start, end, match.group(), f"JWT, alg {algorithm}")


def _jwt_algorithm(header: str) -> str | None:
    try:
        decoded = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        parsed = json.loads(decoded)
    except (binascii.Error, ValueError):
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("alg"), str):
        return str(parsed["alg"])
    return None


_TOKEN_CHARS = r"[A-Za-z0-9\-._~+/]{8,4096}=*(?![A-Za-z0-9\-._~+/=])"


class BearerTokenDetector(Detector):
    """Credentials after ``Authorization:`` (any scheme) or the word ``bearer``."""

    type = SECRET
    needles = ("earer", "EARER", "uthorization", "UTHORIZATION")
    _pattern = re.compile(
        r"(?i:\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:[a-z-]{2,20}\s+)?|\bbearer\s+)"
        rf"(?P<token>{_TOKEN_CHARS})"
    )

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        for match in self._pattern.finditer(text):
            token = match.group("token")
            if _credential_like(token):
                start, end = match.span("token")
                yield Finding(self.type, start, end, token, "bearer/authorization credential")


def _credential_like(token: str) -> bool:
    """Not a plain English word: has a digit, mixed case or token punctuation."""
    if any(char.isdigit() for char in token):
        return True
    if any(char in "-._~+/=" for char in token):
        return True
    return any(char.isupper() for char in token[1:]) and any(char.islower() for char in token)


_SECRET_NAMES = "|".join(
    sorted(
        (
            "password",
            "passwd",
            "passphrase",
            "pwd",
            "pass",
            "secret",
            "client_secret",
            "secret_key",
            "secret_access_key",
            "api_key",
            "apikey",
            "api_token",
            "access_token",
            "refresh_token",
            "auth_token",
            "session_token",
            "private_key",
            "token",
            "credentials",
            "credential",
        ),
        key=len,
        reverse=True,  # longest first: the regex takes the first alternative that fits
    )
)
_PLACEHOLDERS = frozenset({"", "null", "none", "nil", "true", "false", "undefined", "''"})


class AssignmentDetector(Detector):
    """Values assigned to secret-looking names: ``password=…``, ``"secret": "…"``, ``token: …``.

    Names are found case-insensitively on a lower-cased copy (case-insensitive regex
    alternations are slow); a name glued to a longer word (``passenger``, ``bypass``)
    does not count, but a prefixed one (``db_password``, ``MYSQL_ROOT_PASSWORD``) does.
    """

    type = SECRET
    raw_too = True
    needles = ("=", ":")
    # Every name, in any letter case, contains one of these: cheaper than lower-casing.
    _hints = (
        "ass", "ASS", "wd", "WD", "ecret", "ECRET", "oken", "OKEN", "key", "Key", "KEY",
        "redential", "REDENTIAL",
    )  # fmt: skip
    _name = re.compile(rf"(?:{_SECRET_NAMES.replace('_', '[_-]?')})(?![a-z0-9])")
    _value = re.compile(
        r"(?:\\?[\"'])?\s*(?::=|=>|=|:)\s*"
        r"(?:\\\"(?P<escaped>(?:[^\"\\]|\\[^\"]){1,512}?)\\\""
        r"|\"(?P<double>(?:[^\"\\\n]|\\.){1,512})\""
        r"|'(?P<single>[^'\n]{1,512})'"
        r"|(?P<bare>[^\s,;&\"'<>{}\[\]()\\]{1,512}))"
    )

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        if not any(hint in text for hint in self._hints):
            return
        lowered = text.lower()
        if len(lowered) != len(text):  # a few characters lower-case to two
            lowered = "".join(char.lower()[0] for char in text)
        for name in self._name.finditer(lowered):
            start = name.start()
            if start and lowered[start - 1].isalnum():
                continue
            match = self._value.match(text, name.end())
            if match is None:
                continue
            group = next(g for g in ("escaped", "double", "single", "bare") if match.group(g))
            value = match.group(group)
            value_start, value_end = match.span(group)
            if value.lower() in _PLACEHOLDERS or text.startswith(("${", "{{"), value_start):
                continue  # empty, null, or a template reference rather than a secret
            why = f"value of {text[start : name.end()]!r}"
            yield Finding(self.type, value_start, value_end, value, why)


_VENDOR_TOKENS: tuple[tuple[str, str, str], ...] = (
    # (literal every such token contains, pattern starting with that literal, vendor)
    ("gh", r"gh[pousr]_[A-Za-z0-9]{36,255}", "GitHub"),
    ("github_pat_", r"github_pat_[A-Za-z0-9_]{22,255}", "GitHub"),
    ("xox", r"xox[abposr]-[A-Za-z0-9-]{10,255}", "Slack"),
    (
        "hooks.slack.com",
        r"hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}",
        "Slack webhook",
    ),
    ("k_live_", r"[sr]k_live_[A-Za-z0-9]{16,255}", "Stripe"),
    ("k_test_", r"[sr]k_test_[A-Za-z0-9]{16,255}", "Stripe"),
    ("whsec_", r"whsec_[A-Za-z0-9]{24,255}", "Stripe webhook"),
    ("glpat-", r"glpat-[A-Za-z0-9_-]{20,255}", "GitLab"),
    ("npm_", r"npm_[A-Za-z0-9]{36}", "npm"),
    ("AIza", r"AIza[0-9A-Za-z_-]{35}", "Google API"),
    ("sk-", r"sk-(?:proj-|ant-(?:api03-)?)?[A-Za-z0-9_-]{32,255}", "OpenAI/Anthropic"),
)  # fmt: skip


class PrefixedTokenDetector(Detector):
    """Vendor tokens with a recognisable prefix: GitHub, GitLab, Slack, Stripe, npm, Google…

    Each vendor's regex runs only when its literal prefix occurs in the cell, and starts
    with that literal, so the regex engine jumps straight to it.
    """

    type = SECRET
    needles = ("_", "-", "AIza", "hooks.slack.com")
    _vendors = tuple(
        (literal, re.compile(pattern + r"(?![A-Za-z0-9_])"), vendor)
        for literal, pattern, vendor in _VENDOR_TOKENS
    )

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        for literal, pattern, vendor in self._vendors:
            if literal not in text:
                continue
            for match in pattern.finditer(text):
                start, end = match.span()
                if start and (text[start - 1].isalnum() or text[start - 1] == "_"):
                    continue
                yield Finding(self.type, start, end, match.group(), f"{vendor} token")


class UrlCredentialDetector(Detector):
    """The password in a URL's user-info: ``postgres://app:s3cret@db/…``."""

    type = SECRET
    needles = ("://",)
    _pattern = re.compile(r"://[^/\s:@\"']{1,128}:(?P<password>[^/\s@\"']{1,256})@")

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        for match in self._pattern.finditer(text):
            start, end = match.span("password")
            yield Finding(self.type, start, end, match.group("password"), "password in a URL")


def secret_detectors() -> tuple[Detector, ...]:
    """Every built-in ``secret`` detector, strongest (whole blocks) first."""
    return (
        PrivateKeyDetector(),
        JwtDetector(),
        AwsKeyDetector(),
        PrefixedTokenDetector(),
        BearerTokenDetector(),
        UrlCredentialDetector(),
        AssignmentDetector(),
    )
