"""Every public key gateway nodes have signed with, kept in the store (table
``signing_keys``) so that a recording sealed by one node's key — or by a key since
replaced — still verifies on every node and offline.

Each node publishes its signing key when it starts (:func:`publish`, before it records
anything). Keys are never removed: the seals they made stay checkable for as long as the
recordings are kept. ``GET /api/v1/keys`` lists them all, the node's current key first
(:func:`jwks`), and verification picks the key by the seal's ``kid`` (:func:`known`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from jitgate.errors import Unavailable
from jitgate.store.db import Store
from jitgate.store.models import SigningKeyRow

if TYPE_CHECKING:
    from jitgate.identity.signing import SigningKey

log = logging.getLogger("jitgate.recording")


def publish(store: Store, key: SigningKey, *, node_id: str | None = None) -> None:
    """Keep ``key``'s public half in the store (once; its first use is its creation time)."""
    with store.session() as db:
        if db.get(SigningKeyRow, key.key_id) is not None:
            return
    try:
        with store.session() as db:
            db.add(SigningKeyRow(kid=key.key_id, jwk=key.public_jwk(), node_id=node_id))
    except IntegrityError:  # another node published the same key at the same moment
        pass


def _stored(store: Store) -> list[SigningKeyRow]:
    with store.session() as db:
        return list(db.scalars(select(SigningKeyRow).order_by(SigningKeyRow.created_at.desc())))


def jwks(store: Store, current: SigningKey) -> list[dict[str, Any]]:
    """The public keys as JWKs: ``current`` first, then the others, newest first. Each
    stored key carries ``created_at`` (when a node first published it). If the store
    cannot be read, the current key alone."""
    keys = [current.public_jwk()]
    try:
        rows = _stored(store)
    except Unavailable:
        log.warning("the store is unavailable: publishing the current signing key only")
        return keys
    for row in rows:
        if row.kid == current.key_id:
            keys[0] = {**keys[0], "created_at": row.created_at.isoformat()}
        else:
            keys.append({**row.jwk, "kid": row.kid, "created_at": row.created_at.isoformat()})
    return keys


def known(store: Store, current: SigningKey | None) -> dict[str, dict[str, Any]]:
    """Key id → public JWK, for :func:`jitgate.recording.seal.verify_recording`."""
    keys = {row.kid: {**row.jwk, "kid": row.kid} for row in _stored(store)}
    if current is not None:
        keys[current.key_id] = current.public_jwk()
    return keys
