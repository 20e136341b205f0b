"""API token checks: what authenticating a caller costs, in process and over HTTP.

Run: ``python -m bench.token_check [--n 2000]``

A gateway opens on a throwaway data dir (SQLite store, its defaults). Measured:

1. ``Authenticator.authenticate`` for a ``jgt_`` API token with its short positive cache
   cleared before every call (SHA-256 of the token, one indexed store look-up, the
   identity and its groups loaded, last-used time written at most once a minute);
2. the same with the cache warm (the hot path of every statement-less API call);
3. an authenticated ``GET /api/v1/whoami`` over loopback HTTP/1.1 with keep-alive, next to
   an unauthenticated ``GET /healthz``, so the difference is the check's share.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from jitgate.server.gateway import Gateway
from tests.fixtures.gateway import make_settings
from tests.support.served import start_gateway, stop, wait_ready


def _per_call_us(fn: object, n: int) -> float:
    call = fn  # type: ignore[assignment]
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            call()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jitgate-token-bench-") as work:
        gateway = Gateway.open(make_settings(Path(work) / "data"))
        try:
            gateway.identities.create_identity("bench-user", groups=["users"])
            _info, token = gateway.identities.create_token("bench-user", "bench")
            auth = gateway.authenticator

            def cold() -> None:
                auth.invalidate()
                auth.authenticate(token)

            uncached = _per_call_us(cold, args.n)
            cached = _per_call_us(lambda: auth.authenticate(token), args.n * 10)
        finally:
            gateway.close()
        data_dir = Path(work) / "served"
        proc = start_gateway(data_dir, extra_config="log_level: warning\n")
        try:
            url = wait_ready(proc, data_dir)
            token = (data_dir / "admin.token").read_text().strip()
            with httpx.Client(base_url=url) as http:
                headers = {"Authorization": f"Bearer {token}"}
                http.get("/api/v1/whoami", headers=headers).raise_for_status()
                http.get("/healthz").raise_for_status()
                whoami = _per_call_us(
                    lambda: http.get("/api/v1/whoami", headers=headers), args.n // 4
                )
                health = _per_call_us(lambda: http.get("/healthz"), args.n // 4)
        finally:
            stop(proc)
    print("| measure | µs per call |")
    print("|---|---:|")
    print(f"| token check, cache cleared (store look-up) | {uncached:.0f} |")
    print(f"| token check, cached | {cached:.2f} |")
    print(f"| GET /api/v1/whoami over HTTP (token checked) | {whoami:.0f} |")
    print(f"| GET /healthz over HTTP (no token) | {health:.0f} |")


if __name__ == "__main__":
    main()
