"""pgbench side by side: direct vs pgbouncer (session mode) vs a plain TCP relay in
Python vs jitgate (inspection on).

Run: ``python -m bench.pgbench_compare [--seconds 10] [--rounds 3] [--scale 10]``

Everything runs on one throwaway PostgreSQL cluster (initdb/pg_ctl on a free loopback
port). Rounds interleave the targets so that the machine's noise hits all of them alike;
the table shows the median of the rounds and the ratios. The Python relay
(:mod:`bench.tcp_relay`: uvloop, bytes forwarded unread) is the floor of any gateway in
Python: what it costs is socket and event-loop work that jitgate pays too. It also reports
the CPU time per transaction of pgbouncer, the relay and the gateway (from /proc,
independent of how busy the machine is), the latency one client adds, and the gateway's
RSS with N idle sessions open.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.pgcluster import PgCluster, free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Target:
    name: str
    host: str
    port: int
    dbname: str
    user: str
    password: str
    pid: int | None = None  # process whose CPU time we account

    def env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password, "PGSSLMODE": "disable"}


@dataclass
class Result:
    tps: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pgbench(target: Target, args: list[str]) -> tuple[float, float, float | None]:
    before = _cpu_seconds(target.pid) if target.pid else None
    out = subprocess.run(
        [
            "pgbench",
            "-h",
            target.host,
            "-p",
            str(target.port),
            "-U",
            target.user,
            *args,
            target.dbname,
        ],
        capture_output=True,
        text=True,
        env=target.env(),
        timeout=600,
    )
    after = _cpu_seconds(target.pid) if target.pid else None
    if out.returncode != 0:
        raise RuntimeError(f"pgbench on {target.name} failed: {out.stderr[-2000:]}")
    tps = float(re.search(r"tps = ([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    latency = float(re.search(r"latency average = ([\d.]+) ms", out.stdout).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"actually processed: (\d+)", out.stdout).group(1))  # type: ignore[union-attr]
    cpu = None
    if before is not None and after is not None and done:
        cpu = (after - before) / done * 1e6
    return tps, latency, cpu


def start_pgbouncer(cluster: PgCluster, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        raise SystemExit("pgbouncer is not installed (Debian package pgbouncer)")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "users.txt").write_text(f'"{cluster.superuser}" "{cluster.password}"\n')
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"bench = host=127.0.0.1 port={cluster.port} dbname=bench user={cluster.superuser} "
        f"password={cluster.password}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = md5\nauth_file = {workdir / 'users.txt'}\n"
        "pool_mode = session\nmax_client_conn = 2000\ndefault_pool_size = 200\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
    )
    argv = [binary, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        for child in workdir.iterdir():
            shutil.chown(child, "postgres")
        argv = ["runuser", "-u", "postgres", "--", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port)
    return proc, port


def _wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_jitgate(
    cluster: PgCluster, workdir: Path, extra_config: str = ""
) -> tuple[subprocess.Popen[str], int, str]:
    data = workdir / "data"
    config = workdir / "jitgate.yaml"
    pg_port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f"api:\n  port: 0\nlog_level: warning\nlisteners:\n  postgres:\n    port: {pg_port}\n"
        "    allow_cleartext_loopback: true\n"
        "  ssh:\n    enabled: false\n" + extra_config
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jitgate.cli.main",
            "serve",
            "--data-dir",
            str(data),
            "--config",
            str(config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while not (data / "serve.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("jitgate did not start")
        time.sleep(0.05)
    api = json.loads((data / "serve.json").read_text())["api"]
    token = (data / "admin.token").read_text().strip()
    response = httpx.post(
        f"{api}/api/v1/connections",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "name": "bench",
            "type": "postgres",
            "host": "127.0.0.1",
            "port": cluster.port,
            "database": "bench",
            "username": cluster.superuser,
            "password": cluster.password,
            "tls_mode": "disable",
        },
    )
    response.raise_for_status()
    return proc, pg_port, token


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _idle_sessions(target: Target, count: int) -> tuple[int, int]:
    import asyncpg  # type: ignore[import-untyped]

    assert target.pid is not None
    before = rss_kib(target.pid)
    connections = []
    sem = asyncio.Semaphore(50)

    async def one() -> None:
        async with sem:
            connections.append(
                await asyncpg.connect(
                    host=target.host,
                    port=target.port,
                    user=target.user,
                    password=target.password,
                    database=target.dbname,
                    ssl=False,
                    statement_cache_size=0,
                )
            )

    await asyncio.gather(*(one() for _ in range(count)))
    await asyncio.sleep(1)
    after = rss_kib(target.pid)
    await asyncio.gather(*(c.close() for c in connections))
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--idle-sessions", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jitgate-bench-"))
    work.chmod(0o755)  # pgbouncer runs as the postgres user and must enter it
    cluster = PgCluster(
        auth="scram-sha-256",
        settings={"max_connections": str(args.idle_sessions + 100), "shared_buffers": "'256MB'"},
    )
    procs: list[subprocess.Popen[bytes] | subprocess.Popen[str]] = []
    try:
        cluster.start()
        cluster.psql("CREATE DATABASE bench")
        direct = Target(
            "direct", "127.0.0.1", cluster.port, "bench", cluster.superuser, cluster.password
        )
        subprocess.run(
            [
                "pgbench",
                "-i",
                "-q",
                "-s",
                str(args.scale),
                "-h",
                "127.0.0.1",
                "-p",
                str(cluster.port),
                "-U",
                cluster.superuser,
                "bench",
            ],
            env=direct.env(),
            check=True,
            capture_output=True,
        )
        bouncer_proc, bouncer_port = start_pgbouncer(cluster, work / "pgbouncer")
        procs.append(bouncer_proc)
        bouncer = Target(
            "pgbouncer",
            "127.0.0.1",
            bouncer_port,
            "bench",
            cluster.superuser,
            cluster.password,
            pid=_child_pid(bouncer_proc),
        )
        relay_port = free_port()
        relay_proc = subprocess.Popen(
            [sys.executable, "-m", "bench.tcp_relay", str(relay_port), str(cluster.port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(relay_proc)
        _wait_port(relay_port)
        relay = Target(
            "py-relay",
            "127.0.0.1",
            relay_port,
            "bench",
            cluster.superuser,
            cluster.password,
            pid=relay_proc.pid,
        )
        gate_proc, gate_port, token = start_jitgate(cluster, work)
        procs.append(gate_proc)
        gateway = Target(
            "jitgate", "127.0.0.1", gate_port, "bench", "admin", token, pid=gate_proc.pid
        )
        targets = [direct, bouncer, relay, gateway]
        c = str(args.clients)
        t = str(args.seconds)
        workloads = {
            "select-only simple (-S)": ["-S", "-c", c, "-j", "2", "-T", t],
            "select-only extended": ["-S", "-M", "extended", "-c", c, "-j", "2", "-T", t],
            "select-only prepared": ["-S", "-M", "prepared", "-c", c, "-j", "2", "-T", t],
            "TPC-B": ["-c", c, "-j", "2", "-T", t],
            "select-only, 1 client": ["-S", "-c", "1", "-T", t],
        }
        results: dict[str, dict[str, Result]] = {
            w: {tg.name: Result() for tg in targets} for w in workloads
        }
        for round_no in range(args.rounds):
            for workload, wargs in workloads.items():
                for target in targets:
                    tps, lat, cpu = pgbench(target, wargs)
                    res = results[workload][target.name]
                    res.tps.append(tps)
                    res.latency_ms.append(lat)
                    if cpu is not None:
                        res.cpu_us.append(cpu)
                    print(
                        f"round {round_no + 1} {workload:<24} {target.name:<10} "
                        f"{tps:>9.0f} tps {lat:.3f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
        print_table(results)
        before, after = asyncio.run(_idle_sessions(gateway, args.idle_sessions))
        per = (after - before) / args.idle_sessions
        print(
            f"\njitgate RSS: {before} KiB idle, {after} KiB with {args.idle_sessions} idle "
            f"sessions open: {per:.1f} KiB per session"
        )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def _child_pid(proc: subprocess.Popen[bytes]) -> int | None:
    """pgbouncer may run under runuser; account the pgbouncer process itself."""
    time.sleep(0.2)
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    pids = out.stdout.split()
    return int(pids[0]) if pids else proc.pid


def print_table(results: dict[str, dict[str, Result]]) -> None:
    print(
        "\n| workload | direct tps | pgbouncer tps | Python relay tps | jitgate tps "
        "| jitgate/pgbouncer | relay/pgbouncer | jitgate/relay | jitgate/direct "
        "| latency ms (d / b / r / j) | CPU µs/txn (b / r / j) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for workload, by_target in results.items():
        med = {name: statistics.median(r.tps) for name, r in by_target.items()}
        lat = {name: statistics.median(r.latency_ms) for name, r in by_target.items()}
        cpu = {
            name: statistics.median(r.cpu_us) if r.cpu_us else float("nan")
            for name, r in by_target.items()
        }
        d, b, r, j = (med[n] for n in ("direct", "pgbouncer", "py-relay", "jitgate"))
        print(
            f"| {workload} | {d:.0f} | {b:.0f} | {r:.0f} | {j:.0f} | {j / b:.2f} | "
            f"{r / b:.2f} | {j / r:.2f} | {j / d:.2f} | {lat['direct']:.3f} / "
            f"{lat['pgbouncer']:.3f} / {lat['py-relay']:.3f} / {lat['jitgate']:.3f} | "
            f"{cpu['pgbouncer']:.1f} / {cpu['py-relay']:.1f} / {cpu['jitgate']:.1f} |"
        )
    one = results["select-only, 1 client"]
    added = statistics.median(one["jitgate"].latency_ms) - statistics.median(
        one["direct"].latency_ms
    )
    print(f"\nadded latency with one client (jitgate - direct): {added:.3f} ms")


if __name__ == "__main__":
    main()
