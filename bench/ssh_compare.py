"""SSH side by side: OpenSSH clients straight to sshd vs through the jitgate SSH gateway.

Run: ``python -m bench.ssh_compare [--size-mb 200] [--rounds 3] [--keystrokes 300]
[--cipher aes128-gcm@openssh.com]``

One throwaway ``sshd`` (tests/fixtures/sshd.py: loopback port, generated keys) and one
in-process gateway (the same SSHListener ``jitgate serve`` runs, on uvloop, in a thread of
this process). Measured:

* scp of a ``--size-mb`` random file, upload and download, default (SFTP-based) scp;
  rounds interleave direct and gateway runs; the table shows the median throughput and
  the ratio gateway/direct (target ≥ 0.5). Both routes use the same cipher (``--cipher``,
  given to the OpenSSH clients with ``-c``; the gateway's upstream leg prefers AES-GCM
  too), so the ratio measures the gateway, not a cipher choice;
* keystroke echo round trip in a PTY session: ``ssh -tt`` on a local pseudo-terminal runs
  ``cat`` under the remote terminal's echo; one byte is typed and the time until its echo
  comes back is measured, ``--keystrokes`` times; the table shows median and p95, and the
  added median latency (target ≤ 1 ms), and the CPU time this process (the gateway, and
  the few system calls of the typing loop) spent per keystroke on each route.

The last lines are ``VERDICT`` lines: each measure against its target, PASS or FAIL.

The gateway records everything as it would in production (SFTP operations, terminal
frames), and typed lines go through the line reconstruction.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.fixtures.sshd import OpenSSH, Sshd, SSHGateway, run_ssh_gateway, run_sshd


def _ssh_options(known_hosts: Path, key: Path) -> list[str]:
    return [
        "-F", "/dev/null", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "StrictHostKeyChecking=yes", "-o", "IdentityAgent=none",
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        "-i", str(key),
    ]  # fmt: skip


class Route:
    """How to reach the target: straight to sshd, or via the gateway."""

    def __init__(self, name: str, port: int, login: str, options: list[str]) -> None:
        self.name, self.port, self.login, self.options = name, port, login, options

    def scp(self, source: str, dest: str) -> float:
        started = time.perf_counter()
        subprocess.run(
            ["scp", *self.options, "-q", "-P", str(self.port), source, dest],
            check=True, stdin=subprocess.DEVNULL, timeout=600,
        )  # fmt: skip
        return time.perf_counter() - started

    def remote(self, path: Path) -> str:
        return f"{self.login}@127.0.0.1:{path}"

    @contextlib.contextmanager
    def terminal(self) -> Iterator[int]:
        master, slave = os.openpty()
        argv = ["ssh", *self.options, "-tt", "-p", str(self.port), f"{self.login}@127.0.0.1"]
        process = subprocess.Popen(
            [*argv, "stty -icanon; exec cat > /dev/null"],
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        try:
            time.sleep(0.5)
            _drain(master, 1.0)
            yield master
        finally:
            process.kill()
            process.wait(10)
            os.close(master)


def _drain(fd: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return
        try:
            os.read(fd, 65536)
        except OSError:
            return


def keystroke_latencies(route: Route, count: int) -> tuple[list[float], float]:
    """Echo round trips (ms) and this process's CPU time per keystroke (µs)."""
    samples: list[float] = []
    cpu = 0.0
    with route.terminal() as fd:
        for i in range(count + 10):
            key = b"abcdefghij"[i % 10 : i % 10 + 1]
            if i == 10:
                cpu = time.process_time()
            started = time.perf_counter()
            os.write(fd, key)
            seen = b""
            while key not in seen:
                ready, _, _ = select.select([fd], [], [], 5)
                if not ready:
                    raise RuntimeError(f"no echo through {route.name}")
                seen += os.read(fd, 1024)
            if i >= 10:  # warm-up
                samples.append((time.perf_counter() - started) * 1000)
            time.sleep(0.002)
        cpu = (time.process_time() - cpu) / count * 1e6
    return samples, cpu


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def run(size_mb: int, rounds: int, keystrokes: int, cipher: str) -> None:
    with tempfile.TemporaryDirectory(prefix="jitgate-ssh-bench-") as tmp:
        root = Path(tmp)
        with run_sshd(root / "sshd") as sshd, run_ssh_gateway(root / "gw") as gw:
            direct, via = _routes(sshd, gw, root)
            for route in (direct, via):
                route.options += ["-c", cipher]
            verdicts: list[str] = []
            source = root / "payload.bin"
            with source.open("wb") as f:
                for _ in range(size_mb):
                    f.write(os.urandom(1 << 20))
            size = source.stat().st_size / 1e6
            results: dict[tuple[str, str], list[float]] = {}
            for _ in range(rounds):
                for route in (direct, via):
                    remote = root / f"remote-{route.name}.bin"
                    up = route.scp(str(source), route.remote(remote))
                    down = route.scp(route.remote(remote), str(root / f"back-{route.name}.bin"))
                    results.setdefault((route.name, "upload"), []).append(size / up)
                    results.setdefault((route.name, "download"), []).append(size / down)
                    remote.unlink()
            print(f"scp of {size_mb} MB (median of {rounds} rounds, cipher {cipher}), MB/s")
            print(f"  {'':10} {'direct':>10} {'jitgate':>10} {'ratio':>8}")
            for way in ("upload", "download"):
                d = statistics.median(results[("direct", way)])
                j = statistics.median(results[("jitgate", way)])
                print(f"  {way:10} {d:10.1f} {j:10.1f} {j / d:8.2f}")
                verdicts.append(
                    _verdict(f"scp {way}", j / d >= 0.5, f"{j / d:.2f}x direct", ">= 0.5x")
                )
            lat_direct, cpu_direct = keystroke_latencies(direct, keystrokes)
            lat_via, cpu_via = keystroke_latencies(via, keystrokes)
            md, mj = statistics.median(lat_direct), statistics.median(lat_via)
            print(f"keystroke echo round trip in a PTY ({keystrokes} keys), ms")
            print(f"  {'':10} {'median':>10} {'p95':>10} {'CPU us/key':>11}")
            print(f"  {'direct':10} {md:10.3f} {_p95(lat_direct):10.3f} {cpu_direct:11.0f}")
            print(f"  {'jitgate':10} {mj:10.3f} {_p95(lat_via):10.3f} {cpu_via:11.0f}")
            print(f"  added median latency: {mj - md:.3f} ms")
            added = f"{mj - md:+.3f} ms median"
            verdicts.append(_verdict("keystroke echo", mj - md <= 1.0, added, "<= 1 ms added"))
            for line in verdicts:
                print(line)


def _verdict(what: str, ok: bool, measured: str, target: str) -> str:
    return f"VERDICT {what}: {measured} (target {target}): {'PASS' if ok else 'FAIL'}"


def _routes(sshd: Sshd, gw: SSHGateway, root: Path) -> tuple[Route, Route]:
    known = root / "known_hosts_direct"
    known.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key_pub}\n")
    direct = Route("direct", sshd.port, sshd.user, _ssh_options(known, sshd.client_key))
    conn = gw.add_connection(sshd, "bench")
    gw.add_user("bench")
    key = gw.add_key("bench")
    via = Route("jitgate", gw.port, conn.name, OpenSSH(gw).options(key))
    return direct, via


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keystrokes", type=int, default=300)
    parser.add_argument(
        "--cipher", default="aes128-gcm@openssh.com", help="the cipher both routes use"
    )
    args = parser.parse_args()
    run(args.size_mb, args.rounds, args.keystrokes, args.cipher)


if __name__ == "__main__":
    main()
