"""The gateway's services wired together; what the API and the listeners share."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from jitgate.access.events import AccessEvents
from jitgate.access.notify import Notifier
from jitgate.access.service import AccessService
from jitgate.config import Settings
from jitgate.connections.registry import ConnectionRegistry
from jitgate.connections.vault import Vault
from jitgate.identity.authenticator import Authenticator
from jitgate.identity.delegation import DelegationService
from jitgate.identity.service import IdentityService
from jitgate.identity.signing import SigningKey
from jitgate.masking.service import MaskingService
from jitgate.policy.service import PolicyService
from jitgate.recording.recorder import Recorder
from jitgate.recording.storage import RecordingStorage
from jitgate.server import bootstrap
from jitgate.store.db import Store

log = logging.getLogger("jitgate")


@dataclass
class Gateway:
    settings: Settings
    paths: bootstrap.DataPaths
    store: Store
    vault: Vault
    signing_key: SigningKey
    identities: IdentityService
    delegations: DelegationService
    authenticator: Authenticator
    connections: ConnectionRegistry
    policies: PolicyService
    access: AccessService
    masking: MaskingService
    recorder: Recorder
    recording_storage: RecordingStorage
    tls_cert: Path
    tls_key: Path
    admin_token_file: str | None = None

    @classmethod
    def open(cls, settings: Settings) -> Gateway:
        paths = bootstrap.prepare_data_dir(settings)
        vault = Vault(bootstrap.load_keyring(settings, paths))
        signing_key = bootstrap.load_signing_key(paths)
        cert, key = bootstrap.tls_files(settings, paths)
        store = bootstrap.open_store(settings)
        try:
            return cls._assemble(settings, paths, store, vault, signing_key, cert, key)
        except BaseException:
            store.dispose()
            raise

    @classmethod
    def _assemble(
        cls,
        settings: Settings,
        paths: bootstrap.DataPaths,
        store: Store,
        vault: Vault,
        signing_key: SigningKey,
        cert: Path,
        key: Path,
    ) -> Gateway:
        identities = IdentityService(store, settings.roles, settings.tokens)
        delegations = DelegationService(identities, signing_key)
        oidc = None
        if settings.oidc is not None:
            from jitgate.identity.oidc import OIDCValidator

            oidc = OIDCValidator(settings.oidc)
        authenticator = Authenticator(
            identities, delegations, oidc, cache_seconds=settings.tokens.cache_seconds
        )
        connections = ConnectionRegistry(store, vault)
        policies = PolicyService(store, risk=settings.risk)
        notifier = Notifier(settings.notifications, public_url=settings.api.public_url)
        notifier.start()
        access = AccessService(
            store, connections, events=AccessEvents(), notifier=notifier, risk=settings.risk
        )
        gateway = cls(
            settings=settings,
            paths=paths,
            store=store,
            vault=vault,
            signing_key=signing_key,
            identities=identities,
            delegations=delegations,
            authenticator=authenticator,
            connections=connections,
            policies=policies,
            access=access,
            masking=MaskingService(store, vault.derive(b"mask tokens")),
            recorder=Recorder(
                store, paths.recordings, signing_key=signing_key, settings=settings.recording
            ),
            recording_storage=RecordingStorage.from_settings(
                paths.recordings, store, settings.recording
            ),
            tls_cert=cert,
            tls_key=key,
        )
        with store.startup_lock():  # gateways starting together: one default pack, one admin
            policies.ensure_default_pack()
            gateway.admin_token_file = bootstrap.ensure_admin(settings, paths, identities)
        return gateway

    def close(self) -> None:
        self.recorder.stop()
        notifier = self.access.notifier
        if isinstance(notifier, Notifier):
            notifier.stop()
        self.store.dispose()
