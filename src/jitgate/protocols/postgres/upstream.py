"""The gateway's own leg to the target PostgreSQL server.

It connects with the connection's stored credential — trust, cleartext, md5 or
SCRAM-SHA-256 (via ``scramp``) — over TLS as the connection's ``tls_mode`` says
(disable / prefer / require / verify-ca / verify-full), and forwards the client's start-up
parameters unchanged (except ``user`` and ``database``, which are the connection's).
The client's token never reaches the upstream; the upstream's password never reaches the
client. Errors are :class:`UpstreamError` with a message safe to show to the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from scramp import ScramClient, ScramException

from jitgate.connections.types import ConnectionInfo, Credential, TLSMode
from jitgate.protocols.postgres import messages as m
from jitgate.protocols.postgres.legs import Leg, LegClosed
from jitgate.protocols.postgres.messages import ProtocolViolation


class UpstreamError(Exception):
    def __init__(self, message: str, sqlstate: str = "08006") -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


@dataclass
class Upstream:
    leg: Leg
    pid: int
    secret: int
    parameters: list[tuple[str, str]] = field(default_factory=list)
    notices: list[bytes] = field(default_factory=list)
    status: int = m.IDLE
    tls: bool = False


def client_ssl_context(info: ConnectionInfo) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if info.tls_mode in (TLSMode.VERIFY_CA, TLSMode.VERIFY_FULL):
        if info.tls_ca:
            context = ssl.create_default_context(cadata=info.tls_ca)
        context.check_hostname = info.tls_mode is TLSMode.VERIFY_FULL
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def connect(
    info: ConnectionInfo,
    credential: Credential | None,
    client_params: Mapping[str, str],
    *,
    timeout: float,
    max_message: int,
) -> Upstream:
    try:
        return await asyncio.wait_for(
            _connect(info, credential, client_params, max_message), timeout
        )
    except TimeoutError:
        raise UpstreamError(f"timed out connecting to the upstream of {info.name!r}") from None
    except ssl.SSLError as exc:  # before OSError, of which it is a subclass
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = f"certificate verify failed: {exc.verify_message}"
        else:
            reason = exc.reason or str(exc)
        raise UpstreamError(f"TLS to the upstream of {info.name!r} failed: {reason}") from None
    except (OSError, LegClosed) as exc:
        raise UpstreamError(
            f"could not connect to the upstream of {info.name!r}: {_describe(exc)}"
        ) from None
    except ProtocolViolation as exc:
        raise UpstreamError(f"upstream of {info.name!r} broke the protocol: {exc}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


async def _connect(
    info: ConnectionInfo,
    credential: Credential | None,
    client_params: Mapping[str, str],
    max_message: int,
) -> Upstream:
    loop = asyncio.get_running_loop()
    _transport, leg = await loop.create_connection(
        lambda: Leg("upstream", max_message), info.host, info.port
    )
    try:
        tls = await _negotiate_tls(leg, info)
        params = {k: v for k, v in client_params.items() if k not in ("user", "database")}
        params = {
            "user": info.username or "postgres",
            "database": info.database or "postgres",
            **params,
        }
        leg.write(m.startup_message(params))
        await _authenticate(leg, info, credential)
        upstream = await _until_ready(leg)
        upstream.tls = tls
        return upstream
    except BaseException:
        leg.abort()
        raise


async def _negotiate_tls(leg: Leg, info: ConnectionInfo) -> bool:
    if info.tls_mode is TLSMode.DISABLE:
        return False
    leg.write(m.ssl_request())
    answer = await leg.read_exactly(1)
    if answer == b"S":
        hostname = info.tls_server_name or info.host
        await leg.start_tls(client_ssl_context(info), server_side=False, server_hostname=hostname)
        return True
    if answer == b"N":
        if info.tls_mode is TLSMode.PREFER:
            return False
        raise UpstreamError(
            f"the upstream of {info.name!r} does not support TLS (tls_mode {info.tls_mode})"
        )
    raise UpstreamError(f"upstream of {info.name!r} answered the SSL request with {answer!r}")


def _password(info: ConnectionInfo, credential: Credential | None, method: str) -> str:
    if credential is None:
        raise UpstreamError(
            f"the upstream of {info.name!r} asks for {method} authentication, "
            "but the connection has no stored password",
            "28P01",
        )
    return credential.secret


async def _authenticate(leg: Leg, info: ConnectionInfo, credential: Credential | None) -> None:
    scram: ScramClient | None = None
    scram_verified = False
    while True:
        mtype, payload = await leg.read_message()
        if mtype == m.ERROR_RESPONSE:
            fields = m.parse_error_fields(payload)
            raise UpstreamError(
                f"the upstream of {info.name!r} refused the gateway: {fields.get('M', '?')}",
                fields.get("C", "08006"),
            )
        if mtype == m.NEGOTIATE_PROTOCOL_VERSION:
            continue
        if mtype != m.AUTHENTICATION:
            raise ProtocolViolation(f"unexpected message {chr(mtype)!r} during authentication")
        (code,) = struct.unpack_from("!I", payload, 0)
        if code == m.AUTH_OK:
            if scram is not None and not scram_verified:
                # SCRAM authenticates the server too: an upstream that says "ok" without
                # proving it knows the password is not the server this connection names.
                raise UpstreamError(
                    f"the upstream of {info.name!r} ended SCRAM without proving its identity",
                    "28000",
                )
            return
        if code == m.AUTH_CLEARTEXT:
            leg.write(m.password_message(_password(info, credential, "password")))
        elif code == m.AUTH_MD5:
            secret = _password(info, credential, "md5")
            salt = payload[4:8]
            user = (info.username or "postgres").encode()
            inner = hashlib.md5(secret.encode() + user).hexdigest().encode()  # noqa: S324 - protocol
            leg.write(m.password_message("md5" + hashlib.md5(inner + salt).hexdigest()))  # noqa: S324
        elif code == m.AUTH_SASL:
            mechanisms = [x.decode() for x in payload[4:].split(b"\x00") if x]
            if "SCRAM-SHA-256" not in mechanisms:
                raise UpstreamError(f"unsupported SASL mechanisms {mechanisms}", "28000")
            secret = _password(info, credential, "SCRAM")
            scram = ScramClient(["SCRAM-SHA-256"], info.username or "postgres", secret)
            first = scram.get_client_first().encode()
            leg.write(m.sasl_initial_response("SCRAM-SHA-256", first))
        elif code == m.AUTH_SASL_CONTINUE and scram is not None:
            try:
                scram.set_server_first(payload[4:].decode())
            except ScramException as exc:
                raise UpstreamError(f"SCRAM exchange failed: {exc}", "28000") from None
            leg.write(m.sasl_response(scram.get_client_final().encode()))
        elif code == m.AUTH_SASL_FINAL and scram is not None:
            try:
                scram.set_server_final(payload[4:].decode())
            except ScramException:
                raise UpstreamError(
                    f"the upstream of {info.name!r} failed SCRAM server verification", "28000"
                ) from None
            scram_verified = True
        else:
            raise UpstreamError(f"unsupported upstream authentication method {code}", "28000")


async def _until_ready(leg: Leg) -> Upstream:
    parameters: list[tuple[str, str]] = []
    notices: list[bytes] = []
    pid = secret = 0
    while True:
        mtype, payload = await leg.read_message()
        if mtype == m.PARAMETER_STATUS:
            name, offset = m.read_cstring(payload, 0)
            value, _ = m.read_cstring(payload, offset)
            parameters.append((name, value))
        elif mtype == m.BACKEND_KEY_DATA:
            pid, secret = struct.unpack_from("!II", payload, 0)
        elif mtype == m.NOTICE_RESPONSE:
            notices.append(m.message(mtype, payload))
        elif mtype == m.READY_FOR_QUERY:
            return Upstream(
                leg, pid, secret, parameters, notices, payload[0] if payload else m.IDLE
            )
        elif mtype == m.ERROR_RESPONSE:
            fields = m.parse_error_fields(payload)
            raise UpstreamError(
                f"the upstream refused the session: {fields.get('M', '?')}",
                fields.get("C", "08006"),
            )
        else:
            raise ProtocolViolation(f"unexpected message {chr(mtype)!r} before ReadyForQuery")


async def send_cancel(host: str, port: int, pid: int, secret: int, timeout: float = 5.0) -> None:
    """Deliver a CancelRequest to the upstream on a fresh connection."""
    _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(m.cancel_request(pid, secret))
        await writer.drain()
    finally:
        writer.close()
