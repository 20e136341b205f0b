"""Transparency: a PostgreSQL driver's own test suite, direct and through jitgate.

Run: ``python -m bench.client_suite [--version 1.31.6] [--work DIR]``

The driver is pg8000 (pure Python; its source distribution ships its test suite, which
reads ``PGHOST``/``PGPORT``/``PGPASSWORD`` and connects as ``postgres`` to the database
``postgres``). The script builds a throwaway virtualenv with the pinned pg8000, pytest,
pytest-mock and pytest-benchmark, unpacks the sdist, and runs the suite twice against the
machine's PostgreSQL on 127.0.0.1:5432 (trust auth for ``postgres``):

1. direct;
2. through pgbouncer in session mode (Debian package; trust auth toward the client), the
   usual way such a proxy is run;
3. through a ``jitgate serve`` on a throwaway data dir, with a connection named
   ``postgres`` to the same server, the jitgate identity ``postgres`` whose token is the
   password, and a policy set that allows everything (the suite drops tables, deletes
   without WHERE, calls functions the default pack denies), so what is measured is
   protocol transparency, not policy.

It prints the pass/fail counts side by side and the tests whose outcome differs from the
direct run. The suites' own
authentication tests (``test/*/auth``) need server configurations of their own and are
left out of both runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import httpx

from bench.pgbench_compare import _wait_port
from tests.support.pgcluster import free_port
from tests.support.served import start_gateway, stop, wait_ready

ALLOW_ALL = '@id("allow-everything") permit (principal, action, resource);\n'


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def prepare(work: Path, version: str) -> tuple[Path, Path]:
    venv = work / "venv"
    if not (venv / "bin" / "python").exists():
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(venv / "bin" / "pip"), "install", "-q", f"pg8000=={version}", "pytest",
              "pytest-mock", "pytest-benchmark", "pytz"])  # fmt: skip
    source = work / f"pg8000-{version}"
    if not source.exists():
        _run([str(venv / "bin" / "pip"), "download", "-q", "--no-deps", "--no-binary", ":all:",
              "-d", str(work), f"pg8000=={version}"])  # fmt: skip
        with tarfile.open(work / f"pg8000-{version}.tar.gz") as archive:
            archive.extractall(work, filter="data")
    return venv / "bin" / "python", source


def run_suite(python: Path, source: Path, port: int, password: str) -> dict[str, str]:
    """Outcome per test id (passed, failed, error, skipped)."""
    report = source / "report.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "JITGATE_"))}
    env.update(PGHOST="127.0.0.1", PGPORT=str(port), PGPASSWORD=password)
    subprocess.run(
        [str(python), "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
         "--benchmark-disable", "--ignore=test/dbapi/auth", "--ignore=test/legacy/auth",
         "--ignore=test/native/auth", "test"],
        cwd=source, env=env, stdout=report.open("w"), stderr=subprocess.STDOUT, timeout=1800,
    )  # fmt: skip
    outcomes: dict[str, str] = {}
    for line in report.read_text().splitlines():
        match = re.match(r"(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)", line)
        if match:
            outcomes[match.group(2)] = match.group(1).lower()
    return outcomes


def through_jitgate(work: Path) -> tuple[subprocess.Popen[str], int, str]:
    data_dir = work / "jitgate-data"
    shutil.rmtree(data_dir, ignore_errors=True)  # a fresh gateway each run
    proc = start_gateway(data_dir, extra_config="log_level: warning\n")
    api = wait_ready(proc, data_dir)
    admin = (data_dir / "admin.token").read_text().strip()
    headers = {"Authorization": f"Bearer {admin}"}
    port = int(json.loads((data_dir / "serve.json").read_text())["listeners"]["postgres"]
               .rsplit(":", 1)[1])  # fmt: skip
    with httpx.Client(base_url=api, headers=headers, timeout=30) as http:
        http.post("/api/v1/connections", json={
            "name": "postgres", "type": "postgres", "host": "127.0.0.1", "port": 5432,
            "database": "postgres", "username": "postgres", "tls_mode": "disable",
        }).raise_for_status()  # fmt: skip
        http.post("/api/v1/users", json={"name": "postgres", "groups": ["dbas"]})
        token = http.post("/api/v1/tokens", json={"user": "postgres", "name": "suite"}).json()
        for policy in http.get("/api/v1/policies").json()["items"]:
            http.delete(f"/api/v1/policies/{policy['name']}").raise_for_status()
        http.post("/api/v1/policies", json={"name": "allow-everything", "text": ALLOW_ALL}
                  ).raise_for_status()  # fmt: skip
    return proc, port, str(token["token"])


def through_pgbouncer(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    port = free_port()
    conf = work / "pgbouncer"
    conf.mkdir(exist_ok=True)
    (conf / "users.txt").write_text('"postgres" ""\n')
    (conf / "pgbouncer.ini").write_text(
        "[databases]\n* = host=127.0.0.1 port=5432\n[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {conf / 'users.txt'}\npool_mode = session\n"
        f"logfile = {conf / 'pgbouncer.log'}\n"
    )
    argv = [binary, str(conf / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        for path in (conf, *conf.iterdir()):
            shutil.chown(path, "postgres")
        argv = ["runuser", "-u", "postgres", "--", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port)
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", default="1.31.6")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="jitgate-client-suite-"))
    work.mkdir(parents=True, exist_ok=True)
    python, source = prepare(work, args.version)
    runs = {"direct": run_suite(python, source, 5432, "unused-with-trust-auth")}
    bouncer, bouncer_port = through_pgbouncer(work)
    try:
        runs["pgbouncer (session)"] = run_suite(python, source, bouncer_port, "unused")
    finally:
        bouncer.terminate()
        bouncer.wait(10)
    proc, port, token = through_jitgate(work)
    try:
        runs["jitgate"] = run_suite(python, source, port, token)
    finally:
        stop(proc)
    print(f"pg8000 {args.version} test suite (auth tests excluded)\n")
    print("| run | passed | failed | errors | skipped |")
    print("|---|---:|---:|---:|---:|")
    for name, outcomes in runs.items():
        values = list(outcomes.values())
        print(f"| {name} | {values.count('passed')} | {values.count('failed')} | "
              f"{values.count('error')} | {values.count('skipped')} |")  # fmt: skip
    direct = runs["direct"]
    for name, outcomes in list(runs.items())[1:]:
        differ = sorted(t for t in set(direct) | set(outcomes) if direct.get(t) != outcomes.get(t))
        print(f"\n{name}: {len(differ)} tests with an outcome other than direct:")
        for test in differ:
            print(f"  {test}: direct {direct.get(test)}, {name} {outcomes.get(test)}")


if __name__ == "__main__":
    main()
