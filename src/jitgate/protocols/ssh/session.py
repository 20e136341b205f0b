"""One client SSH connection through the gateway, and its channels.

Theory of operation
-------------------
:class:`GatewayConnection` is asyncssh's ``SSHServer`` for one client. Log-in names the
target: ``CONNECTION`` or ``USER+CONNECTION``. The client proves who it is with a public
key registered to a jitgate identity, or with a jitgate token given as the password or
the keyboard-interactive answer. Before log-in succeeds, the connection is resolved
(it must be an ``ssh`` connection the credential may use), the caller's grants are
loaded and policy decides ``connect``; a refusal is sent as an authentication banner.
Each attempt is decided for its own credential, and the session takes the identity of
the attempt that authenticated (for a public key: the key that signed), never that of an
earlier probe.

After log-in the session is recorded and the gateway opens its own connection to the
target (:mod:`.upstream`: stored credential, pinned host key). Every client channel then
gets its own upstream channel on that one upstream connection:

* session channels (:class:`ClientChannel`): ``shell`` (``ssh:shell``), ``exec``
  (``ssh:exec``, the command line classified by :mod:`jitgate.shell`; the plain legacy
  ``scp -t`` / ``scp -f`` an scp client runs is decided on its path and then file by
  file (:mod:`.scp`); the SFTP server run by name, as ``sftp -s PATH``
  does, is inspected like the subsystem) and the ``sftp`` subsystem (each file operation
  decided, see :mod:`.sftp`). A denial is written on stderr with exit status 1; a
  review holds the channel until an approver decides (the client is told where). The
  PTY, window changes, signals, breaks, EOF and the exit status or signal are relayed.
  Environment variables reach the target only when ``ssh:env`` allows their name;
* ``direct-tcpip`` (local port forwarding): tunnelled over the upstream connection when
  ``ssh:forward`` allows ``host:port``, refused otherwise;
* agent forwarding, X11 forwarding and remote port forwarding are refused.

In a shell with a PTY, the typed lines are reconstructed (:mod:`jitgate.shell.line`)
and put to policy as ``ssh:line`` when Enter is pressed; a denied line is cancelled
(erased with Ctrl-E Ctrl-U, then Ctrl-C, instead of Enter) and the user is told why.
This is best effort and documented as such: see the module docstring of
:mod:`jitgate.shell.line`. A shell without a PTY (``ssh HOST < script``, ``ssh -T``, or an
exec whose stdin reaches a shell: ``bash``, ``sh -s``, ``cat | bash``, ``sudo bash``) reads
its commands from stdin as sent: each one (:mod:`jitgate.shell.script`) is put to policy
as ``ssh:line`` before it goes on, and a denied one is not sent (the client is told on
stderr). An exec or a line whose stdin is a program the gateway does not parse
(``python3 -``, ``psql``, ``base64 -d | bash``; :mod:`jitgate.shell.stdin`) is decided
as unknown.

Every decided request (a channel request, a typed line, a file operation, a port
forward) is counted by its decision and written to the recording before it goes on
(:meth:`SessionRecorder.decided`). A request whose event cannot be written is refused;
while the recording cannot be written and the connection fails closed (the default),
every new request is refused with a message and the session stays open, as on
PostgreSQL; ``recording_on_failure: open`` lets traffic through instead.

Flow control is end to end: when one side's send buffer fills, the other side stops
reading, so a slow client slows the target down and no buffer grows without bound.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import logging
import re
import shlex
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import asyncssh

from jitgate.access.hold import resolve_review
from jitgate.access.session_grants import SessionGrants
from jitgate.connections.types import ConnectionInfo, ConnectionType, Credential
from jitgate.errors import JitgateError, NotFound, Unauthenticated, Unavailable
from jitgate.identity.principal import Authenticated
from jitgate.policy.gate import StatementGate
from jitgate.policy.types import Decision, Outcome, Target
from jitgate.protocols.ssh import upstream as up
from jitgate.protocols.ssh.links import real_paths
from jitgate.protocols.ssh.policy import SSHPolicy
from jitgate.protocols.ssh.scp import SCPInspector, SCPProtocolError, parse_scp
from jitgate.protocols.ssh.sftp import (
    FileOperation,
    SFTPInspector,
    SFTPProtocolError,
    file_operation,
    request_event,
)
from jitgate.recording.recorder import SessionMeta, SessionRecorder
from jitgate.shell.commands import CommandLine, classify
from jitgate.shell.line import LineEditor, TypedLine
from jitgate.shell.script import ScriptCommand, ScriptData, ScriptItem, ScriptReader
from jitgate.shell.stdin import stdin_use

if TYPE_CHECKING:
    from jitgate.protocols.ssh.listener import SSHListener

log = logging.getLogger("jitgate.ssh")

_ALT_SCREEN = re.compile(rb"\x1b\[\?(1049|1047|47)([hl])")
_ALT_PREFIXES = (b"\x1b[?1049", b"\x1b[?1047", b"\x1b[?47")
_SECRET_PROMPT = re.compile(r"\b(password|passphrase|passcode|pin|token)\b[^\n]{0,80}:\s*$", re.I)
#: How long a line typed at a password-like prompt waits for the remote's echo (after its
#: first character) before it is taken as a secret: no echo, the remote turned it off.
ECHO_WAIT = 1.0
# How a denied line is taken back from the shell, instead of Enter: Ctrl-E Ctrl-U first
# (end of line, erase the line: readline's emacs and vi-insert bindings, and the tty's own
# line kill in cooked mode), processed in order with the typed characters, so the line is
# gone even if a signal is late or ignored; then Ctrl-C, which also abandons a multi-line
# command under way and brings back a fresh prompt.
_CANCEL_LINE = b"\x05\x15\x03"
_UNRECORDED = "the session cannot be recorded, so it is refused"
MAX_CONTINUED = 64 * 1024
#: A denied line is cancelled once the remote has written nothing for CANCEL_QUIET
#: seconds (at most CANCEL_WAIT after the decision).
CANCEL_QUIET = 0.05
CANCEL_WAIT = 0.5
MAX_UNECHOED = 16 * 1024
#: What the recording says instead of a line typed while the remote did not echo.
UNECHOED = "(a line typed without echo, not recorded)"


def parse_username(username: str) -> tuple[str | None, str]:
    """``USER+CONNECTION`` or ``CONNECTION`` → (user or None, connection)."""
    user, sep, connection = username.rpartition("+")
    return (user or None) if sep else None, connection


@dataclass(frozen=True, slots=True)
class _Admission:
    """One log-in attempt that may go on: who, with which credential, to what."""

    username: str  # the log-in name it was decided for
    who: Authenticated
    method: str  # publickey, password or kbd-interactive (at most 16 characters)
    key: str | None  # publickey: the fingerprint of the key
    info: ConnectionInfo
    credential: Credential | None
    gate: StatementGate
    policy: SSHPolicy
    grants: SessionGrants


class Refusal(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ----------------------------------------------------------------------- connection


class GatewayConnection(asyncssh.SSHServer):
    def __init__(self, listener: SSHListener) -> None:
        self.listener = listener
        self.gateway = listener.gateway
        self.settings = listener.settings
        self.conn: asyncssh.SSHServerConnection | None = None
        self.client_addr: str | None = None
        self.requested_user: str | None = None
        self.connection_name = ""
        self.who: Authenticated | None = None
        self.auth_method = ""  # publickey, password or kbd-interactive
        self.auth_key: str | None = None  # the public key's fingerprint
        self.info: ConnectionInfo | None = None
        self.credential: Credential | None = None
        self.policy: SSHPolicy | None = None
        self.gate: StatementGate | None = None
        self.grants = SessionGrants(listener.gateway.access)
        self.recorder: SessionRecorder | None = None
        self.upstream: up.Upstream | None = None
        self.ready: asyncio.Future[up.Upstream] | None = None
        self.channels: set[ClientChannel] = set()
        self.end_reason = "client disconnected"
        self.bytes_in = 0
        self.bytes_out = 0
        # The answer of the latest log-in attempt; auth_completed takes it (see _Admission).
        self._admission: _Admission | None = None
        self._attempts = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._home: str | None = None  # the user's home directory on the target ("": unknown)
        self._home_lock = asyncio.Lock()
        self._sftp: asyncssh.SFTPClient | None = None  # see target_sftp
        self._sftp_lock = asyncio.Lock()

    # --------------------------------------------------------------- lifecycle

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.client_addr = peer[0] if peer else None
        self.listener.connections.add(self)
        # asyncssh answers agent and X11 forwarding requests itself (the listener turns
        # both off) and asks only its connection object: these are its questions, so the
        # refusals are also recorded.
        conn.create_agent_listener = self._agent_requested  # type: ignore[method-assign]
        conn.attach_x11_listener = self._x11_requested  # type: ignore[method-assign]

    async def _agent_requested(self) -> bool:
        await self._record_refused("ssh.agent", "agent forwarding is refused")
        return False

    async def _x11_requested(
        self, chan: Any, auth_proto: bytes, auth_data: bytes, screen: int
    ) -> str | None:
        await self._record_refused("ssh.x11", "X11 forwarding is refused")
        return None

    async def _record_refused(self, type: str, reason: str) -> None:
        with contextlib.suppress(asyncssh.Error):  # not logged in, or refused: no recording
            await self.upstream_ready()
        self.record(type, {"decision": "deny", "policies": ["builtin:ssh"], "reason": reason})

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        if exc is not None and self.end_reason == "client disconnected":
            self.end_reason = f"connection lost: {type(exc).__name__}"
        self.spawn(self._cleanup())

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        self.listener.tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self.listener.tasks.discard)
        return task

    async def _cleanup(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.ready is not None and not self.ready.done():
            self.ready.cancel()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        if self.upstream is not None:
            self.upstream.conn.close()
        if self.recorder is not None:
            try:
                await self.recorder.close(self.end_reason, self.bytes_in, self.bytes_out)
            except Exception:
                log.exception("[client=%s] could not close the recording", self.client_addr)

    def record(self, type: str, data: dict[str, Any]) -> None:
        """Write an event; a recorder that cannot write ends the session (fail closed)."""
        if self.recorder is None:
            return
        try:
            self.recorder.event(type, data)
        except OSError as exc:
            log.error("[client=%s] cannot record: %s", self.client_addr, exc)
            self.terminate("jitgate: the session cannot be recorded any more")

    def recording_refusal(self) -> Decision | None:
        """A denial while the recording cannot be written and the session fails closed."""
        recorder = self.recorder
        if recorder is not None and recorder.refusing:
            return Decision.deny(
                "the session cannot be recorded, so requests are refused",
                "builtin:recording-failed",
            )
        return None

    def decided(self, type: str, data: dict[str, Any], decision: Decision) -> bool:
        """Record a decided request (counted by its outcome) before it goes on. False: it
        is allowed but its event cannot be written, so it must not go on (fail closed)."""
        if self.recorder is None:
            return True
        try:
            self.recorder.decided(type, data, decision.outcome)
        except OSError as exc:
            log.error("[client=%s] cannot record a request, refused: %s", self.client_addr, exc)
            return False
        return True

    def terminate(self, message: str) -> None:
        """End the session from the gateway's side (grant ended, shutdown)."""
        self.end_reason = message
        for channel in list(self.channels):
            channel.tell(message)
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, message)

    # -------------------------------------------------------------------- auth

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def kbdint_auth_supported(self) -> bool:
        return True

    # Every hook below answers for the one credential it is given, and leaves that answer
    # (or None) in self._admission; asyncssh reports success right after the hook of the
    # attempt that succeeds (for a public key: after checking the signature made with the
    # key it passed to validate_public_key), so auth_completed takes the admission of the
    # credential that actually authenticated. asyncssh calls validate_public_key for
    # unsigned probes as well: an answer is never reused for another key, and an attempt
    # that finishes after a newer one has started is discarded.

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        attempt = self._begin_attempt()
        fp = str(key.get_fingerprint("sha256"))
        try:
            who = await asyncio.to_thread(self.listener.keys.authenticate, key)
        except Exception as exc:  # the store is unavailable: nobody logs in (fail closed)
            log.warning("[client=%s] public key look-up failed: %s", self.client_addr, exc)
            who = None
        admission = None
        if who is not None:
            admission = await self._admit(username, who, "publickey", key=fp)
        return self._end_attempt(attempt, admission)

    async def validate_password(self, username: str, password: str) -> bool:
        attempt = self._begin_attempt()
        admission = await self._login_with_token(username, password, "password")
        return self._end_attempt(attempt, admission)

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, list[tuple[str, bool]]]:
        self._begin_attempt()
        return "jitgate", "Log in with a jitgate token.", "", [("jitgate token: ", False)]

    async def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> bool:
        attempt = self._begin_attempt()
        admission = None
        if len(responses) == 1:
            admission = await self._login_with_token(username, responses[0], "kbd-interactive")
        return self._end_attempt(attempt, admission)

    def _begin_attempt(self) -> int:
        self._attempts += 1
        self._admission = None
        return self._attempts

    def _end_attempt(self, attempt: int, admission: _Admission | None) -> bool:
        if attempt != self._attempts:  # a newer attempt started meanwhile: this one is void
            return False
        self._admission = admission
        return admission is not None

    async def _login_with_token(self, username: str, token: str, how: str) -> _Admission | None:
        token = token.strip()
        if not token or len(token) > 16384:
            return None
        try:
            who = await asyncio.to_thread(
                self.gateway.authenticator.authenticate, token, client_addr=self.client_addr
            )
        except Unauthenticated:
            return None
        except (Unavailable, JitgateError) as exc:
            self._banner(f"jitgate: {exc.message}")
            return None
        except Exception as exc:
            log.warning("[client=%s] token check failed: %s", self.client_addr, exc)
            self._banner("jitgate: the token cannot be checked right now")
            return None
        return await self._admit(username, who, how)

    def _banner(self, message: str) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.send_auth_banner(message + "\r\n")

    async def _admit(
        self, username: str, who: Authenticated, method: str, *, key: str | None = None
    ) -> _Admission | None:
        """May ``who`` open the connection ``username`` names? Tells the client why not
        (banner). Nothing of the session changes until log-in completes."""
        user, connection = parse_username(username)
        try:
            if user is not None and user != who.principal.name:
                raise Refusal(f"jitgate: you logged in as {who.principal.name}, not {user}")
            info, credential = await self._resolve(connection, who)
            gate = StatementGate(
                self.listener.policy,
                principal=who.principal,
                actor=who.actor,
                target=Target(name=info.name, type="ssh", tags=info.tags),
                client_addr=self.client_addr,
                protocol="ssh",
            )
            policy = SSHPolicy(gate)
            grants = SessionGrants(self.gateway.access)
            await grants.load(who, info.name, gate)
            decision = policy.connect()
            if not decision.allowed:
                raise Refusal(
                    f"jitgate: {who.display} may not connect to {info.name!r}: "
                    f"{decision.reason or 'denied'}"
                )
        except Exception as exc:
            if not isinstance(exc, Refusal):
                log.exception("[client=%s] admission failed", self.client_addr)
            self._banner(exc.message if isinstance(exc, Refusal) else "jitgate: internal error")
            return None
        return _Admission(username, who, method, key, info, credential, gate, policy, grants)

    async def _resolve(
        self, name: str, who: Authenticated
    ) -> tuple[ConnectionInfo, Credential | None]:
        if not name:
            raise Refusal("jitgate: log in as CONNECTION or USER+CONNECTION")
        try:
            info, credential = await asyncio.to_thread(self.gateway.connections.resolve, name)
        except NotFound:
            raise Refusal(f"jitgate: there is no connection named {name!r}") from None
        except JitgateError as exc:
            raise Refusal(f"jitgate: {exc.message}") from None
        if info.type is not ConnectionType.SSH:
            raise Refusal(f"jitgate: connection {name!r} is not an SSH target")
        if not who.may_use(info.name):
            raise Refusal(f"jitgate: this credential is not valid for {info.name!r}")
        return info, credential

    def grants_ended(self, ended: tuple[str, ...]) -> None:
        """Grants ended: stop counting them now, before :meth:`refresh_grants` runs (the
        listener calls this in the same loop step that hears of the change, so the very
        next statement is already decided without them)."""
        self.grants.drop(ended, self.gate)

    async def refresh_grants(self, ended: tuple[str, ...] = ()) -> None:
        """Grants changed: re-decide whether this session may stay connected."""
        async with self.grants.lock:
            await self._refresh_grants(ended)

    async def _use_grant(self) -> bool:
        """Count this session against a grant with limited uses; False: none is left."""
        assert self.who is not None and self.info is not None
        assert self.gate is not None and self.policy is not None
        async with self.grants.lock:
            await self.grants.use(self.who, self.info.name, self.gate)
            return self.policy.connect().allowed

    async def _refresh_grants(self, ended: tuple[str, ...]) -> None:
        if self.policy is None or self.who is None or self._closed:
            return
        assert self.info is not None and self.gate is not None
        held_ended = [g for g in ended if g in self.grants.had]
        before = self.grants.counted_before()
        try:
            await self.grants.load(self.who, self.info.name, self.gate)
        except Exception as exc:
            log.warning("[client=%s] could not reload grants: %s", self.client_addr, exc)
            return
        now = self.grants.ids
        if now != before:
            self.record(
                "grants",
                {
                    "grant_ids": sorted(now),
                    "added": sorted(now - before),
                    "ended": sorted(before - now),
                },
            )
        decision = self.policy.connect()
        if decision.allowed:
            return
        # A change seen on another node names no grant: the ones this session lost.
        message = await self.grants.end_message(held_ended or sorted(before - now), decision)
        self.record("grant.end", {"message": message})
        self.terminate(message)

    def auth_completed(self) -> None:
        admission, self._admission = self._admission, None
        username = self.conn.get_extra_info("username") if self.conn is not None else None
        if admission is None or admission.username != username:  # never expected
            log.error("[client=%s] log-in completed without an admission", self.client_addr)
            self.end_reason = "refused: log-in not admitted"
            if self.conn is not None:
                self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, "jitgate: log-in failed")
            return
        self.who, self.auth_method, self.auth_key = admission.who, admission.method, admission.key
        self.info, self.credential = admission.info, admission.credential
        self.gate, self.policy, self.grants = admission.gate, admission.policy, admission.grants
        self.requested_user, self.connection_name = parse_username(admission.username)
        self.ready = asyncio.get_running_loop().create_future()
        self.spawn(self._open())
        if self.settings.idle_timeout:
            self.spawn(self._idle_watch(self.settings.idle_timeout))

    async def _idle_watch(self, limit: float) -> None:
        """End the session after ``limit`` seconds without data in either direction."""
        loop = asyncio.get_running_loop()
        seen = (self.bytes_in, self.bytes_out)
        quiet_since = loop.time()
        while not self._closed:
            await asyncio.sleep(min(limit / 4, 30))
            now_seen = (self.bytes_in, self.bytes_out)
            if now_seen != seen:
                seen, quiet_since = now_seen, loop.time()
            elif loop.time() - quiet_since >= limit:
                self.record("session.idle", {"seconds": limit})
                self.terminate(f"jitgate: session idle for {int(limit)} s, closed")
                return

    async def _open(self) -> None:
        assert self.ready is not None and self.who is not None and self.info is not None
        who, info = self.who, self.info
        conn = self.conn
        if self.grants.ids:  # one use of a grant per session (not per log-in attempt)
            try:
                allowed = await self._use_grant()
            except Exception as exc:
                log.error("[client=%s] cannot count the grant's use: %s", self.client_addr, exc)
                allowed = False
            if not allowed:
                self._fail_ready("the grant has no uses left for a new session")
                return
        meta = SessionMeta(
            protocol="ssh",
            connection_id=info.id,
            connection_name=info.name,
            identity_id=who.principal.id,
            identity_name=who.principal.name,
            actor_id=who.actor.id if who.actor else None,
            actor_name=who.actor.name if who.actor else None,
            auth_method=self.auth_method,
            token_id=who.token_id,
            client_addr=self.client_addr,
            client_program=str(conn.get_extra_info("client_version", "")) if conn else None,
            grant_ids=tuple(sorted(self.grants.ids)),
        )
        try:
            self.recorder = await self.listener.recorder.open(meta, options=info.options)
        except Exception as exc:
            log.error("[client=%s] cannot record the session: %s", self.client_addr, exc)
            self._fail_ready("the session cannot be recorded, so it is refused")
            return
        auth: dict[str, Any] = {"method": self.auth_method, "credential": who.method.value}
        if self.auth_key is not None:
            auth["key"] = self.auth_key
        self.record("ssh.auth", auth)
        try:
            upstream = await up.connect(
                info,
                self.credential,
                connect_timeout=self.settings.connect_timeout,
                login_timeout=self.settings.login_timeout,
            )
        except up.UpstreamError as exc:
            self.record("upstream.error", {"message": exc.message})
            self.end_reason = f"refused: {exc.message}"
            self._fail_ready(exc.message)
            return
        self.credential = None  # the upstream is authenticated; drop the secret
        self.upstream = upstream
        fp = upstream.host_key.get_fingerprint("sha256") if upstream.host_key else None
        self.record(
            "upstream.connected", {"host_key": fp, "pinned_now": bool(upstream.learned_host_key)}
        )
        if upstream.learned_host_key is not None:
            options = {**info.options, "host_key": upstream.learned_host_key}
            try:
                await asyncio.to_thread(self.gateway.connections.update, info.name, options=options)
            except JitgateError as exc:
                log.warning("could not pin the host key of %s: %s", info.name, exc)
        if self._closed:
            upstream.conn.close()
            return
        self.ready.set_result(upstream)

    async def home_dir(self) -> str | None:
        """The target user's home directory (where relative file paths start), asked of
        the target's SFTP server once per connection; None when it cannot tell."""
        async with self._home_lock:
            if self._home is None:
                self._home = ""
                upstream = await self.upstream_ready()
                try:
                    async with asyncio.timeout(self.settings.connect_timeout):
                        async with upstream.conn.start_sftp_client() as sftp:
                            home = await sftp.realpath(".")
                    if isinstance(home, str) and home.startswith("/"):
                        self._home = home
                except (asyncssh.Error, OSError, TimeoutError) as exc:
                    log.info("[client=%s] home directory unknown: %s", self.client_addr, exc)
        return self._home or None

    async def target_sftp(self) -> asyncssh.SFTPClient:
        """The gateway's own SFTP session to the target (started once), where the paths
        of the client's SFTP requests are resolved (:mod:`.links`)."""
        async with self._sftp_lock:
            if self._sftp is None:
                upstream = await self.upstream_ready()
                self._sftp = await upstream.conn.start_sftp_client()
            return self._sftp

    def _fail_ready(self, message: str) -> None:
        assert self.ready is not None
        if not self.ready.done():
            self.ready.set_exception(Refusal(f"jitgate: {message}"))
            self.ready.exception()  # retrieved: channel opens re-raise it

    async def upstream_ready(self) -> up.Upstream:
        if self.ready is None:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "jitgate: not logged in"
            )
        try:
            return await asyncio.shield(self.ready)
        except Refusal as exc:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, exc.message) from None

    # ----------------------------------------------------------------- channels

    def session_requested(self) -> Any:
        if len(self.channels) >= self.settings.max_sessions_per_connection:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_RESOURCE_SHORTAGE, "jitgate: too many sessions on this connection"
            )

        return ClientChannel(self)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        conn = self.conn
        assert conn is not None

        async def tunnel() -> Any:
            upstream = await self.upstream_ready()  # recorded from here on
            assert self.policy is not None
            decision = self.recording_refusal() or self.policy.forward(dest_host, dest_port)
            if decision.outcome is Outcome.REVIEW:
                why = f"{decision.reason or 'needs approval'} (port forwards cannot wait)"
                decision = Decision.deny(why, *decision.policies)
            event = {
                "host": dest_host,
                "port": dest_port,
                "origin": f"{orig_host}:{orig_port}",
                **_decision_fields(decision),
            }
            if not self.decided("ssh.forward", event, decision):
                decision = Decision.deny(_UNRECORDED, "builtin:recording-failed")
            if not decision.allowed:
                why = decision.reason or "denied"
                raise asyncssh.ChannelOpenError(
                    asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                    f"jitgate: port forwarding to {dest_host}:{dest_port} is not allowed: {why}",
                )
            try:
                return await asyncio.wait_for(
                    conn.forward_tunneled_connection(upstream.conn, dest_host, dest_port),
                    self.settings.connect_timeout,
                )
            except TimeoutError:
                raise asyncssh.ChannelOpenError(
                    asyncssh.OPEN_CONNECT_FAILED,
                    f"jitgate: the target did not open {dest_host}:{dest_port} in time",
                ) from None

        return tunnel()

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        decision = Decision.deny("remote port forwarding is not supported", "builtin:ssh")
        event = {"host": listen_host, "port": listen_port, **_decision_fields(decision)}
        self.decided("ssh.remote_forward", event, decision)
        return False


# ------------------------------------------------------------------------ channels


class ClientChannel(asyncssh.SSHServerSession[bytes]):
    """A session channel from the client, relayed to one upstream session channel."""

    def __init__(self, connection: GatewayConnection) -> None:
        self.connection = connection
        self.settings = connection.settings
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.kind = ""
        self.command: str | None = None
        self.subsystem: str | None = None
        self.term_type: str | None = None
        self.term_size: tuple[int, int, int, int] | None = None
        self.term_modes: dict[int, int] = {}
        self.up_chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.upstream_side: UpstreamChannel | None = None
        self.sftp: SFTPInspector | None = None
        self.scp: SCPInspector | None = None  # legacy scp: each file decided
        self.editor: LineEditor | None = None
        self.script: ScriptReader | None = None  # a shell's commands read from stdin
        self._script_queue: deque[ScriptItem] = deque()
        self._script_allowed = False  # the last command read from stdin went on
        self._script_eof = False  # EOF is due once the queue is through
        self._early_eof = False  # EOF came before the target's channel was open
        self._settled: asyncio.Event | None = None  # set when SFTP requests are all answered
        self._held_eof = False  # EOF came while a typed line was held: sent after it
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._out_decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._held = False
        self._backlog: list[str] = []
        self._early: list[tuple[bytes, asyncssh.DataType]] = []
        self._prompt_tail = ""
        self._continued = ""  # earlier lines of a multi-line command
        self._keyed_at: float | None = None  # when the line being typed began
        self._unechoed: list[str] = []  # recorded input kept back until it is echoed
        self._unechoed_size = 0
        self._continued_unechoed = False  # part of the continued command was not echoed
        self._screen_tail = b""  # an escape sequence cut at the end of the last output
        self._output_at = 0.0  # when the remote last wrote to a terminal (loop time)
        self._echoed = False  # the remote wrote something since then (its echo)
        self._echo: asyncio.Event | None = None  # set on output while a line waits for it
        self._ended = False
        self.exit_status: int | None = None

    # ------------------------------------------------------------ requests

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan
        self.connection.channels.add(self)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self.term_type, self.term_size, self.term_modes = term_type, term_size, dict(term_modes)
        return True

    def shell_requested(self) -> bool:
        self.kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self.kind, self.command = "exec", command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            decision = Decision.deny("only the sftp subsystem is offered", "builtin:ssh")
            event = {"name": subsystem[:64], **_decision_fields(decision)}
            self.connection.decided("ssh.subsystem", event, decision)
            return False
        self.kind, self.subsystem = "sftp", subsystem
        return True

    def session_started(self) -> None:
        self.connection.spawn(self._start())

    # ---------------------------------------------------------------- start

    async def _start(self) -> None:
        try:
            await self._begin()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("[client=%s] channel failed", self.connection.client_addr)
            self.fail("jitgate: internal error", 255)

    async def _begin(self) -> None:
        conn = self.connection
        assert conn.policy is not None and self.chan is not None
        try:  # the session is recorded and the target reachable before anything is decided
            upstream = await conn.upstream_ready()
        except asyncssh.ChannelOpenError as exc:
            self.fail(exc.reason, 255)
            return
        policy = conn.policy
        decision: Decision
        event: dict[str, Any] = {"kind": self.kind}
        text = ""
        reads_script = self.kind == "shell"
        refusal = conn.recording_refusal()
        if self.kind == "shell":
            decision = refusal or policy.shell()
            text = "(interactive shell)"
        elif self.kind == "exec":
            assert self.command is not None
            text = self.command
            event["command"] = self.command
            line = classify(self.command)
            scp = parse_scp(line)
            server = _sftp_server(line)
            if server is not None:
                # The SFTP server run by name (`sftp -s /usr/lib/openssh/sftp-server`): its
                # file operations are inspected like the subsystem's; inside a longer
                # command line they could not be.
                event["kind"] = "sftp"
                if server:
                    self.kind = "sftp"
                    decision = refusal or policy.command(line)
                    self.sftp = self._sftp_inspector()
                else:
                    decision = Decision.deny(
                        "the SFTP server runs only as the sftp subsystem or as the whole "
                        "command, where its file operations are inspected",
                        "builtin:sftp-server",
                    )
            elif scp is not None:
                home = await conn.home_dir()
                op = file_operation("scp", (scp.path,), scp.upload, home)
                event["kind"] = "scp"
                event["path"] = op.paths[0]
                event["mode"] = "write" if scp.upload else "read"
                decision = refusal or policy.file(op.op, op.paths, op.write)
                if op.unresolved:
                    decision = Decision.deny(
                        "a relative path that leaves the home directory cannot be checked",
                        "builtin:sftp-path",
                    )
                self.scp = SCPInspector(self._decide_scp_file, scp, home)
            else:
                reads_script = stdin_use(line).commands
                line = _stdin_checked(line)
                if line.names:
                    event["commands"] = list(line.names)
                if line.dangerous:
                    event["dangerous"] = list(line.dangerous)
                if line.unknown:
                    event["unknown"] = line.error or True
                decision = refusal or policy.command(line)
        else:
            decision = refusal or Decision.allow("builtin:sftp-subsystem")
            self.sftp = self._sftp_inspector()
        event.update(_decision_fields(decision))
        if decision.outcome is Outcome.REVIEW:
            decision = await self._review(text, decision)
            event["review"] = decision.outcome.value
            event["review_by"] = list(decision.policies)  # the request and its approvers
        if not conn.decided("ssh.channel", event, decision):
            decision = Decision.deny(_UNRECORDED, "builtin:recording-failed")
        if not decision.allowed:
            what = "the shell" if self.kind == "shell" else repr(text[:200])
            why = decision.reason or "denied"
            if isinstance(event.get("unknown"), str):
                why += f" ({event['unknown']})"
            self.fail(f"jitgate: {what} was denied: {why}", 1)
            return
        if self.sftp is not None:
            self.sftp.home = await conn.home_dir()
        env = self._allowed_env()
        pty = self.term_type is not None
        if pty and self.kind in ("shell", "exec"):  # interactive: typed lines are checked
            self.editor = LineEditor()
        elif reads_script:  # a shell reads its commands from stdin: each one is checked
            self.script = ScriptReader()
        try:
            up_chan, side = await asyncio.wait_for(
                upstream.conn.create_session(
                    lambda: UpstreamChannel(self),
                    command=self.command,
                    subsystem=self.subsystem,
                    env=env,
                    term_type=self.term_type,
                    term_size=self.term_size,
                    term_modes=self.term_modes,
                    request_pty="force" if pty else False,
                    encoding=None,
                ),
                self.settings.connect_timeout,
            )
        except asyncssh.ChannelOpenError as exc:
            self.fail(f"jitgate: the target refused the channel: {exc.reason}", 255)
            return
        except (TimeoutError, asyncssh.Error, OSError) as exc:
            self.fail(f"jitgate: the target did not open the channel ({type(exc).__name__})", 255)
            return
        if self._ended:  # the client went away while the channel was being opened
            up_chan.close()
            return
        self.up_chan, self.upstream_side = up_chan, cast(UpstreamChannel, side)
        if self.term_size is not None and conn.recorder is not None and pty:
            conn.recorder.resize(self.term_size[0], self.term_size[1])
        early, self._early = self._early, []
        for data, datatype in early:
            self.data_received(data, datatype)
        if self._early_eof:
            self.eof_received()
        if not self._held:
            self.chan.resume_reading()

    async def _review(self, text: str, decision: Decision) -> Decision:
        conn = self.connection
        assert conn.who is not None and conn.recorder is not None and conn.info is not None
        approvals = conn.gateway.settings.approvals
        who = conn.who
        wait = approvals.agents_wait or not (who.actor or who.principal.is_agent)
        try:
            return await resolve_review(
                conn.gateway.access,
                who,
                connection=conn.info.name,
                text=text,
                key=f"ssh:{text}",
                decision=decision,
                session_id=conn.recorder.session_id,
                wait=wait,
                timeout=approvals.hold_timeout_seconds,
                poll_interval=approvals.poll_interval_seconds,
                tell=lambda message: self.tell(message),
                public_url=conn.gateway.settings.api.public_url,
            )
        except Exception as exc:  # fail closed
            log.exception("[client=%s] resolving a review failed", conn.client_addr)
            return Decision.deny(
                f"the approval could not be handled: {type(exc).__name__}", *decision.policies
            )

    def _allowed_env(self) -> dict[bytes | str, bytes | str]:
        assert self.chan is not None and self.connection.policy is not None
        allowed: dict[bytes | str, bytes | str] = {}
        denied: list[str] = []
        for raw_name, value in self.chan.get_environment().items():
            name = str(raw_name)
            if self.connection.policy.env(name).allowed:
                allowed[name] = str(value)
            else:
                denied.append(name)
        if denied:
            self.connection.record("ssh.env", {"denied": sorted(denied)[:64]})
        return allowed

    def _sftp_inspector(self) -> SFTPInspector:
        return SFTPInspector(self._decide_file, self.settings.max_sftp_packet, resolve_links=True)

    def _decide_scp_file(self, path: str, write: bool) -> str | None:
        return self._decide_file(FileOperation("scp", (path,), write))

    def _decide_file(self, op: FileOperation) -> str | None:
        conn = self.connection
        assert conn.policy is not None
        decision = conn.recording_refusal() or conn.policy.file(op.op, op.paths, op.write)
        if op.unresolved:
            decision = Decision.deny(op.unresolved, "builtin:sftp-path")
        if decision.outcome is Outcome.REVIEW:
            why = f"{decision.reason or 'needs approval'} (file operations cannot wait)"
            decision = Decision.deny(why, *decision.policies)
        if not conn.decided("sftp", request_event(op, decision), decision):
            return _UNRECORDED
        return None if decision.allowed else decision.reason or "denied"

    # ---------------------------------------------------------- client data

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        up_chan = self.up_chan
        if up_chan is None:  # the upstream channel is not open yet: hold (bounded by pausing)
            self._early.append((data, datatype))
            if self.chan is not None:
                self.chan.pause_reading()
            return
        self.connection.bytes_in += len(data)
        if self.sftp is not None:
            self._sftp_requests(data)
            return
        if self.scp is not None and datatype is None:
            upload = self.scp.request.upload
            try:
                to_server, to_client = (
                    self.scp.from_source(data) if upload else self.scp.from_sink(data)
                )
            except SCPProtocolError as exc:
                self.fail(f"jitgate: {exc}", 255)
                return
            if to_client and self.chan is not None:
                self.chan.write(to_client)
            if to_server:
                up_chan.write(to_server)
            return
        if self.script is not None:
            self._script_queue.extend(self.script.feed(data))
            if not self._held:
                self._run_script()
            return
        if self.editor is not None:
            if self._held:
                self._backlog.append(self._decoder.decode(data))
                return
            self._typed(self._decoder.decode(data))
            return
        up_chan.write(data, datatype)

    def _typed(self, text: str, *, record: bool = True) -> None:
        """Relay typed text, stopping at each completed line for policy."""
        assert self.editor is not None and self.up_chan is not None
        if record and self.settings.record_input and self.connection.recorder is not None:
            if _SECRET_PROMPT.search(self._prompt_tail):  # typed at a password prompt
                self.connection.recorder.terminal("i", _redacted(text))
            elif self._keyed_at is not None and self._echoed:
                self.connection.recorder.terminal("i", text)
            else:  # kept until the remote echoes it (or, at Enter, does not: redacted)
                self._unechoed.append(text)
                self._unechoed_size += len(text)
                if self._unechoed_size > MAX_UNECHOED:
                    self._flush_input(echoed=False)
        pos = 0
        while pos < len(text):
            end, line = self.editor.feed_line(text, pos)
            if line is None:
                if end > pos:
                    self._keyed(text[pos:end])
                return
            if end - 1 > pos:
                self._keyed(text[pos : end - 1])
            enter = text[end - 1].encode()
            if not self._line_entered(line, enter, text[end:]):
                return  # held; the rest is relayed when the line is decided
            pos = end

    def _keyed(self, text: str) -> None:
        """Relay typed characters (not Enter); the first of a line starts the echo watch."""
        assert self.up_chan is not None
        if self._keyed_at is None:
            self._keyed_at = asyncio.get_running_loop().time()
            self._echoed = False
        self.up_chan.write(text.encode("utf-8", "surrogateescape"))

    def _line_entered(self, typed: TypedLine, enter: bytes, rest: str) -> bool:
        """A line was entered; True when the caller may go on with the rest.

        A line the remote does not echo (echo is off: a password being typed) is never
        written to the recording: its input frames and its text are redacted. It is a
        secret (not put to policy either) only when the remote also asked for one: a
        prompt that merely looks like one (``PS1='token: '``) echoes, and a shell with
        echo turned off (``stty -echo``) has its lines decided as usual, unrecorded. When
        Enter comes before the remote could echo (typed fast, pasted), the line is held
        until the echo arrives or ``ECHO_WAIT`` has passed since its first character.
        """
        keyed_at = self._keyed_at
        if keyed_at is None or self._echoed or not typed.text:
            return self._decide_line(typed, enter, rest, echoed=True)
        wait = keyed_at + ECHO_WAIT - asyncio.get_running_loop().time()
        if wait <= 0:
            return self._decide_line(typed, enter, rest, echoed=False)
        self._held = True
        assert self.chan is not None
        self.chan.pause_reading()
        self.connection.spawn(self._await_echo(typed, enter, rest, wait))
        return False

    async def _await_echo(self, typed: TypedLine, enter: bytes, rest: str, wait: float) -> None:
        self._echo = asyncio.Event()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._echo.wait(), wait)
        finally:
            self._echo = None
        self._held = False
        if self._decide_line(typed, enter, rest, echoed=self._echoed):
            self._resume(rest)

    def _flush_input(self, *, echoed: bool) -> None:
        """Write the typed input kept back while its echo was awaited."""
        held, self._unechoed, self._unechoed_size = self._unechoed, [], 0
        recorder = self.connection.recorder
        if held and recorder is not None:
            text = "".join(held)
            recorder.terminal("i", text if echoed else _redacted(text))

    def _decide_line(self, typed: TypedLine, enter: bytes, rest: str, *, echoed: bool) -> bool:
        """Decide one typed line; True when the caller may go on with the rest."""
        assert self.up_chan is not None
        conn = self.connection
        secret = not echoed and bool(_SECRET_PROMPT.search(self._prompt_tail))
        self._flush_input(echoed=echoed)
        self._prompt_tail = ""
        self._keyed_at = None
        assert self.editor is not None
        if self.editor.interrupted:  # Ctrl-C ended any multi-line command being typed
            self.editor.interrupted = False
            self._continued = ""
            self._continued_unechoed = False
        if secret or (not typed.text.strip() and not self._continued):
            if secret:
                conn.record("ssh.line", {"secret": True})
            self.up_chan.write(enter)
            return True
        text = self._continued + typed.text
        unechoed = self._continued_unechoed or not echoed
        line = classify(text)
        if line.incomplete and len(text) < MAX_CONTINUED and text.count("\n") < 100:
            # The shell will ask for more (an open quote, `do`, a trailing `|`): nothing
            # runs yet, so the whole command is decided when its last line is entered.
            self._continued = text + "\n"
            self._continued_unechoed = unechoed
            self.up_chan.write(enter)
            return True
        self._continued = ""
        self._continued_unechoed = False
        typed = TypedLine(text, typed.uncertain, typed.reasons)
        assert conn.policy is not None
        decision = conn.recording_refusal() or conn.policy.command(line, interactive=True)
        if typed.uncertain and decision.allowed and self.settings.uncertain_lines == "deny":
            decision = Decision.deny(
                "this line could not be reconstructed exactly "
                f"({', '.join(typed.reasons)}); type it out in full",
                "builtin:uncertain-line",
            )
        event: dict[str, Any] = {"text": typed.text, **_decision_fields(decision)}
        if typed.uncertain:
            event["uncertain"] = list(typed.reasons)
        if line.names:
            event["commands"] = list(line.names)
        if unechoed:  # echo was off: what was typed (and what policy said of it) stays out
            if decision.reason:  # a reason may quote the line ({tag}, {dangerous})
                decision = dataclasses.replace(decision, reason="refused by policy")
            event = {"text": UNECHOED, "redacted": "not echoed", **_decision_fields(decision)}
            typed = TypedLine(UNECHOED, typed.uncertain, typed.reasons)
        if decision.outcome is Outcome.REVIEW:
            self._held = True
            assert self.chan is not None
            self.chan.pause_reading()
            self.connection.spawn(self._hold_line(typed, decision, enter, rest, event))
            return False
        if not conn.decided("ssh.line", event, decision):
            decision = Decision.deny(_UNRECORDED, "builtin:recording-failed")
        return self._apply_line(decision, typed, enter, rest)

    async def _hold_line(
        self, typed: TypedLine, decision: Decision, enter: bytes, rest: str, event: dict[str, Any]
    ) -> None:
        self.tell(f"jitgate: {typed.text!r} needs approval: {decision.reason}")
        final = await self._review(typed.text, decision)
        event["review"] = final.outcome.value
        event["review_by"] = list(final.policies)
        if not self.connection.decided("ssh.line", event, final):
            final = Decision.deny(_UNRECORDED, "builtin:recording-failed")
        if self._apply_line(final, typed, enter, rest):
            self._held = False
            self._resume(rest)

    def _resume(self, rest: str) -> None:
        """A held line is decided: relay what was typed after it, then read again."""
        queue = [(rest, False)] + [(text, True) for text in self._backlog]
        self._backlog = []
        while queue and not self._held:
            text, record = queue.pop(0)
            if text:
                self._typed(text, record=record)
        if self._held:  # another line is held: keep what is left for its turn
            self._backlog = [text for text, _ in queue] + self._backlog
            return
        self._read_on()

    def _read_on(self) -> None:
        """Nothing is held any more: pass on the client's EOF if it waited behind what was
        held, else read the client again."""
        if self._held_eof and self.up_chan is not None:
            self._held_eof = False
            self.up_chan.write_eof()
        elif self.chan is not None:
            self.chan.resume_reading()

    def _apply_line(self, decision: Decision, typed: TypedLine, enter: bytes, rest: str) -> bool:
        """Send Enter for an allowed line (True: the caller goes on with the rest), or
        cancel a denied one (False: the cancelling task goes on with the rest)."""
        assert self.up_chan is not None and self.chan is not None
        if decision.allowed:
            self.up_chan.write(enter)
            return True
        self.tell(f"jitgate: {typed.text[:200]!r} was denied: {decision.reason or 'denied'}")
        self._held = True
        self.chan.pause_reading()
        self.connection.spawn(self._cancel_line(rest))
        return False

    async def _cancel_line(self, rest: str) -> None:
        """Cancel a denied line once the remote has been quiet for a moment. Readline
        notices a Ctrl-C that arrives while it is busy (still echoing what was typed) only
        when the next key comes: the shell would show no fresh prompt until then."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not self._ended:
            quiet = loop.time() - self._output_at
            if quiet >= CANCEL_QUIET or loop.time() - started >= CANCEL_WAIT:
                break
            await asyncio.sleep(CANCEL_QUIET - quiet)
        if self.up_chan is not None and not self._ended:
            self.up_chan.write(_CANCEL_LINE)
        self._held = False
        self._resume(rest)

    def _sftp_requests(self, data: bytes) -> None:
        """Relay the client's SFTP requests; one that names a path is held (and so are
        those after it) while the path is resolved on the target."""
        assert self.sftp is not None
        if self._feed_sftp(data) and self.sftp.needs and not self._held:
            assert self.chan is not None
            self._held = True
            self.chan.pause_reading()
            self.connection.spawn(self._resolve_sftp_paths())

    def _feed_sftp(self, data: bytes) -> bool:
        assert self.sftp is not None and self.up_chan is not None
        try:
            forward, replies = self.sftp.from_client(data)
        except SFTPProtocolError as exc:
            self.fail(f"jitgate: {exc}", 255)
            return False
        self._record_sftp()
        if replies and self.chan is not None:
            self.chan.write(replies)
        if forward:
            self.up_chan.write(forward)
        return True

    async def _resolve_sftp_paths(self) -> None:
        """Look up the paths the inspector needs once every request before them has been
        answered (a link they create or remove counts), then feed on. A path that cannot
        be resolved in time is refused."""
        assert self.sftp is not None
        while self.sftp.needs and not self._ended:
            needs = self.sftp.needs
            try:
                async with asyncio.timeout(self.settings.connect_timeout):
                    while not self.sftp.settled:
                        self._settled = asyncio.Event()
                        await self._settled.wait()
                    sftp = await self.connection.target_sftp()
                    self.sftp.found(await real_paths(sftp, needs))
            except (TimeoutError, asyncssh.Error, OSError) as exc:
                log.info(
                    "[client=%s] SFTP path lookup failed: %s", self.connection.client_addr, exc
                )
                self.sftp.found(dict.fromkeys(needs))
            finally:
                self._settled = None
            if not self._feed_sftp(b""):
                return
        self._held = False
        if self._ended:
            return
        self._read_on()

    def _record_sftp(self) -> None:
        assert self.sftp is not None
        if self.sftp.events:
            for event in self.sftp.drain_events():
                self.connection.record("sftp", event)

    def eof_received(self) -> bool:
        if self.up_chan is None:  # before the target's channel is open: after the early data
            self._early_eof = True
            return True
        if self.script is not None:
            self._script_queue.extend(self.script.end())
            self._script_eof = True
            if not self._held:
                self._run_script()
            return True
        if self._held:  # asyncssh reports EOF even while reading is paused: keep the
            self._held_eof = True  # order, the held line and what followed it go first
            return True
        self.up_chan.write_eof()
        return True

    # ---------------------------------------------------- commands from stdin

    def _run_script(self) -> None:
        """Decide the commands read from stdin, in order, until one is held for review."""
        up_chan, conn = self.up_chan, self.connection
        assert up_chan is not None and conn.policy is not None
        queue = self._script_queue
        while queue and not self._held:
            item = queue.popleft()
            if isinstance(item, ScriptData):
                if self._script_allowed:
                    up_chan.write(item.data)
                continue
            if item.empty:
                self._script_allowed = True
                up_chan.write(item.data)
                continue
            item = dataclasses.replace(item, line=_stdin_checked(item.line))
            decision = conn.recording_refusal() or conn.policy.command(item.line, interactive=True)
            event: dict[str, Any] = {"text": item.text, "source": "stdin"}
            event.update(_decision_fields(decision))
            if item.line.names:
                event["commands"] = list(item.line.names)
            if item.line.unknown:
                event["unknown"] = item.line.error or True
            if decision.outcome is Outcome.REVIEW:
                self._held = True
                assert self.chan is not None
                self.chan.pause_reading()
                conn.spawn(self._hold_script(item, decision, event))
                return
            if not conn.decided("ssh.line", event, decision):
                decision = Decision.deny(_UNRECORDED, "builtin:recording-failed")
            self._apply_script(decision, item)
        if not queue and not self._held and self._script_eof:
            self._script_eof = False
            up_chan.write_eof()

    async def _hold_script(
        self, item: ScriptCommand, decision: Decision, event: dict[str, Any]
    ) -> None:
        self.tell(f"jitgate: {item.text[:200]!r} needs approval: {decision.reason}")
        final = await self._review(item.text, decision)
        event["review"] = final.outcome.value
        event["review_by"] = list(final.policies)
        if not self.connection.decided("ssh.line", event, final):
            final = Decision.deny(_UNRECORDED, "builtin:recording-failed")
        self._apply_script(final, item)
        self._held = False
        if self.up_chan is not None and not self._ended:
            self._run_script()
            if not self._held and self.chan is not None:
                self.chan.resume_reading()

    def _apply_script(self, decision: Decision, item: ScriptCommand) -> None:
        assert self.up_chan is not None
        self._script_allowed = decision.allowed
        if decision.allowed:
            self.up_chan.write(item.data)
            return
        why = decision.reason or "denied"
        if item.line.unknown and item.line.error:
            why += f" ({item.line.error})"
        self.tell(f"jitgate: {item.text[:200]!r} was denied: {why}")

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.term_size = (width, height, pixwidth, pixheight)
        if self.up_chan is not None:
            self.up_chan.change_terminal_size(width, height, pixwidth, pixheight)
            if self.connection.recorder is not None:
                self.connection.recorder.resize(width, height)

    def signal_received(self, signal: str) -> None:
        if self.up_chan is not None:
            self.up_chan.send_signal(signal)
        self.connection.record("ssh.signal", {"signal": signal[:32]})

    def break_received(self, msec: int) -> bool:
        if self.up_chan is not None:
            self.up_chan.send_break(msec)
        return True

    def pause_writing(self) -> None:
        if self.up_chan is not None:
            self.up_chan.pause_reading()

    def resume_writing(self) -> None:
        if self.up_chan is not None:
            self.up_chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.channels.discard(self)
        self._ended = True
        if self.up_chan is not None:
            self.up_chan.close()

    # -------------------------------------------------------------- output

    def tell(self, message: str) -> None:
        """A line from the gateway to the user: on the terminal or on stderr."""
        chan = self.chan
        if chan is None or self._ended:
            return
        data = ("\r\n" + message + "\r\n").encode() if self.term_type else (message + "\n").encode()
        with contextlib.suppress(Exception):
            if self.term_type:
                chan.write(data)
            else:
                chan.write_stderr(data)
        if self.term_type and self.connection.recorder is not None:
            with contextlib.suppress(OSError):
                self.connection.recorder.terminal("o", data.decode())

    def fail(self, message: str, status: int) -> None:
        self.tell(message)
        if self.chan is not None and not self._ended:
            with contextlib.suppress(Exception):
                self.chan.exit(status)

    def output(self, data: bytes, datatype: asyncssh.DataType) -> None:
        chan = self.chan
        if chan is None:
            return
        self.connection.bytes_out += len(data)
        if self.scp is not None and datatype is None:
            upload = self.scp.request.upload
            try:
                to_client, to_server = (
                    self.scp.from_sink(data) if upload else self.scp.from_source(data)
                )
            except SCPProtocolError as exc:
                self.fail(f"jitgate: {exc}", 255)
                return
            if to_server and self.up_chan is not None:
                self.up_chan.write(to_server)
            data = to_client
            if not data:
                return
        elif self.sftp is not None:
            try:
                self.sftp.from_server(data)
            except SFTPProtocolError as exc:
                self.fail(f"jitgate: {exc}", 255)
                return
            self._record_sftp()
            if self._settled is not None and self.sftp.settled:
                self._settled.set()
        elif self.term_type is not None:
            self._output_at = asyncio.get_running_loop().time()
            text = self._out_decoder.decode(data)
            recorder = self.connection.recorder
            if recorder is not None:
                try:
                    recorder.terminal("o", text)
                except OSError:
                    self.connection.terminate("jitgate: the session cannot be recorded any more")
                    return
            if self.editor is not None:
                if self._keyed_at is not None and not self._echoed:
                    self._echoed = True
                    self._flush_input(echoed=True)
                    if self._echo is not None:
                        self._echo.set()
                if self._screen_tail or b"\x1b" in data:
                    self._watch_screen(data)
                tail = (self._prompt_tail + text)[-200:]
                self._prompt_tail = tail
        chan.write(data, datatype)

    def _watch_screen(self, data: bytes) -> None:
        """Follow the switches to and from the alternate screen, even when a switch is
        cut between two writes of the remote."""
        assert self.editor is not None
        scan = self._screen_tail + data
        for m in _ALT_SCREEN.finditer(scan):
            full = m.group(2) == b"h"
            if full != self.editor.full_screen:
                self.editor.set_screen(full)
                self._continued = ""  # a command being continued was not the shell's
                self._continued_unechoed = False
        last = scan.rfind(b"\x1b", max(0, len(scan) - 8))
        tail = scan[last:] if last >= 0 else b""
        self._screen_tail = tail if any(p.startswith(tail) for p in _ALT_PREFIXES) else b""

    def upstream_closed(
        self, status: int | None, signal: tuple[str, bool, str, str] | None
    ) -> None:
        self.exit_status = status
        data: dict[str, Any] = {"kind": self.kind}
        if status is not None:
            data["exit_status"] = status
        if signal is not None:
            data["exit_signal"] = signal[0]
        self.connection.record("ssh.exit", data)
        chan = self.chan
        if chan is None or self._ended:
            return
        with contextlib.suppress(Exception):
            if signal is not None:
                chan.exit_with_signal(*signal)
            elif status is not None:
                chan.exit(status)
            else:
                chan.close()


class UpstreamChannel(asyncssh.SSHClientSession[bytes]):
    """The target's side of a relayed session channel."""

    def __init__(self, client: ClientChannel) -> None:
        self.client = client
        self.chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.status: int | None = None
        self.signal: tuple[str, bool, str, str] | None = None

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.client.output(data, datatype)

    def eof_received(self) -> bool:
        chan = self.client.chan
        if chan is not None and not self.client._ended:
            with contextlib.suppress(Exception):
                chan.write_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.signal = (signal, core_dumped, msg, lang)

    def pause_writing(self) -> None:
        if self.client.chan is not None:
            self.client.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.client.chan is not None and not self.client._held:
            self.client.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_closed(self.status, self.signal)


# ------------------------------------------------------------------------- helpers


_SFTP_SERVERS = frozenset({"sftp-server", "internal-sftp"})


def _sftp_server(line: CommandLine) -> bool | None:
    """Does an exec run the SFTP server? True: it is the whole command (its wrappers
    aside); False: it is part of a longer line; None: it does not."""
    if not any(name in _SFTP_SERVERS for name in line.names):
        return None
    if line.unknown or line.dynamic or len(line.commands) != 1 or line.commands[0].redirects:
        return False
    argv = list(line.commands[0].argv)
    try:  # nothing but words: no `&`, `;` or other operator around it
        words = shlex.split(line.text)
    except ValueError:
        return False
    return words[-len(argv) :] == argv


def _stdin_checked(line: CommandLine) -> CommandLine:
    """The line, decided as unknown when it may run its standard input unseen: an
    interpreter reading its program from it (``python3 -``, ``psql``), ``xargs sh -c``, a
    shell behind a filter (``base64 -d | bash``). Policy fails closed on it, as on any
    line the gateway cannot follow; a shell reading stdin directly (``cat | bash``) has
    each command it reads decided instead (:class:`ScriptReader`)."""
    uncertain = stdin_use(line).uncertain
    if uncertain is None:
        return line
    return dataclasses.replace(line, unknown=True, error=uncertain)


def _redacted(text: str) -> str:
    return re.sub(r"[^\r\n]", "*", text)


def _decision_fields(decision: Decision) -> dict[str, Any]:
    data: dict[str, Any] = {
        "decision": decision.outcome.value,
        "policies": list(decision.policies),
    }
    if decision.reason:
        data["reason"] = decision.reason
    return data
