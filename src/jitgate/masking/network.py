"""IP address detectors: IPv4 (optional CIDR) and IPv6, validated by ``ipaddress``.

Both report the type ``ip``. Dotted numbers that are versions (``1.2.3.4.5``,
``v1.2.3.4``, ``version 1.2.3.4``) are not addresses.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from jitgate.masking.detectors import DIGITS, Detector, Trigger, compile_trigger
from jitgate.masking.findings import Claims, Finding

_VERSION_CONTEXT = re.compile(
    r"(?i)(?:\bv|\bver|\bversion|\brelease|\bbuild|\brev|\bfirmware|\bfw|\bsdk|\bagent)"
    r"\s*[:=#]?\s*$"
)


class Ipv4Detector(Detector):
    """IPv4 addresses (optional CIDR suffix), not part of a longer dotted number or a version."""

    type = "ip"
    min_digits = 4
    needles = (".",)
    triggers = (Trigger(DIGITS, r"[0-9]{0,2}(?:\.[0-9]{1,3}){3}", (r"\w", r"\.")),)
    trigger = compile_trigger(triggers)
    _pattern = re.compile(
        r"[0-9](?<![\w.][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?:/[0-9]{1,2})?(?![\w]|\.[0-9])"
    )

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        if text.count(".") < 3:
            return
        for match in self._pattern.finditer(text):
            start, end = match.span()
            if _VERSION_CONTEXT.search(text, max(0, start - 16), start):
                continue
            address, _, prefix = match.group().partition("/")
            if prefix and int(prefix) > 32:
                continue
            try:
                ipaddress.IPv4Address(address)  # octets 0-255, no leading zeros
            except ValueError:
                continue
            yield Finding(self.type, start, end, match.group(), "IPv4 address")


class Ipv6Detector(Detector):
    """IPv6 addresses (zone id and prefix length allowed), validated by ``ipaddress``."""

    type = "ip"
    min_digits = 1
    needles = (":",)
    _pattern = re.compile(
        r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4})?"
        r"(?:%[0-9A-Za-z_-]{1,16}(?:\.[0-9A-Za-z_-]{1,16})?)?(?:/[0-9]{1,3})?(?![\w:]|\.[0-9A-Za-z])"
    )

    _hint = re.compile(r":[0-9A-Fa-f]{0,4}:")
    triggers = (Trigger(":", "[0-9A-Fa-f]{0,4}:"),)  # _hint: find() looks no further without it
    trigger = compile_trigger(triggers)

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        hint = self._hint.search(text)
        if hint is None:
            return
        for match in self._pattern.finditer(text, max(0, hint.start() - 40)):
            candidate = match.group()
            address = candidate.partition("/")[0]
            if "::" not in address and address.count(":") != 7 and "." not in address:
                continue
            if not any(char.isdigit() for char in address.partition("%")[0]):
                continue
            try:
                ipaddress.IPv6Address(address)
            except ValueError:
                continue
            start, end = match.span()
            yield Finding(self.type, start, end, candidate, "IPv6 address")
