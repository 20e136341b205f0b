"""Run `jitgate serve` as a real process and drive it with the real `jitgate` CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

JITGATE = [sys.executable, "-m", "jitgate.cli.main"]


@dataclass
class Served:
    proc: subprocess.Popen[str]
    data_dir: Path
    api: str
    admin_token: str

    def cli(
        self, *args: str, token: str | None = None, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "JITGATE_SERVER": self.api,
            "JITGATE_TOKEN": token if token is not None else self.admin_token,
            "XDG_CONFIG_HOME": str(self.data_dir.parent / "xdg"),
        }
        result = subprocess.run(
            [*JITGATE, *args],
            input=stdin or "",
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"jitgate {' '.join(args)} failed: {result.stderr}")
        return result


def start_gateway(
    data_dir: Path, config: Path | None = None, extra_config: str = ""
) -> subprocess.Popen[str]:
    if config is None:
        config = data_dir.parent / "jitgate.yaml"
        config.write_text(
            "api:\n  port: 0\nlisteners:\n  postgres:\n    port: 0\n"
            "    allow_cleartext_loopback: true\n  ssh:\n    port: 0\n" + extra_config
        )
    return subprocess.Popen(
        [*JITGATE, "serve", "--data-dir", str(data_dir), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("JITGATE_")},
    )


def wait_ready(proc: subprocess.Popen[str], data_dir: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    state = data_dir / "serve.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early: {proc.stderr.read() if proc.stderr else ''}")
        if state.exists():
            try:
                return str(json.loads(state.read_text())["api"])
            except ValueError:
                pass
        time.sleep(0.05)
    raise AssertionError("serve did not become ready")


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


@contextmanager
def serving(data_dir: Path) -> Iterator[tuple[Served, int]]:
    """A real `jitgate serve` on its defaults (plus loopback cleartext), with the admin
    token and the PostgreSQL listener's port; stopped with SIGTERM afterwards."""
    proc = start_gateway(data_dir)
    try:
        api = wait_ready(proc, data_dir)
        token = (data_dir / "admin.token").read_text().strip()
        state = json.loads((data_dir / "serve.json").read_text())
        yield (
            Served(proc, data_dir, api, token),
            int(state["listeners"]["postgres"].rsplit(":", 1)[1]),
        )
    finally:
        if proc.poll() is None:
            stop(proc)
