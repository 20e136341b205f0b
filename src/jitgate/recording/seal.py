"""Sealing a recording at close, and checking a recording: chain, seal, signature.

The last event of a closed recording is a ``seal``: a normal chained event that also
carries an Ed25519 signature, by the gateway's signing key, over

    b"jitgate-recording-seal:v1\\n" + canonical JSON of
        {"digest": H(n), "events": n, "last_seq": n, "session": <id>}

where ``H(n)`` is the hash of the event before the seal (the final chain digest). A
recording a crashed gateway left open is sealed when it is recovered
(:mod:`jitgate.recording.recovery`): its seal says ``"kind": "recovery"``, and the signed
JSON has ``"kind": "recovery"`` too, so a recovery seal cannot pass for a normal close.
The same digest, the signature and the key id are stored on the session row, so removing the
seal line (or the seal and any tail of events) is noticed even though what is left of
the file is a valid chain. The public key is published as a JWK at ``/api/v1/keys``
(``kid`` = its RFC 7638 thumbprint); :func:`verify_recording` takes that JWK, so anyone
holding the file, the session id and the key can check a recording offline.

What :func:`verify_recording` reports as ``state``:

* ``normal`` — sealed by the gateway when the session closed;
* ``recovered`` — sealed by the gateway that recovered it after a crash (every event
  written before the crash is covered; the session's last moments may be missing);
* ``interrupted`` — closed by recovery but not sealed (its file was on another node, or
  no signing key): the chain is intact, but a cut-off end cannot be told from the end;
* ``open`` — the session is still running (no seal yet; an incomplete last line, being
  written, is not counted);
* ``tampered`` — the chain, the seal or its signature does not check out
  (``first_bad_event`` names where).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from jitgate.recording.log import chain_hash, genesis

if TYPE_CHECKING:
    from jitgate.identity.signing import SigningKey

SEAL_TYPE = "seal"
SEAL_CONTEXT = b"jitgate-recording-seal:v1\n"


#: The seal written when a session closes, and the one written when recovery closes it.
CLOSE, RECOVERY = "close", "recovery"


def seal_message(
    session_id: str, last_seq: int, events: int, digest: str, kind: str = CLOSE
) -> bytes:
    body: dict[str, Any] = {
        "digest": digest, "events": events, "last_seq": last_seq, "session": session_id
    }  # fmt: skip
    if kind != CLOSE:
        body["kind"] = kind
    return SEAL_CONTEXT + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def make_seal(
    key: SigningKey, session_id: str, last_seq: int, digest: str, kind: str = CLOSE
) -> dict[str, Any]:
    """The data of a ``seal`` event over the chain up to ``last_seq`` (whose hash is
    ``digest``), signed with ``key``."""
    signature = key.sign_bytes(seal_message(session_id, last_seq, last_seq, digest, kind))
    seal: dict[str, Any] = {
        "session": session_id,
        "last_seq": last_seq,
        "events": last_seq,
        "digest": digest,
        "alg": "Ed25519",
        "kid": key.key_id,
        "signature": b64url(signature),
    }
    if kind != CLOSE:
        seal["kind"] = kind
    return seal


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key_from_jwk(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "x" not in jwk:
        raise ValueError("not an Ed25519 public key (JWK kty=OKP, crv=Ed25519)")
    return Ed25519PublicKey.from_public_bytes(_unb64url(str(jwk["x"])))


@dataclass(frozen=True, slots=True)
class StoredSeal:
    """What the session row remembers of the seal (None when the session has none)."""

    digest: str | None
    signature: str | None
    key_id: str | None
    event_count: int | None


@dataclass(frozen=True, slots=True)
class Verification:
    session: str
    valid: bool  # no sign of alteration: the chain holds, and so does the seal if any
    chain_valid: bool
    signature: str  # valid, invalid, missing, unknown-key, pending (session still open)
    first_bad_event: int | None = None
    problem: str | None = None
    events: int = 0
    key_id: str | None = None
    state: str = "tampered"  # normal, recovered, interrupted, open, tampered (see above)

    def as_dict(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "state": self.state,
            "valid": self.valid,
            "chain_valid": self.chain_valid,
            "signature": self.signature,
            "first_bad_event": self.first_bad_event,
            "problem": self.problem,
            "events": self.events,
            "key_id": self.key_id,
        }


def verify_recording(
    source: Path | Iterable[bytes],
    session_id: str,
    keys: Mapping[str, Mapping[str, Any]],
    *,
    stored: StoredSeal | None = None,
    open_session: bool = False,
) -> Verification:
    """Check the hash chain, then the seal and its signature; name the first bad event.

    ``source`` is the recording's file or its lines. ``keys`` maps key ids to public
    JWKs. ``stored`` is the session row's copy of the seal; ``open_session`` says the
    session has not closed yet (no seal expected; its last line may be half written).
    """

    def bad(line: int | None, why: str, *, chain: bool, signature: str, n: int) -> Verification:
        return Verification(session_id, False, chain, signature, line, why, n)

    prev = genesis(session_id)
    seal: dict[str, Any] | None = None
    seal_prev = ""
    number = 0
    with contextlib.ExitStack() as stack:
        lines = stack.enter_context(source.open("rb")) if isinstance(source, Path) else source
        for number, line in enumerate(lines, start=1):
            try:
                event = orjson.loads(line)
            except ValueError:
                if open_session and not line.endswith(b"\n"):
                    number -= 1  # the writer's next line, not complete yet
                    break
                return bad(number, "line is not valid JSON", chain=False, signature="unknown", n=0)
            if not isinstance(event, dict):
                return bad(number, "line is not an event", chain=False, signature="unknown", n=0)
            if event.get("prev") != prev or event.get("seq") != number:
                return bad(
                    number,
                    "event does not follow the previous one (removed, inserted or reordered)",
                    chain=False,
                    signature="unknown",
                    n=number - 1,
                )
            if chain_hash(prev, event) != event.get("hash"):
                return bad(
                    number,
                    "event content does not match its hash",
                    chain=False,
                    signature="unknown",
                    n=number - 1,
                )
            if seal is not None:
                return bad(
                    number, "event after the seal", chain=True, signature="invalid", n=number
                )
            if event.get("type") == SEAL_TYPE:
                seal, seal_prev = event, prev
            prev = event["hash"]
    total = number
    if seal is None:
        if stored is not None and stored.signature:
            return bad(
                total + 1,  # the first event that is gone
                "the seal (signature event) is missing: the recording was truncated",
                chain=True,
                signature="missing",
                n=total,
            )
        if open_session:
            return Verification(session_id, True, True, "pending", None, None, total, state="open")
        if stored is not None and stored.event_count and total < stored.event_count:
            return bad(
                total + 1,
                f"the recording ends at event {total}, but {stored.event_count} were "
                "counted when it was closed: events were removed",
                chain=True,
                signature="missing",
                n=total,
            )
        return Verification(
            session_id,
            True,
            True,
            "missing",
            None,
            "the recording is not sealed (the gateway stopped before the session closed "
            "and it was not sealed at recovery): the chain is intact, its end is not proven",
            total,
            state="interrupted",
        )
    seal_line = total
    key_id = str(seal.get("kid", ""))
    kind = str(seal.get("kind", CLOSE))
    claimed = (seal.get("session"), seal.get("last_seq"), seal.get("events"), seal.get("digest"))
    if claimed != (session_id, seal_line - 1, seal_line - 1, seal_prev) or kind not in (
        CLOSE,
        RECOVERY,
    ):
        return bad(
            seal_line,
            "the seal does not describe this recording",
            chain=True,
            signature="invalid",
            n=total,
        )
    if stored is not None and stored.digest and stored.digest != seal_prev:
        return bad(
            seal_line,
            "the seal differs from the one stored with the session",
            chain=True,
            signature="invalid",
            n=total,
        )
    jwk = keys.get(key_id)
    if jwk is None:
        return Verification(
            session_id, False, True, "unknown-key", seal_line, f"unknown key {key_id!r}", total
        )
    message = seal_message(session_id, seal_line - 1, seal_line - 1, seal_prev, kind)
    try:
        public_key_from_jwk(jwk).verify(_unb64url(str(seal.get("signature", ""))), message)
    except (InvalidSignature, ValueError):
        return bad(
            seal_line, "the seal's signature is not valid", chain=True, signature="invalid", n=total
        )
    state = "recovered" if kind == RECOVERY else "normal"
    return Verification(session_id, True, True, "valid", None, None, total, key_id, state)
