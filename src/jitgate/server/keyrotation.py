"""Master key rotation: re-encrypt every credential under a new key.

Run on the gateway host (it needs the key material). Steps, each safe to repeat after a
crash: (1) the keyring file gains the new key *first* (old keys kept, so both old and new
blobs open); (2) all credentials are re-sealed under the new key in one transaction;
(3) the old keys are dropped from the file. It refuses to run while ``jitgate serve``
runs on the same data dir (that process holds the old key and would seal new credentials
under it); nodes elsewhere that share the store and the key restart with the new one.
Values masked with the ``hash`` strategy are keyed from the master key: their tokens
change with it. With ``JITGATE_MASTER_KEY`` set, the new keyring is printed for the operator
to store instead of written to disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jitgate.config import ConfigError, Settings
from jitgate.connections.registry import ConnectionRegistry
from jitgate.connections.vault import (
    MasterKey,
    Vault,
    VaultError,
    format_keyring,
    parse_keyring,
    write_secret_file,
)
from jitgate.server import bootstrap


def _running_gateway(state: Path) -> int | None:
    """The pid of a ``jitgate serve`` still running on this data dir, if any."""
    try:
        pid = int(json.loads(state.read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a stale file of a run that was killed
    except PermissionError:
        return pid  # alive, another user's
    return pid


def rotate_master_key(settings: Settings, new_key_text: str | None = None) -> str:
    paths = bootstrap.prepare_data_dir(settings)
    pid = _running_gateway(paths.root / "serve.json")
    if pid is not None:
        # It would go on sealing credentials under the retired key: they could not be
        # opened after its restart.
        raise ConfigError(
            f"a gateway (pid {pid}) is running on {paths.root}: stop it, then rotate the key"
        )
    old_keys = bootstrap.load_keyring(settings, paths)
    try:
        new_key = parse_keyring(new_key_text)[0] if new_key_text else MasterKey.generate()
    except VaultError as exc:
        raise ConfigError(f"new master key: {exc}") from None
    if new_key.key_id in {k.key_id for k in old_keys}:
        raise ConfigError("new master key: it is already in the keyring")
    from_env = settings.master_key is not None
    if not from_env:
        write_secret_file(paths.master_key, format_keyring([new_key, *old_keys]))
    store = bootstrap.open_store(settings)
    try:
        registry = ConnectionRegistry(store, Vault(old_keys))
        with store.startup_lock():  # not while another node is starting on the same store
            count = registry.reseal_all(Vault([new_key, *old_keys]))
    finally:
        store.dispose()
    if from_env:
        return (
            f"re-encrypted {count} credential(s) under key {new_key.key_id}. "
            "Set JITGATE_MASTER_KEY to the new key before the next start:\n" + new_key.encode()
        )
    write_secret_file(paths.master_key, format_keyring([new_key]))
    return (
        f"re-encrypted {count} credential(s) under key {new_key.key_id}; "
        f"old key(s) {', '.join(k.key_id for k in old_keys)} retired from {paths.master_key}"
    )
