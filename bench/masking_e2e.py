"""A large SELECT through jitgate with masking on vs off vs direct: MB/s side by side.

Run: ``python -m bench.masking_e2e [--rows 1000000] [--rounds 3]``

One throwaway PostgreSQL cluster holds a table of mixed text columns (names, e-mails,
free-text notes with phone numbers and card numbers in some rows, JSON). psql (a C client,
output to /dev/null) runs ``SELECT * FROM people`` directly, through jitgate with no mask
profile, and through jitgate with the ``pii`` profile. Throughput is the result's size in
text form divided by the wall time; the rounds interleave the three targets.

Before any number is reported, the same SELECT is read once more through each jitgate
target and checked: through the masked one no e-mail, card or phone number of the table
comes out raw and every row's e-mail is redacted; through the other they all do. A masked
run that masked nothing would otherwise look fast.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.pgcluster import PgCluster, free_port

ROOT = Path(__file__).resolve().parent.parent

FILL = """
CREATE TABLE people AS
SELECT g AS id,
       'person ' || g AS name,
       'user' || g || '@example.com' AS email,
       CASE WHEN g % 10 = 0 THEN 'call +1 415-555-' || lpad((g % 10000)::text, 4, '0')
            WHEN g % 10 = 1 THEN 'card 4111 1111 1111 1111 on file'
            ELSE 'order ' || md5(g::text) || ' shipped' END AS note,
       json_build_object('k', g, 'tag', md5((g * 7)::text))::text AS data
FROM generate_series(1, {rows}) AS g;
"""


def psql_time(dsn: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["psql", dsn, "-X", "-q", "-A", "-t", "-o", "/dev/null", "-c", "SELECT * FROM people"],
        env=env,
        check=True,
        timeout=3600,
    )
    return time.perf_counter() - started


def verify(dsn: str, env: dict[str, str], rows: int, *, masked: bool) -> dict[str, int]:
    """Read ``SELECT * FROM people`` through ``dsn`` and count raw and masked values;
    exit if the run did not mask (or, for ``masked=False``, did mask) what it should."""
    counts = dict.fromkeys(
        ("raw email", "raw card", "raw phone", "masked email", "masked card", "masked phone"), 0
    )
    with subprocess.Popen(
        ["psql", dsn, "-X", "-q", "-A", "-t", "-c", "SELECT * FROM people"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as psql:
        assert psql.stdout is not None
        for line in psql.stdout:
            counts["raw email"] += "@example.com" in line
            counts["raw card"] += "4111 1111 1111 1111" in line
            counts["raw phone"] += "415-555-" in line
            counts["masked email"] += "[REDACTED:email]" in line
            counts["masked card"] += "**** **** **** 1111" in line
            counts["masked phone"] += "[REDACTED:phone]" in line
    if psql.returncode != 0:
        raise SystemExit(f"psql failed ({psql.returncode}) while verifying")
    cards = (rows + 8) // 10  # g % 10 == 1
    phones = rows // 10  # g % 10 == 0
    if masked:
        ok = (
            counts["raw email"] == counts["raw card"] == counts["raw phone"] == 0
            and counts["masked email"] == rows
            and counts["masked card"] == cards
            and counts["masked phone"] == phones
        )
    else:
        ok = (
            counts["raw email"] == rows
            and counts["raw card"] == cards
            and counts["raw phone"] == phones
            and not (counts["masked email"] or counts["masked card"] or counts["masked phone"])
        )
    if not ok:
        raise SystemExit(f"{'masked' if masked else 'unmasked'} run is wrong: {counts}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jitgate-mask-bench-"))
    cluster = PgCluster(auth="scram-sha-256", settings={"shared_buffers": "'256MB'"})
    proc: subprocess.Popen[str] | None = None
    try:
        cluster.start()
        cluster.psql(FILL.format(rows=args.rows))
        size = int(
            cluster.psql(
                "SELECT sum(octet_length(id::text) + octet_length(name) + octet_length(email) "
                "+ octet_length(note) + octet_length(data) + 5) FROM people"
            )
        )
        data = work / "data"
        port = free_port()
        (work / "jitgate.yaml").write_text(
            f"api:\n  port: 0\nlog_level: warning\nlisteners:\n  postgres:\n    port: {port}\n"
            "    allow_cleartext_loopback: true\n"
            "  ssh:\n    enabled: false\n"
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
                str(work / "jitgate.yaml"),
            ],
            cwd=ROOT,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not (data / "serve.json").exists():
            if proc.poll() is not None:
                raise SystemExit("jitgate did not start")
            time.sleep(0.05)
        api = json.loads((data / "serve.json").read_text())["api"]
        token = (data / "admin.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        for name, options in (("plain", {}), ("masked", {"mask_profile": "pii"})):
            httpx.post(
                f"{api}/api/v1/connections",
                headers=headers,
                json={
                    "name": name,
                    "type": "postgres",
                    "host": "127.0.0.1",
                    "port": cluster.port,
                    "database": "postgres",
                    "username": cluster.superuser,
                    "password": cluster.password,
                    "tls_mode": "disable",
                    "options": options,
                },
            ).raise_for_status()
        env = {**os.environ, "PGSSLMODE": "disable"}
        targets = {
            "direct": (
                f"host=127.0.0.1 port={cluster.port} dbname=postgres "
                f"user={cluster.superuser} password={cluster.password}"
            ),
            "jitgate, masking off": (
                f"host=127.0.0.1 port={port} dbname=plain user=admin password={token}"
            ),
            "jitgate, masking on (pii)": (
                f"host=127.0.0.1 port={port} dbname=masked user=admin password={token}"
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in targets}
        for round_no in range(args.rounds):
            for name, dsn in targets.items():
                elapsed = psql_time(dsn, env)
                times[name].append(elapsed)
                print(
                    f"round {round_no + 1} {name:<28} {elapsed:7.2f} s", file=sys.stderr, flush=True
                )
        checked = verify(targets["jitgate, masking on (pii)"], env, args.rows, masked=True)
        verify(targets["jitgate, masking off"], env, args.rows, masked=False)
        mb = size / 1e6
        off = statistics.median(times["jitgate, masking off"])
        print(f"\n{args.rows} rows, {mb:.0f} MB of result text")
        print(
            "verified: masked run redacted {masked email} e-mails, {masked card} cards, "
            "{masked phone} phones, none raw; the unmasked run showed them raw\n".format(**checked)
        )
        print("| target | median s | MB/s | vs masking off |")
        print("|---|---:|---:|---:|")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"| {name} | {median:.2f} | {mb / median:.1f} | {off / median:.2f} |")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
