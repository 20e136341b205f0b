"""Gateway configuration: a YAML/TOML file, then ``JITGATE_*`` environment variables.

Precedence (lowest first): built-in defaults, the config file, environment variables,
command-line options. Every section is a strict pydantic model: an unknown key or a value
of the wrong type stops start-up with a :class:`ConfigError` that names the key.

Environment variables:

* ``JITGATE_CONFIG`` — path of the config file (``.yaml``, ``.yml`` or ``.toml``).
* ``JITGATE_DATA_DIR``, ``JITGATE_DATABASE_URL``, ``JITGATE_MASTER_KEY`` — the
  top-level keys of the same names.
* ``JITGATE_<SECTION>__<KEY>`` — any other key, ``__`` separating nesting levels, e.g.
  ``JITGATE_API__PORT=9000`` or ``JITGATE_LISTENERS__POSTGRES__PORT=5433``. Values are
  parsed as YAML scalars/lists (``true``, ``12``, ``[a, b]``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from jitgate.access.notify import NotificationSettings
from jitgate.policy.risk import RiskSettings

ENV_PREFIX = "JITGATE_"
DEFAULT_DATA_DIR = "./jitgate-data"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class APISettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8009, ge=0, le=65535)
    # Serve the API over HTTPS with the gateway's certificate (``tls.cert_file`` and
    # ``tls.key_file``, or the one generated in the data dir). Clients verify it with
    # ``JITGATE_CA_FILE``. Cleartext on an address other than loopback logs a warning.
    tls: bool = False
    public_url: str | None = None
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    page_size_max: int = Field(default=500, ge=1)


class TLSSettings(_Section):
    """Certificate presented by the protocol listeners and, with ``api.tls``, the API
    (generated when not configured)."""

    cert_file: Path | None = None
    key_file: Path | None = None


class ListenerSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)


class PostgresListenerSettings(ListenerSettings):
    port: int = Field(default=15432, ge=0, le=65535)
    # The token travels in a PasswordMessage: only inside TLS, unless this is set (then
    # also in clear from loopback clients, for local tools and benchmarks).
    allow_cleartext_loopback: bool = False
    require_tls: bool = False
    max_message_bytes: int = Field(default=64 << 20, ge=1024)
    connect_timeout: float = Field(default=10.0, gt=0)
    handshake_timeout: float = Field(default=30.0, gt=0)


class SSHListenerSettings(ListenerSettings):
    """The SSH listener: native ssh/scp/sftp through the gateway."""

    port: int = Field(default=12222, ge=0, le=65535)
    connect_timeout: float = Field(default=10.0, gt=0)
    login_timeout: float = Field(default=30.0, gt=0)
    idle_timeout: float = Field(default=0, ge=0)  # seconds without traffic; 0 = no limit
    max_sessions_per_connection: int = Field(default=10, ge=1)
    record_input: bool = False  # keystrokes into the recording (may contain secrets)
    uncertain_lines: Literal["allow", "deny"] = "allow"  # shell lines not fully reconstructed
    max_sftp_packet: int = Field(default=1 << 20, ge=34000)
    # Ciphers offered to clients; the client's preference decides among them. AES (GCM,
    # CTR) runs on AES-NI; chacha20-poly1305, which OpenSSH would otherwise pick, costs
    # the gateway about a third of its transfer throughput, so it is not offered by default.
    ciphers: list[str] = Field(
        default_factory=lambda: [
            "aes128-gcm@openssh.com",
            "aes256-gcm@openssh.com",
            "aes128-ctr",
            "aes192-ctr",
            "aes256-ctr",
        ],
        min_length=1,
    )


class _PlannedListenerSettings(ListenerSettings):
    """A listener whose port is reserved but that this version does not have yet:
    turning it on must not look as if it worked."""

    enabled: bool = False

    @field_validator("enabled")
    @classmethod
    def _not_yet(cls, value: bool) -> bool:
        if value:
            raise ValueError("this version of jitgate has no such listener yet")
        return value


class MySQLListenerSettings(_PlannedListenerSettings):
    port: int = Field(default=13306, ge=0, le=65535)


class HTTPListenerSettings(_PlannedListenerSettings):
    port: int = Field(default=18888, ge=0, le=65535)


class ListenersSettings(_Section):
    postgres: PostgresListenerSettings = PostgresListenerSettings()
    mysql: MySQLListenerSettings = MySQLListenerSettings()
    ssh: SSHListenerSettings = SSHListenerSettings()
    http: HTTPListenerSettings = HTTPListenerSettings()


class OIDCSettings(_Section):
    """An external OpenID Connect issuer whose JWTs the gateway accepts."""

    issuer: str
    audiences: list[str] = Field(min_length=1)
    client_id: str | None = None
    scopes: list[str] = ["openid", "profile", "email", "offline_access"]
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    algorithms: list[str] = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
    leeway_seconds: int = Field(default=30, ge=0, le=600)
    jwks_cache_seconds: int = Field(default=3600, ge=1)
    jwks_refresh_min_interval: float = Field(default=10.0, ge=0)
    http_timeout: float = Field(default=5.0, gt=0)
    ca_file: Path | None = None

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a.lower() == "none" or a.upper().startswith("HS")]
        if bad:
            raise ValueError(f"algorithm(s) {bad} are not allowed: only asymmetric signatures")
        if not value:
            raise ValueError("at least one algorithm is required")
        return value


class RolesSettings(_Section):
    """Which groups confer which role. ``admin`` implies every other role."""

    admin: list[str] = ["admins"]
    approver: list[str] = ["approvers"]
    auditor: list[str] = ["auditors"]


class TokenSettings(_Section):
    default_ttl_days: int = Field(default=90, ge=1)
    max_ttl_days: int = Field(default=365, ge=1)
    login_ttl_hours: int = Field(default=12, ge=1)
    delegation_max_ttl_seconds: int = Field(default=3600, ge=60)
    delegated_token_ttl_seconds: int = Field(default=900, ge=60)
    cache_seconds: float = Field(default=5.0, ge=0)


class ApprovalSettings(_Section):
    """How held statements wait for approvers."""

    hold_timeout_seconds: float = Field(default=300.0, gt=0, le=86400)
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    agents_wait: bool = False  # agents get the request id at once unless they ask to wait


class S3Settings(_Section):
    """S3-compatible object storage for closed recordings (``recording.storage: s3``).

    The local file stays the write-ahead log; once a session has closed, ``jitgate serve``
    uploads its recording as ``<prefix><YYYY/MM/DD>/<session>.jsonl`` with a multipart
    upload of ``part_size`` bytes a part (at least 5 MiB, the S3 minimum), remembering each
    finished part in the store so that an upload cut short goes on where it stopped. The
    object carries the file's SHA-256 in its metadata (``sha256``); once its size and
    digest are checked the local file is deleted, unless ``keep_local``. Without
    ``access_key_id``/``secret_access_key`` the standard AWS sources are used
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, profiles).
    ``endpoint_url`` points at an S3-compatible server other than AWS.
    """

    endpoint_url: str | None = None
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = "recordings/"
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    part_size: int = Field(default=8 << 20, ge=5 << 20, le=5 << 30)
    keep_local: bool = False
    upload_interval_seconds: float = Field(default=10.0, gt=0)
    timeout_seconds: float = Field(default=60.0, gt=0)


class RecordingSettings(_Section):
    """Session recordings (see :mod:`jitgate.recording`). Connections may override
    ``enabled``, ``on_failure``, ``retention_days`` and ``legal_hold`` in their options
    (``recording``, ``recording_on_failure``, ``recording_retention_days``, ``legal_hold``).

    ``storage`` is ``local`` (files in the data dir) or ``s3`` (closed recordings go to
    the object storage described by ``s3``; see :class:`S3Settings`).
    """

    enabled: bool = True
    sample_rows: int = Field(default=5, ge=0, le=1000)
    sample_bytes: int = Field(default=4096, ge=0, le=1 << 20)
    on_failure: Literal["closed", "open"] = "closed"
    # When a request's event must be on the disk before the request goes on: "close"
    # (handed to the kernel before, fsync at close: survives a gateway crash) or
    # "request" (fdatasync before each request: survives an OS crash too, costs a disk
    # flush per statement; see bench/recorder_cost.py).
    fsync: Literal["close", "request"] = "close"
    # Where events are encoded and written: "inline" (in the gateway's event loop) or
    # "process" (a writer process beside the gateway, for PostgreSQL sessions with fsync
    # "close": the gateway only hands each record over through a shared file; see
    # jitgate.recording.handoff). "process" takes the encoding off the gateway's core but
    # costs as much CPU again in the writer: it pays where the gateway's core is the limit
    # and other cores are idle; on a 2-core machine running the database too it lost more
    # TPS than inline (bench/recorder_cost.py --writer).
    writer: Literal["process", "inline"] = "inline"
    storage: Literal["local", "s3"] = "local"
    s3: S3Settings | None = None
    retention_days: int | None = Field(default=None, ge=1)
    housekeeping_interval_seconds: float = Field(default=3600.0, gt=0)
    # A gateway node not heard of for this long is taken to be gone: its open sessions
    # are closed as interrupted (see jitgate.recording.recovery).
    node_stale_seconds: float = Field(default=120.0, ge=30)
    export_to: str | None = None  # file:PATH, stdout, syslog://host:port, https://… (serve)
    export_secret: SecretStr | None = None  # HMAC key for webhook exports
    export_interval_seconds: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _s3_configured(self) -> RecordingSettings:
        if self.storage == "s3" and self.s3 is None:
            raise ValueError("recording.storage is 's3' but recording.s3 (its bucket) is not set")
        target = (self.export_to or "").lower()
        if target.startswith(("http://", "https://")) and not self.export_secret:
            raise ValueError(
                "recording.export_to is a webhook but recording.export_secret (the key that "
                "signs its requests) is not set"
            )
        return self


class Settings(_Section):
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    database_url: str | None = None
    master_key: SecretStr | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    admin_name: str = "admin"
    api: APISettings = APISettings()
    tls: TLSSettings = TLSSettings()
    listeners: ListenersSettings = ListenersSettings()
    oidc: OIDCSettings | None = None
    roles: RolesSettings = RolesSettings()
    tokens: TokenSettings = TokenSettings()
    risk: RiskSettings = RiskSettings()
    approvals: ApprovalSettings = ApprovalSettings()
    notifications: NotificationSettings = NotificationSettings()
    recording: RecordingSettings = RecordingSettings()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'jitgate.db').resolve()}"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from exc
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path}: not valid {path.suffix[1:]}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    return data


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in (ENV_PREFIX + "CONFIG",):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if path[0] in ("server", "token"):
            continue  # JITGATE_SERVER / JITGATE_TOKEN belong to the CLI client
        try:
            value: Any = yaml.safe_load(raw) if path[-1] not in _STRING_KEYS else raw
        except yaml.YAMLError:
            value = raw
        cursor = result
        for part in path[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[path[-1]] = value
    return result


_STRING_KEYS = {
    "master_key", "database_url", "data_dir", "issuer", "client_id", "public_url", "export_to",
    "export_secret", "bucket", "prefix", "access_key_id", "secret_access_key", "endpoint_url",
}  # fmt: skip


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{key}: {msg}")
    return f"invalid configuration ({source}): " + "; ".join(lines)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, file, environment and explicit overrides."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    sources = []
    file_name = config_file or env.get(ENV_PREFIX + "CONFIG")
    if file_name:
        data = _read_file(Path(file_name))
        sources.append(str(file_name))
    env_data = _env_overrides(env)
    if env_data:
        sources.append("environment")
    data = _merge(data, env_data)
    if overrides:
        data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, " + ".join(sources) or "defaults")) from None
