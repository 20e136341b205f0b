"""Cost of one ``PostgresClassifier.classify`` call: exact-cache hit, fingerprint hit, cold.

Run: ``python -m bench.sql_classifier [--number N]``. Prints microseconds per call for a
pgbench-style SELECT and for pgbench's three-statement TPC-B-like write script.

* exact hit: the very same string again (one dict look-up);
* fingerprint hit: the same statement with other constants, as pgbench sends it;
* cold: no cache at all (parse, walk, fingerprint, split).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from jitgate.sql import PostgresClassifier

SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"
SCRIPT = (
    "UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid}; "
    "SELECT abalance FROM pgbench_accounts WHERE aid = {aid}; "
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
    "VALUES ({tid}, 1, {aid}, {delta}, CURRENT_TIMESTAMP);"
)


def render(template: str, number: int) -> str:
    return template.format(
        aid=number * 7919 % 100_000 + 1, delta=number % 10_000 - 5000, tid=number % 10
    )


def per_call(function: Callable[[], object], number: int) -> float:
    """Best of three runs, in microseconds per call."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(number):
            function()
        best = min(best, time.perf_counter() - started)
    return best / number * 1e6


def measure(template: str, number: int) -> dict[str, float]:
    exact = PostgresClassifier()
    same = render(template, 1)
    exact.classify(same)

    shapes = PostgresClassifier(exact_cache_size=1)
    shapes.classify(render(template, 0))
    fresh = iter([render(template, n) for n in range(1, 3 * number + 2)])

    cold = PostgresClassifier(exact_cache_size=0, fingerprint_cache_size=0)
    cold_number = max(number // 10, 1)
    results = {
        "exact hit": per_call(lambda: exact.classify(same), number),
        "fingerprint hit": per_call(lambda: shapes.classify(next(fresh)), number),
        "cold": per_call(lambda: cold.classify(same), cold_number),
    }
    assert shapes.stats.misses == 1, shapes.stats
    return results


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__)
    arguments.add_argument("--number", type=int, default=20_000, help="calls per measurement")
    number = arguments.parse_args().number
    print(f"{'query':<24}{'case':<18}{'µs/call':>10}")
    for name, template in (("pgbench SELECT", SELECT), ("pgbench 3 statements", SCRIPT)):
        for case, micros in measure(template, number).items():
            print(f"{name:<24}{case:<18}{micros:>10.2f}")


if __name__ == "__main__":
    main()
