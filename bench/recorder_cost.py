"""What session recording costs: ``pgbench -S`` through jitgate with recording on vs off.

Run: ``python -m bench.recorder_cost [--seconds 10] [--rounds 3] [--clients 8]``

One throwaway PostgreSQL cluster, one ``jitgate serve`` (started as in
:mod:`bench.pgbench_compare`) with two connections to the same database: ``rec-on``
(recorded: every statement's request event written to the kernel before it is forwarded,
result events with a 5-row sample) and ``rec-off`` (``recording: false`` in its options:
the session row only). Rounds interleave the two so machine noise hits both alike; the
table shows medians, the TPS ratio (target: recording costs ≤ 10 %) and the gateway's CPU
time per transaction.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from bench.pgbench_compare import Result, Target, pgbench, start_jitgate
from tests.support.pgcluster import PgCluster


def add_connection(api: str, token: str, cluster: PgCluster, name: str, recording: bool) -> None:
    response = httpx.post(
        f"{api}/api/v1/connections",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": name, "type": "postgres", "host": "127.0.0.1", "port": cluster.port,
              "database": "bench", "username": cluster.superuser,
              "password": cluster.password, "tls_mode": "disable",
              "options": {"recording": recording}},
    )  # fmt: skip
    response.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jitgate-bench-rec-"))
    cluster = PgCluster(auth="scram-sha-256", settings={"shared_buffers": "'256MB'"})
    proc: subprocess.Popen[str] | None = None
    try:
        cluster.start()
        cluster.psql("CREATE DATABASE bench")
        direct = Target("direct", "127.0.0.1", cluster.port, "bench", cluster.superuser,
                        cluster.password)  # fmt: skip
        subprocess.run(["pgbench", "-i", "-q", "-s", str(args.scale), "-h", "127.0.0.1", "-p",
                        str(cluster.port), "-U", cluster.superuser, "bench"],
                       env=direct.env(), check=True, capture_output=True)  # fmt: skip
        proc, port, token = start_jitgate(cluster, work)
        api = json.loads((work / "data" / "serve.json").read_text())["api"]
        add_connection(api, token, cluster, "rec-on", True)
        add_connection(api, token, cluster, "rec-off", False)
        targets = [
            Target(name, "127.0.0.1", port, name, "admin", token, pid=proc.pid)
            for name in ("rec-on", "rec-off")
        ]
        c, t = str(args.clients), str(args.seconds)
        workloads = {
            "select-only simple (-S)": ["-S", "-c", c, "-j", "2", "-T", t],
            "select-only prepared (-S -M prepared)": ["-S", "-M", "prepared", "-c", c, "-j",
                                                      "2", "-T", t],
            "select-only, 1 client": ["-S", "-c", "1", "-T", t],
        }  # fmt: skip
        results = {w: {tg.name: Result() for tg in targets} for w in workloads}
        for round_no in range(args.rounds):
            for workload, wargs in workloads.items():
                order = targets if round_no % 2 == 0 else list(reversed(targets))
                for target in order:
                    tps, lat, cpu = pgbench(target, wargs)
                    res = results[workload][target.name]
                    res.tps.append(tps)
                    res.latency_ms.append(lat)
                    if cpu is not None:
                        res.cpu_us.append(cpu)
                    print(f"round {round_no + 1} {workload:<38} {target.name:<8} "
                          f"{tps:>9.0f} tps {lat:.3f} ms", file=sys.stderr, flush=True)  # fmt: skip
        recordings = list((work / "data" / "recordings").rglob("*.jsonl"))
        size = sum(p.stat().st_size for p in recordings)
        print("\n| workload | recording off tps | recording on tps | on/off | TPS loss "
              "| latency ms (off / on) | gateway CPU µs/txn (off / on) |")
        print("|---|---:|---:|---:|---:|---|---|")
        for workload, by in results.items():
            off, on = (statistics.median(by[n].tps) for n in ("rec-off", "rec-on"))
            loff, lon = (statistics.median(by[n].latency_ms) for n in ("rec-off", "rec-on"))
            coff, con = (
                statistics.median(by[n].cpu_us) if by[n].cpu_us else float("nan")
                for n in ("rec-off", "rec-on")
            )
            print(f"| {workload} | {off:.0f} | {on:.0f} | {on / off:.3f} | "
                  f"{(1 - on / off) * 100:.1f} % | {loff:.3f} / {lon:.3f} | "
                  f"{coff:.1f} / {con:.1f} |")  # fmt: skip
        print(f"\n{len(recordings)} recordings, {size / 1e6:.1f} MB written")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
