"""Policy on the hot path and approval-to-release latency.

Run: ``python -m bench.policy_and_approval [--holds 20]``

1. The cost of a cached decision (a statement seen before in the session), through the
   same ``StatementGate`` + ``LiveEngine`` the PostgreSQL sessions use, next to an
   uncached Cedar evaluation. Target: ≤ 5 µs cached.
2. Approval-to-release latency on one node: a psycopg client runs ``DELETE FROM t`` (no
   WHERE: held for review) through an in-process gateway on a throwaway cluster; an
   approver approves through the REST API; we time from sending the approval to the
   client getting its result. Target: ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import timeit
from pathlib import Path

import httpx
import psycopg

from jitgate.api.app import create_app
from jitgate.identity.principal import Identity, IdentityKind
from jitgate.policy.gate import StatementGate
from jitgate.policy.service import LiveEngine
from jitgate.policy.types import Request, Target
from jitgate.sql import PostgresClassifier
from tests.fixtures.gateway import serve_app
from tests.fixtures.postgres_gateway import APP_PASSWORD, APP_USER, _start_cluster, run_pg_gateway


def decision_cost(gateway: object) -> tuple[float, float]:
    engine = LiveEngine(gateway.policies)  # type: ignore[attr-defined]
    gate = StatementGate(
        engine,
        principal=Identity("1", "alice", IdentityKind.USER),
        actor=None,
        target=Target("db", "postgres", {"env": "prod"}),
        client_addr="127.0.0.1",
    )
    stmt = (
        PostgresClassifier()
        .classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1")
        .statements[0]
    )
    gate(stmt, stmt.text)
    n = 200_000
    cached = timeit.timeit(lambda: gate(stmt, stmt.text), number=n) / n * 1e6
    request = Request(
        action="sql:select",
        principal=gate.principal,
        target=gate.target,
        statement=stmt,
        text=stmt.text,
    )
    cedar = gate.engine.decide
    uncached = timeit.timeit(lambda: cedar(request), number=500) / 500 * 1e6
    return cached, uncached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--holds", type=int, default=20)
    args = parser.parse_args()
    cluster = _start_cluster("scram-sha-256")
    work = Path(tempfile.mkdtemp(prefix="jitgate-approval-bench-"))
    try:
        with run_pg_gateway(work / "data") as pg:
            gw = pg.gateway
            cached, uncached = decision_cost(gw)
            name = pg.add_connection(cluster, tags={"env": "prod"}).name
            alice = pg.add_user("alice-bench")
            pg.gateway.identities.create_identity("bob-bench", groups=["approvers"])
            bob = pg.token_for("bob-bench")
            with psycopg.connect(
                cluster.dsn("app", APP_USER, APP_PASSWORD), autocommit=True
            ) as direct:
                direct.execute("CREATE TABLE t (id int)")
            latencies = []
            with (
                serve_app(create_app(gw)) as url,
                httpx.Client(base_url=url) as http,
                psycopg.connect(
                    pg.dsn(name, token=alice, user="alice-bench"), autocommit=True
                ) as conn,
            ):
                headers = {"Authorization": f"Bearer {bob}"}
                for _ in range(args.holds):
                    done = threading.Event()
                    finished: list[float] = []

                    def run(done: threading.Event, finished: list[float]) -> None:
                        try:
                            conn.execute("DELETE FROM t")
                            finished.append(time.perf_counter())
                        finally:
                            done.set()

                    thread = threading.Thread(target=run, args=(done, finished))
                    thread.start()
                    request_id = None
                    deadline = time.monotonic() + 30
                    while request_id is None:
                        if done.is_set() or time.monotonic() > deadline:
                            raise SystemExit(f"the DELETE was not held for review: {finished}")
                        pending = gw.access.list_requests(status="pending")
                        request_id = pending[0].id if pending else None
                        time.sleep(0.005)
                    started = time.perf_counter()
                    response = http.post(
                        f"/api/v1/requests/{request_id}/approve", json={}, headers=headers
                    )
                    response.raise_for_status()
                    done.wait(30)
                    thread.join()
                    latencies.append((finished[0] - started) * 1000)
        latencies.sort()
        p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)]
        print("| measure | value | target |")
        print("|---|---:|---:|")
        print(f"| cached decision (gate + live engine) | {cached:.2f} µs | ≤ 5 µs |")
        print(f"| uncached Cedar decision | {uncached:.0f} µs | – |")
        print(
            f"| approval → release, median of {len(latencies)} | "
            f"{statistics.median(latencies):.1f} ms | ≤ 50 ms |"
        )
        print(f"| approval → release, p95 | {p95:.1f} ms | – |")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
