"""Mask profiles managed by API and CLI, and the per-session masking state.

Operator profiles are stored as JSON (the shape :func:`~jitgate.masking.rules.load_profile`
validates) and take precedence over the built-in ones of the same name. Every change is
audited. :class:`SessionMasking` is what a protocol session hands its relay: it picks the
profile for a statement — the policy decision's ``@mask`` profile, else the connection's
``mask_profile`` option — and keeps one :class:`Masker` per profile, so ``counts`` add up
per session. Deterministic tokens (the ``hash`` strategy) use a key derived from the
gateway's master key, so the same value gets the same token in every session.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from jitgate.audit.log import AuditLog
from jitgate.errors import InvalidInput, NotFound
from jitgate.identity.names import check_simple_name
from jitgate.identity.principal import Authenticated
from jitgate.masking.masker import Masker
from jitgate.masking.names import MASK_OPTION, REVISION, check_unused
from jitgate.masking.rules import BUILTIN_PROFILES, Profile, get_profile, load_profile
from jitgate.policy.types import Decision
from jitgate.store import revisions
from jitgate.store.db import Store
from jitgate.store.models import ConnectionRow, MaskProfileRow


def token_key(master_key_material: bytes) -> bytes:
    return hmac.new(master_key_material, b"jitgate mask tokens v1", hashlib.sha256).digest()


class MaskingService:
    def __init__(self, store: Store, key: bytes, *, reload_interval: float = 2.0) -> None:
        self.store = store
        self.key = key
        self.reload_interval = reload_interval
        self._profiles: dict[str, Profile] = {}
        self._profiles_version = -1
        self._version = 0
        self._checked = -reload_interval
        self._lock = threading.Lock()

    def version(self) -> int:
        """The masking revision (profiles and connections' default profiles), read from
        the store at most every ``reload_interval`` seconds: cheap enough per result."""
        if time.monotonic() - self._checked < self.reload_interval:
            return self._version
        with self._lock, self.store.session() as session:
            self._version = revisions.current(session, REVISION)
            self._checked = time.monotonic()
        return self._version

    def invalidate(self) -> None:
        """Read the revision again at the next :meth:`version` (after a change here)."""
        self._checked = -self.reload_interval

    def profiles(self) -> dict[str, Profile]:
        version = self.version()
        if version == self._profiles_version:
            return self._profiles
        with self._lock, self.store.session() as session:
            loaded = {}
            for row in session.scalars(select(MaskProfileRow)):
                try:
                    loaded[row.name] = load_profile({**row.definition, "name": row.name})
                except InvalidInput:
                    continue  # validated when stored; skip anything that no longer loads
            self._profiles = loaded
            self._profiles_version = version
        return self._profiles

    def default_profile(self, connection: str) -> str | None:
        """The connection's ``mask_profile`` option as stored now (None: none, or gone)."""
        with self.store.session() as session:
            options = session.scalar(
                select(ConnectionRow.options).where(ConnectionRow.name == connection)
            )
        profile = (options or {}).get(MASK_OPTION)
        return str(profile) if profile else None

    def profile(self, name: str) -> Profile:
        return get_profile(name, self.profiles())

    def list(self) -> list[dict[str, Any]]:
        stored = self.profiles()
        names = sorted({*BUILTIN_PROFILES, *stored})
        return [
            {
                "name": n,
                "builtin": n not in stored,
                "definition": (stored.get(n) or BUILTIN_PROFILES[n]).model_dump(mode="json"),
            }
            for n in names
        ]

    def put(
        self, name: str, definition: Mapping[str, Any], *, caller: Authenticated | None = None
    ) -> Profile:
        check_simple_name(name, "mask profile name")
        profile = load_profile({**definition, "name": name})
        Masker(profile, key=self.key)  # also checks what only a masker checks (marker…)
        with self.store.session() as session:
            row = session.get(MaskProfileRow, name)
            data = profile.model_dump(mode="json")
            if row is None:
                session.add(
                    MaskProfileRow(
                        name=name,
                        definition=data,
                        updated_by=caller.principal.name if caller else None,
                    )
                )
            else:
                row.definition = data
                row.updated_by = caller.principal.name if caller else None
            revisions.bump(session, REVISION)
            AuditLog.record(
                session,
                "mask_profile:put",
                caller=caller,
                target_type="mask_profile",
                target_name=name,
            )
        self.invalidate()
        return profile

    def delete(self, name: str, *, caller: Authenticated | None = None) -> None:
        with self.store.session() as session:
            row = session.get(MaskProfileRow, name)
            if row is None:
                raise NotFound(f"no stored mask profile named {name[:128]!r}")
            if name not in BUILTIN_PROFILES:  # else the built-in one takes its place
                check_unused(session, name)
            session.delete(row)
            revisions.bump(session, REVISION)
            AuditLog.record(
                session,
                "mask_profile:delete",
                caller=caller,
                target_type="mask_profile",
                target_name=name,
            )
        self.invalidate()

    def masker(self, name: str) -> Masker:
        return Masker(self.profile(name), key=self.key)

    def session(self, default_profile: str | None, connection: str | None = None) -> SessionMasking:
        return SessionMasking(self, default_profile, connection)


class SessionMasking:
    """A session's masking: the profile for each statement and one masker per profile.

    Before each result the relay asks for a masker; when the masking revision moved (a
    profile was changed, or the connection's default profile), the maskers are built
    again from the profiles as they are now and the default profile is read again, so
    an open session follows the change from its next result. Counts carry over."""

    def __init__(
        self,
        service: MaskingService,
        default_profile: str | None,
        connection: str | None = None,
    ) -> None:
        self.service = service
        self.default_profile = default_profile or None
        self.connection = connection
        self._maskers: dict[str, Masker | None] = {}
        self._retired: Counter[str] = Counter()
        self._version = service.version()

    def _refresh(self) -> None:
        version = self.service.version()
        if version == self._version:
            return
        self._version = version
        for masker in self._maskers.values():
            if masker is not None:
                self._retired.update(masker.counts)
        self._maskers.clear()
        if self.connection is not None:
            self.default_profile = self.service.default_profile(self.connection)

    def profile_for(self, decision: Decision) -> str | None:
        self._refresh()
        return decision.mask_profile or self.default_profile

    def masker(self, profile: str | None) -> Masker | None:
        if not profile or profile == "none":
            return None  # whatever the revision: no profile masks nothing
        self._refresh()
        if profile not in self._maskers:
            try:
                self._maskers[profile] = self.service.masker(profile)
            except InvalidInput:
                # An unknown profile must not mean "no masking": mask everything we know.
                self._maskers[profile] = self.service.masker("strict")
        return self._maskers[profile]

    @property
    def counts(self) -> dict[str, int]:
        total: Counter[str] = Counter(self._retired)
        for masker in self._maskers.values():
            if masker is not None:
                total.update(masker.counts)
        return dict(total)
