"""``jitgate serve``: one asyncio process running the API and the protocol listeners.

Start-up order: configuration → data directory, keys, certificate → store migrations →
admin bootstrap → this process registered as a node of the store → sockets bound →
"serving" banner (stdout) and ``DATA_DIR/serve.json``.
SIGTERM or SIGINT starts a graceful shutdown: listeners stop accepting, open sessions
are closed with a protocol-native message, the API finishes in-flight requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Protocol

import uvicorn

import jitgate
from jitgate.api.app import create_app
from jitgate.config import ConfigError, Settings
from jitgate.server.gateway import Gateway
from jitgate.server.jobs import access_housekeeping, recording_housekeeping, start_node, stop_node

log = logging.getLogger("jitgate.serve")


class Listener(Protocol):
    """A protocol listener (PostgreSQL, SSH, …) run by the serve process."""

    name: str

    async def start(self) -> str:
        """Bind and start accepting; return the bound address for the banner."""

    async def stop(self) -> None:
        """Stop accepting and close every open session."""


class _APIServer(uvicorn.Server):
    """uvicorn without its own signal handling: the serve process owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"api.port: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    sock.set_inheritable(True)
    return sock


def _open_gateway(settings: Settings) -> Gateway:
    """:meth:`Gateway.open`, with any start-up failure as one :class:`ConfigError` line."""
    try:
        return Gateway.open(settings)
    except ConfigError:
        raise
    except Exception as exc:
        log.debug("start-up failed", exc_info=exc)
        raise ConfigError(f"start-up failed: {type(exc).__name__}: {exc}") from None


async def _start_listener(listener: Listener) -> str:
    try:
        return await listener.start()
    except ConfigError:
        raise
    except OSError as exc:
        raise ConfigError(
            f"listeners.{listener.name}: cannot listen: {exc.strerror or exc}"
        ) from None


def _url(host: str, port: int, *, tls: bool = False) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def build_listeners(gateway: Gateway) -> list[Listener]:
    listeners: list[Listener] = []
    pg = gateway.settings.listeners.postgres
    if pg.enabled:
        from jitgate.protocols.postgres.listener import PostgresListener

        listeners.append(PostgresListener(gateway))
    if gateway.settings.listeners.ssh.enabled:
        from jitgate.protocols.ssh.listener import SSHListener

        listeners.append(SSHListener(gateway))
    return listeners


async def run(settings: Settings) -> int:
    gateway = await asyncio.to_thread(_open_gateway, settings)
    with contextlib.suppress(OSError):  # left by a run that was killed: not where we are
        (gateway.paths.root / "serve.json").unlink()
    try:
        api_sock = _bind(settings.api.host, settings.api.port)
    except ConfigError:
        await asyncio.to_thread(gateway.close)
        raise
    api_port = api_sock.getsockname()[1]
    if not settings.api.tls and not _is_loopback(settings.api.host):
        log.warning(
            "the API on %s serves cleartext HTTP: tokens and credentials cross the network "
            "unencrypted; set api.tls: true (or put a TLS proxy in front)",
            settings.api.host,
        )
    config = uvicorn.Config(
        create_app(gateway),
        log_level=settings.log_level,
        lifespan="on",
        server_header=False,
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=10,
        ssl_certfile=str(gateway.tls_cert) if settings.api.tls else None,
        ssl_keyfile=str(gateway.tls_key) if settings.api.tls else None,
    )
    server = _APIServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    listeners = build_listeners(gateway)
    addresses: dict[str, str] = {}
    node = await asyncio.to_thread(start_node, gateway)  # before any session is recorded
    try:
        for listener in listeners:
            addresses[listener.name] = await _start_listener(listener)
        api_task = asyncio.create_task(server.serve(sockets=[api_sock]))
        while not server.started:
            if api_task.done():
                await api_task
                return 1
            await asyncio.sleep(0.01)
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's full passes, which would otherwise walk it again and again.
        gc.freeze()
        _announce(gateway, _url(settings.api.host, api_port, tls=settings.api.tls), addresses)
        jobs = asyncio.create_task(access_housekeeping(gateway, stop))
        recording_jobs = asyncio.create_task(recording_housekeeping(gateway, stop, node))
        stop_task = asyncio.create_task(stop.wait())
        await asyncio.wait({api_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down")
        server.should_exit = True
        stop.set()
        stop_task.cancel()
        await api_task
        await jobs
        await recording_jobs
    finally:
        for listener in listeners:
            with contextlib.suppress(Exception):
                await listener.stop()
        gateway.recorder.stop()  # the sessions are closed: the writer finishes and exits
        await asyncio.to_thread(stop_node, gateway, node)
        api_sock.close()
        await asyncio.to_thread(gateway.close)
        with contextlib.suppress(OSError):
            (gateway.paths.root / "serve.json").unlink()
    log.info("stopped")
    return 0


def _announce(gateway: Gateway, api_url: str, listeners: dict[str, str]) -> None:
    lines = [
        f"jitgate {jitgate.__version__} serving (data dir {gateway.paths.root})",
        f"  API                   {api_url}  (OpenAPI: {api_url}/openapi.json)",
    ]
    for name, address in listeners.items():
        lines.append(f"  {name + ' listener':<21} {address}")
    if gateway.admin_token_file:
        lines.append(f"  admin token written to {gateway.admin_token_file}")
    print("\n".join(lines), flush=True)
    state = {"pid": os.getpid(), "api": api_url, "listeners": listeners}
    (gateway.paths.root / "serve.json").write_text(json.dumps(state) + "\n")


def serve(settings: Settings) -> int:
    os.umask(0o077)  # everything the gateway writes in its data dir is private
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(run(settings))
