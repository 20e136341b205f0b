"""One client session through the PostgreSQL gateway: handshake, upstream, relay.

Client side of the handshake::

    [SSLRequest → 'S' + TLS] [GSSENCRequest → 'N'] StartupMessage(user, database=<connection>)
    ← AuthenticationCleartextPassword      → PasswordMessage(<jitgate token>)
    (token verified, connection resolved, "connect" decided by policy, upstream opened)
    ← AuthenticationOk, ParameterStatus…, BackendKeyData(upstream pid, gateway secret),
      ReadyForQuery

Every refusal is a FATAL ErrorResponse with a SQLSTATE (28000, 28P01, 3D000, 08006…),
never a dropped socket. Then the legs switch to relay mode (:mod:`.relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import ssl
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from jitgate.access.hold import resolve_review
from jitgate.access.service import statement_key
from jitgate.access.session_grants import SessionGrants
from jitgate.connections.types import ConnectionInfo, ConnectionType, Credential
from jitgate.errors import JitgateError, NotFound, Unauthenticated, Unavailable
from jitgate.identity.principal import Authenticated
from jitgate.masking.service import SessionMasking
from jitgate.policy.gate import StatementGate
from jitgate.policy.types import Decision, Target
from jitgate.protocols.postgres import messages as m
from jitgate.protocols.postgres import upstream as up
from jitgate.protocols.postgres.legs import Leg, LegClosed
from jitgate.protocols.postgres.messages import ProtocolViolation
from jitgate.protocols.postgres.relay import Gate, HeldStatement, Relay
from jitgate.recording.recorder import SessionMeta, SessionRecorder
from jitgate.sql.types import Statement

if TYPE_CHECKING:
    from jitgate.protocols.postgres.listener import PostgresListener

log = logging.getLogger("jitgate.postgres")


_Arg = TypeVar("_Arg")  # what a relay step is given (see _relay's forward)


class Refused(Exception):
    """Ends the handshake with a FATAL ErrorResponse to the client."""

    def __init__(
        self, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint


#: Settings a client may not give at start-up (as parameters or in ``options``): as
#: statements (SET ROLE, SET SESSION AUTHORIZATION) they are decided by policy.
_REFUSED_SETTINGS = frozenset({"role", "session_authorization"})


def _startup_settings(params: dict[str, str]) -> list[str]:
    """Names of the run-time settings a StartupMessage asks for, normalized.

    Every parameter other than user/database/options/replication is a setting; ``options``
    holds command-line switches, split on unescaped whitespace like the server does
    (``pg_split_opts``): ``-c name=value``, ``-cname=value``, ``--name=value``.
    """
    names = [k for k in params if k not in ("user", "database", "options", "replication")]
    words: list[str] = []
    word: list[str] = []
    escaped = False
    for char in params.get("options", "") + " ":
        if escaped:
            word.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char.isspace():
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(char)
    expect_setting = False
    for item in words:
        if expect_setting:
            names.append(item.split("=", 1)[0])
            expect_setting = False
        elif item == "-c":
            expect_setting = True
        elif item.startswith(("-c", "--")):
            names.append(item[2:].split("=", 1)[0])
    return [n.strip().lower().replace("-", "_") for n in names]


def _is_loopback(addr: str | None) -> bool:
    if not addr:
        return False
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def _refuse_unrecorded(gate: Gate, recorder: SessionRecorder) -> Gate:
    """The policy gate, refusing every statement while the recording cannot be written
    (a session that fails closed; see :mod:`jitgate.recording.recorder`)."""

    def decide(stmt: Statement, text: str) -> Decision:
        if recorder.refusing:
            return Decision.deny(
                "the session cannot be recorded, so statements are refused",
                "builtin:recording-failed",
            )
        return gate(stmt, text)

    return decide


class PostgresSession:
    def __init__(self, listener: PostgresListener, client: Leg) -> None:
        self.listener = listener
        self.gateway = listener.gateway
        self.settings = listener.settings
        self.client = client
        self.upstream: up.Upstream | None = None
        self.relay: Relay | None = None
        self.recorder: SessionRecorder | None = None
        self.cancel_secret: int | None = None
        self.end_reason = "client disconnected"
        peer = client.transport.get_extra_info("peername") if client.transport else None
        self.client_addr: str | None = peer[0] if peer else None
        self.client_port: int | None = peer[1] if peer else None
        self.who: Authenticated | None = None
        self.upstream_address: tuple[str, int] = ("", 0)
        self.connection_name = ""
        self.grants = SessionGrants(self.gateway.access)
        self._hold_task: asyncio.Task[None] | None = None
        self.masking: SessionMasking | None = None
        self._gate: StatementGate | None = None

    # ------------------------------------------------------------------- run

    async def run(self) -> None:
        try:
            try:
                params = await asyncio.wait_for(self._handshake(), self.settings.handshake_timeout)
            except TimeoutError:
                raise Refused("08006", "jitgate: handshake timed out") from None
            if params is None:
                return
            await self._relay()
        except Refused as exc:
            self.end_reason = f"refused: {exc.message}"
            self.client.write(
                m.error_response(
                    exc.sqlstate, exc.message, severity="FATAL", detail=exc.detail, hint=exc.hint
                )
            )
        except ProtocolViolation as exc:
            self.end_reason = f"protocol violation: {exc.message}"
            self.client.write(
                m.error_response(exc.sqlstate, f"jitgate: {exc.message}", severity="FATAL")
            )
        except LegClosed:
            pass
        except Exception:
            log.exception("[client=%s] session failed", self.client_addr)
            self.end_reason = "internal error"
            self.client.write(
                m.error_response("XX000", "jitgate: internal error", severity="FATAL")
            )
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        if self.cancel_secret is not None:
            self.listener.cancel_keys.pop(self.cancel_secret, None)
        if self._hold_task is not None and not self._hold_task.done():
            self._hold_task.cancel()
        if self.relay is not None:
            with contextlib.suppress(Exception):
                self.relay.close()
        if self.upstream is not None:
            if self.relay is not None and not self.relay.terminated:
                self.upstream.leg.write(m.terminate())
            self.upstream.leg.close()
        self.client.close()
        if self.recorder is not None:
            relay = self.relay
            try:
                await self.recorder.close(
                    self.end_reason,
                    relay.bytes_from_client if relay else 0,
                    relay.bytes_from_server if relay else 0,
                    masked=self.masking.counts if self.masking is not None else None,
                )
            except Exception:
                log.exception("[client=%s] could not close the recording", self.client_addr)

    # ------------------------------------------------------------- handshake

    async def _handshake(self) -> dict[str, str] | None:
        params = await self._startup()
        if params is None:
            return None
        if params.get("replication", "false").lower() not in ("false", "0", "off", "no"):
            raise Refused("0A000", "jitgate: replication connections are not supported")
        for name in _startup_settings(params):
            if name in _REFUSED_SETTINGS:
                raise Refused(
                    "42501",
                    f"jitgate: {name} cannot be set when connecting",
                    detail="Changing the role is decided per statement, like SET ROLE.",
                )
        user = params.get("user", "")
        dbname = params.get("database") or user
        if not dbname:
            raise Refused("3D000", "jitgate: no database (connection name) given")
        if not self.client.is_tls and not (
            self.settings.allow_cleartext_loopback
            and _is_loopback(self.client_addr)
            and not self.settings.require_tls
        ):
            raise Refused(
                "28000",
                "jitgate: TLS is required to send a token",
                hint="Connect with sslmode=require.",
            )
        self.client.write(m.authentication_cleartext())
        mtype, payload = await self.client.read_message(m.MAX_AUTH_MESSAGE)
        if mtype != m.PASSWORD:
            raise ProtocolViolation("expected a password message")
        token, _ = m.read_cstring(payload, 0)
        self.who = await self._authenticate(user, token)
        info, credential = await self._resolve(dbname)
        self.upstream_address = (info.host, info.port)
        profile = info.options.get("mask_profile")
        self.masking = self.gateway.masking.session(
            str(profile) if profile else None, connection=info.name
        )
        await self._check_connect(info.name, info.tags)
        meta = SessionMeta(
            protocol="postgres",
            connection_id=info.id,
            connection_name=info.name,
            identity_id=self.who.principal.id,
            identity_name=self.who.principal.name,
            actor_id=self.who.actor.id if self.who.actor else None,
            actor_name=self.who.actor.name if self.who.actor else None,
            auth_method=self.who.method.value,
            token_id=self.who.token_id,
            client_addr=self.client_addr,
            client_program=params.get("application_name"),
            grant_ids=tuple(sorted(self.grants.ids)),
            client_port=self.client_port,
        )
        try:
            self.recorder = await self.listener.recorder.open(meta, options=info.options)
        except Exception as exc:
            log.error("[client=%s] cannot record the session: %s", self.client_addr, exc)
            raise Refused(
                "58030",
                "jitgate: the session cannot be recorded, so it is refused",
                hint="The connection's recording fails closed; the gateway's log says why.",
            ) from None
        try:
            self.upstream = await up.connect(
                info,
                credential,
                params,
                timeout=self.settings.connect_timeout,
                max_message=self.settings.max_message_bytes,
            )
        except up.UpstreamError as exc:
            sqlstate = _client_sqlstate(exc.sqlstate)
            detail = (
                f"The upstream server answered with SQLSTATE {exc.sqlstate}."
                if sqlstate != exc.sqlstate
                else None
            )
            raise Refused(sqlstate, f"jitgate: {exc.message}", detail=detail) from None
        self._finish_handshake(info.name, info.tags)
        return params

    async def _startup(self) -> dict[str, str] | None:
        tls_offered = False
        while True:
            packet = m.parse_startup_packet(await self.client.read_startup_packet())
            code = packet.code
            if code == m.SSL_REQUEST:
                if tls_offered or self.client.is_tls:
                    raise ProtocolViolation("duplicate SSL request")
                tls_offered = True
                self.client.write(b"S")
                try:
                    await self.client.start_tls(self.listener.ssl_context, server_side=True)
                except (ssl.SSLError, OSError) as exc:  # nothing can be said to the client
                    self.end_reason = f"client TLS handshake failed: {exc}"
                    raise LegClosed(self.end_reason) from None
                continue
            if code == m.GSSENC_REQUEST:
                self.client.write(b"N")
                continue
            if code == m.CANCEL_REQUEST:
                if packet.cancel_key is not None:
                    await self.listener.cancel(*packet.cancel_key)
                self.end_reason = "cancel request"
                return None
            major, minor = code >> 16, code & 0xFFFF
            if major != 3:
                raise Refused("0A000", f"jitgate: unsupported frontend protocol {major}.{minor}")
            params = dict(packet.params)
            if minor > 0 or any(k.startswith("_pq_.") for k in params):
                unknown = [k for k in params if k.startswith("_pq_.")]
                self.client.write(m.negotiate_protocol_version(m.PROTOCOL_V3, unknown))
                params = {k: v for k, v in params.items() if not k.startswith("_pq_.")}
            return params

    async def _authenticate(self, user: str, token: str) -> Authenticated:
        auth = self.gateway.authenticator
        try:
            return await asyncio.to_thread(auth.authenticate, token, client_addr=self.client_addr)
        except Unauthenticated as exc:
            raise Refused(
                "28P01",
                f'password authentication failed for user "{user}"',
                detail=f"jitgate: {exc.message}",
                hint="The password must be a jitgate token.",
            ) from None
        except Unavailable as exc:
            raise Refused("08006", f"jitgate: {exc.message}") from None

    async def _resolve(self, dbname: str) -> tuple[ConnectionInfo, Credential | None]:
        registry = self.gateway.connections
        assert self.who is not None
        try:
            info, credential = await asyncio.to_thread(registry.resolve, dbname)
        except NotFound:
            raise Refused(
                "3D000",
                f'database "{dbname}" does not exist',
                detail=f"jitgate: there is no connection named {dbname!r}.",
            ) from None
        except JitgateError as exc:
            raise Refused("08006", f"jitgate: {exc.message}") from None
        if info.type is not ConnectionType.POSTGRES:
            raise Refused(
                "3D000",
                f'database "{dbname}" does not exist',
                detail=f"jitgate: connection {dbname!r} is not a PostgreSQL target.",
            )
        if not self.who.may_use(info.name):
            raise Refused("28000", f"jitgate: this token is not valid for {info.name!r}")
        return info, credential

    def _target(self, name: str, tags: dict[str, str]) -> Target:
        return Target(name=name, type="postgres", tags=tags)

    async def _check_connect(self, name: str, tags: dict[str, str]) -> None:
        assert self.who is not None
        gate = StatementGate(
            self.listener.policy,
            principal=self.who.principal,
            actor=self.who.actor,
            target=self._target(name, tags),
            client_addr=self.client_addr,
        )
        self._gate = gate
        self.connection_name = name
        await self.grants.load(self.who, name, gate)
        if self.grants.ids:
            await self.grants.use(self.who, name, gate)
        decision = gate.decide(None, "", action="connect")
        if not decision.allowed:
            raise Refused(
                "28000",
                f"jitgate: {self.who.display} may not connect to {name!r}",
                detail=decision.reason,
            )

    def grants_ended(self, ended: tuple[str, ...]) -> None:
        """Grants ended: stop counting them now, before :meth:`refresh_grants` runs (the
        listener calls this in the same loop step that hears of the change, so the very
        next statement is already decided without them)."""
        self.grants.drop(ended, self._gate)

    async def refresh_grants(self, ended: tuple[str, ...] = ()) -> None:
        """Grants changed: re-decide whether this session may stay connected."""
        async with self.grants.lock:
            await self._refresh_grants(ended)

    async def _refresh_grants(self, ended: tuple[str, ...]) -> None:
        if self._gate is None or self.who is None or self.client.closed.done():
            return
        held_ended = [g for g in ended if g in self.grants.had]
        before = self.grants.counted_before()
        try:
            await self.grants.load(self.who, self.connection_name, self._gate)
        except Exception as exc:  # the store is unavailable: fail closed only if it mattered
            log.warning("[client=%s] could not reload grants: %s", self.client_addr, exc)
            return
        now = self.grants.ids
        if self.recorder is not None and now != before:
            with contextlib.suppress(OSError):
                self.recorder.event(
                    "grants",
                    {
                        "grant_ids": sorted(now),
                        "added": sorted(now - before),
                        "ended": sorted(before - now),
                    },
                )
        decision = self._gate.decide(None, "", action="connect")
        if not decision.allowed:
            # A change seen on another node names no grant: the ones this session lost.
            gone = held_ended or sorted(before - now)
            self.terminate(await self.grants.end_message(gone, decision))

    def _finish_handshake(self, name: str, tags: dict[str, str]) -> None:
        assert self.upstream is not None
        upstream = self.upstream
        out = [m.authentication_ok()]
        out += [m.parameter_status(k, v) for k, v in upstream.parameters]
        out += upstream.notices
        self.cancel_secret = self.listener.new_cancel_secret(self)
        out.append(m.backend_key_data(upstream.pid, self.cancel_secret))
        out.append(m.ready_for_query(upstream.status))
        # From here the client may send its queries and shut down its sending side before
        # the relay starts: they are still run and answered (see _relay).
        self.client.keeps_open_on_eof = True
        self.client.write(b"".join(out))

    # ----------------------------------------------------------------- relay

    async def _relay(self) -> None:
        assert self.upstream is not None and self.recorder is not None
        client, server = self.client, self.upstream.leg
        recorder = self.recorder
        assert self._gate is not None
        relay = Relay(
            classify=self.listener.classifier.classify,
            gate=_refuse_unrecorded(self._gate, recorder),
            observer=self.recorder,
            max_message=self.settings.max_message_bytes,
            client_encoding=dict(self.upstream.parameters).get("client_encoding", "UTF8"),
            standard_conforming_strings=dict(self.upstream.parameters).get(
                "standard_conforming_strings", "on"
            ),
            masking=self.masking,
        )
        self.relay = relay
        client.peer, server.peer = server, client

        def end(reason: str, sqlstate: str, message: str) -> None:
            """Fail closed: a FATAL ErrorResponse to the client, both legs closed."""
            self.end_reason = reason
            client.write(
                m.error_response(sqlstate, message, severity="FATAL", encoding=relay.encoding)
            )
            client.close()
            server.close()

        def forward(step: Callable[[_Arg], bytes], arg: _Arg) -> bool:
            """Run one relay step for the client side; False if the session was ended."""
            try:
                out = step(arg)
                if out:
                    recorder.flush()  # the request's event is written before it goes upstream
            except ProtocolViolation as exc:
                end(f"protocol violation: {exc.message}", exc.sqlstate, f"jitgate: {exc.message}")
                return False
            except OSError as exc:  # the recorder cannot write: fail closed
                log.error("[client=%s] recording failed: %s", self.client_addr, exc)
                end(
                    "recording failed",
                    "58030",
                    "jitgate: the session can no longer be recorded, so it is closed",
                )
                return False
            except Exception:  # a bug of ours: nothing of this data goes upstream
                log.exception("[client=%s] relaying a request failed", self.client_addr)
                end("internal error", "XX000", "jitgate: internal error")
                return False
            if out:
                server.write(out)
            if relay.terminated:
                self.end_reason = "client terminated"
                server.close()
            return True

        def from_client(data: bytes) -> None:
            if forward(relay.client_data, data) and relay.held is not None:
                hold()

        def hold() -> None:
            """A statement waits for review: stop reading the client until it is decided."""
            if self._hold_task is not None and not self._hold_task.done():
                return
            if client.transport is not None:
                client.transport.pause_reading()
            self._hold_task = asyncio.create_task(resolve_holds())

        async def resolve_holds() -> None:
            while relay.held is not None and not client.closed.done():
                held = relay.held
                decision = await self._review(held, relay.encoding)
                if not forward(relay.release, decision):
                    return
            if client.transport is not None and not client.closed.done():
                client.transport.resume_reading()

        def from_server(data: bytes) -> None:
            mid_message = relay.client_mid_message  # what the client has so far
            try:
                out = relay.server_data(data)
            except (ProtocolViolation, OSError) as exc:
                log.error("[client=%s] upstream stream failed: %s", self.client_addr, exc)
                self.end_reason = "upstream protocol error"
                if not mid_message:  # else an ErrorResponse would be read as row data
                    detail = exc.message if isinstance(exc, ProtocolViolation) else None
                    client.write(
                        m.error_response(
                            "08P01",
                            "jitgate: the upstream server broke the protocol",
                            severity="FATAL",
                            detail=detail,
                            encoding=relay.encoding,
                        )
                    )
                client.close()
                server.close()
                return
            except Exception:  # a bug of ours; the client may be mid-message: just close
                log.exception("[client=%s] relaying a response failed", self.client_addr)
                self.end_reason = "internal error"
                client.close()
                server.close()
                return
            if recorder.results_waiting:
                # Statements finished: their results are in the log, handed to the kernel,
                # before the client sees the answer that ends them.
                recorder.record_results()
            if out:
                client.write(out)
            recorder.flush_soon()

        half_closed = False

        def client_half_closed() -> None:
            """The client shut down its sending side after its last request (a script
            piping queries in does): what it sent still runs, and the answers still reach
            it, as on a direct connection. The upstream leg is half-closed in turn, so the
            server ends the session once it has answered."""
            nonlocal half_closed
            half_closed = True
            transport = server.transport
            if transport is not None and not transport.is_closing() and transport.can_write_eof():
                transport.write_eof()
            else:
                server.close()

        client.on_half_close = client_half_closed
        client.relay_to(from_client)
        server.relay_to(from_server)
        if relay.held is not None:
            hold()
        done, _pending = await asyncio.wait(
            {client.closed, server.closed}, return_when=asyncio.FIRST_COMPLETED
        )
        if half_closed and server.closed in done:
            client.close()  # everything the client asked for is answered
            return
        if (
            server.closed in done
            and not client.closed.done()
            and not relay.terminated
            and self.end_reason == "client disconnected"
        ):
            self.end_reason = "upstream closed the connection"
            if relay.upstream_fatal:
                return  # the client has the upstream's own FATAL ErrorResponse
            if relay.client_mid_message:
                # The stream broke inside a row: an ErrorResponse now would be read as the
                # rest of that row. Closing is the only signal the client can trust.
                client.close()
                return
            client.write(
                m.error_response(
                    "08006",
                    "jitgate: the upstream server closed the connection",
                    severity="FATAL",
                )
            )

    async def _review(self, held: HeldStatement, encoding: str) -> Decision:
        """Resolve a review: a one-time approval, a wait for approvers, or a refusal."""
        assert self.who is not None and self.recorder is not None
        approvals = self.gateway.settings.approvals
        wait = approvals.agents_wait or not (self.who.actor or self.who.principal.is_agent)
        client = self.client

        def tell(text: str) -> None:
            client.write(m.notice_response(text, encoding=encoding))

        try:
            decision = await resolve_review(
                self.gateway.access,
                self.who,
                connection=self.connection_name,
                text=held.describe(encoding),
                key=_approval_key(held),
                decision=held.decision,
                session_id=self.recorder.session_id,
                wait=wait,
                timeout=approvals.hold_timeout_seconds,
                poll_interval=approvals.poll_interval_seconds,
                tell=tell,
                public_url=self.gateway.settings.api.public_url,
            )
        except Exception as exc:  # fail closed
            log.exception("[client=%s] resolving a review failed", self.client_addr)
            decision = Decision.deny(
                f"the approval could not be handled: {type(exc).__name__}", *held.decision.policies
            )
        with contextlib.suppress(OSError):
            self.recorder.event(
                "review",
                {
                    "decision": "review",
                    "text": held.text,
                    "reason": held.decision.reason,
                    "policies": list(held.decision.policies),
                    "outcome": decision.outcome.value,
                    "by": list(decision.policies),
                },
            )
        return decision

    def terminate(self, message: str, sqlstate: str = "57P01") -> None:
        """End the session from the gateway's side (shutdown, grant revoked)."""
        self.end_reason = message
        self.client.write(m.error_response(sqlstate, message, severity="FATAL"))
        self.client.close()
        if self.upstream is not None:
            self.upstream.leg.close()


def _approval_key(held: HeldStatement) -> str:
    """What a one-time approval of ``held`` is for: its text and its parameter values.

    When the parameters are unknown, the key is one no later statement can have: the
    approval can release this held execution and nothing else.
    """
    if held.params is None:
        return statement_key(f"{held.text}\x00{secrets.token_hex(16)}")
    formats, values = held.params
    if not values:
        return statement_key(held.text)
    return statement_key(held.text, (struct.pack(f"!{len(formats)}h", *formats), *values))


# Upstream refusals whose SQLSTATE the client should see as is: connection exceptions
# (08), too many connections and other resource limits (53), and "the server is
# starting up / shutting down" (57P0x) — drivers and poolers retry on those. Anything
# else (a wrong stored credential: 28P01, a missing upstream database: 3D000) is the
# gateway's configuration problem, not the client's, and is reported as 08006.
_PASSED_THROUGH = ("08", "53", "57P")


def _client_sqlstate(upstream: str) -> str:
    return upstream if upstream.startswith(_PASSED_THROUGH) else "08006"
