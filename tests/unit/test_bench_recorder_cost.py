"""The recorder benchmark's verdict: the TPS loss on ``pgbench -S`` against the 10 % target."""

from __future__ import annotations

from bench.pgbench_compare import Result
from bench.recorder_cost import verdicts, workloads


def _result(*tps: float) -> Result:
    result = Result()
    result.tps.extend(tps)
    return result


def test_a_verdict_per_fsync_mode_on_pgbench_select_only() -> None:
    assert list(workloads("S", 8, 10)) == ["pgbench -S"]
    assert workloads("S", 8, 10)["pgbench -S"][:3] == ["-S", "-c", "8"]
    results = {
        "pgbench -S": {"rec-off": _result(1000, 1000), "rec-close": _result(950, 930),
                       "rec-request": _result(700, 720)},
    }  # fmt: skip
    close, request = verdicts(results, ["close", "request"])
    assert close.startswith("VERDICT fsync=close: PASS — 6.0 % TPS loss on pgbench -S")
    assert request.startswith("VERDICT fsync=request: FAIL — 29.0 % TPS loss")
    assert "target ≤ 10 %" in close
