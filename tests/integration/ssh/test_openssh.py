"""OpenSSH ssh, scp and sftp through the gateway to a real sshd (batch mode)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.postgres_gateway import unique
from tests.fixtures.sshd import OpenSSH, Sshd, SSHGateway, keygen


@pytest.fixture
def user(ssh_gateway: SSHGateway) -> tuple[str, Path]:
    name = unique("alice")
    ssh_gateway.add_user(name)
    return name, ssh_gateway.add_key(name)


def test_exec_relays_output_stderr_and_exit_status_and_is_recorded(
    ssh_gateway: SSHGateway, sshd: Sshd, user: tuple[str, Path]
) -> None:
    name, key = user
    conn = ssh_gateway.add_connection(sshd)
    result = OpenSSH(ssh_gateway).ssh(conn.name, "echo out; echo err >&2; exit 3", key=key)
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    row = ssh_gateway.session(conn.name)
    assert (row.protocol, row.identity_name, row.auth_method) == ("ssh", name, "publickey")
    channel = ssh_gateway.events(row, "ssh.channel")[0]
    assert channel["command"] == "echo out; echo err >&2; exit 3"
    assert channel["decision"] == "allow" and channel["commands"] == ["echo", "exit"]
    assert ssh_gateway.events(row, "ssh.exit")[0]["exit_status"] == 3
    ssh_gateway.verify(row)


def test_dangerous_command_is_denied_on_stderr_and_never_runs(
    ssh_gateway: SSHGateway, sshd: Sshd, user: tuple[str, Path], tmp_path: Path
) -> None:
    _, key = user
    conn = ssh_gateway.add_connection(sshd)
    marker = tmp_path / "ran"
    client = OpenSSH(ssh_gateway)
    # Each denied line starts with `touch MARKER; false &&`: were policy to let one through,
    # the marker would show it and the dangerous command itself would still not run.
    result = client.ssh(conn.name, f"touch {marker}; false && rm -rf --no-preserve-root /", key=key)
    assert result.returncode == 1
    assert b"jitgate:" in result.stderr and b"deletes the root filesystem" in result.stderr
    assert not marker.exists()
    for command in ("mkfs.ext4 /dev/sdz9", "dd if=/dev/zero of=/dev/sdz", "sudo shutdown -h now"):
        denied = client.ssh(conn.name, f"touch {marker}; false && {command}", key=key)
        assert denied.returncode == 1, command
        assert b"was denied" in denied.stderr
    assert not marker.exists()
    unclosed = client.ssh(conn.name, "echo 'unclosed", key=key)
    assert unclosed.returncode == 1 and b"not understood" in unclosed.stderr
    assert b"(unclosed single quote)" in unclosed.stderr
    row = ssh_gateway.session(conn.name)
    assert ssh_gateway.events(row, "ssh.channel")[0]["decision"] == "deny"


def test_token_as_password_and_user_plus_connection(ssh_gateway: SSHGateway, sshd: Sshd) -> None:
    name = unique("bob")
    token = ssh_gateway.add_user(name)
    conn = ssh_gateway.add_connection(sshd)
    client = OpenSSH(ssh_gateway)
    result = client.ssh(f"{name}+{conn.name}", "echo via-token", token=token)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"via-token\n"
    row = ssh_gateway.session(conn.name)
    # OpenSSH answers the keyboard-interactive prompt first (the askpass program)
    assert row.identity_name == name and row.auth_method == "kbd-interactive"
    auth = ssh_gateway.events(row, "ssh.auth")[0]
    assert (auth["method"], auth["credential"]) == ("kbd-interactive", "api_token")
    wrong_user = client.ssh(f"someone-else+{conn.name}", "true", token=token)
    assert wrong_user.returncode == 255
    bad_token = client.ssh(conn.name, "true", token="jg_not-a-token")
    assert bad_token.returncode == 255 and b"Permission denied" in bad_token.stderr


def test_unregistered_key_and_unknown_connection_are_refused(
    ssh_gateway: SSHGateway, sshd: Sshd, user: tuple[str, Path]
) -> None:
    _, key = user
    conn = ssh_gateway.add_connection(sshd)
    client = OpenSSH(ssh_gateway)
    stranger = client.ssh(conn.name, "true", key=sshd.client_key)  # the target's own key
    assert stranger.returncode == 255 and b"Permission denied" in stranger.stderr
    missing = client.ssh("no-such-connection", "true", key=key)
    assert missing.returncode == 255


def test_host_key_mismatch_refuses_the_session(
    ssh_gateway: SSHGateway, sshd: Sshd, user: tuple[str, Path]
) -> None:
    _, key = user
    other = ssh_gateway.add_key(user[0]).with_suffix(".pub").read_text().split()
    conn = ssh_gateway.add_connection(sshd, host_key=f"{other[0]} {other[1]}")
    result = OpenSSH(ssh_gateway).ssh(conn.name, "echo should-not-run", key=key)
    assert result.returncode == 255
    assert b"does not match the pinned key" in result.stderr
    assert b"should-not-run" not in result.stdout
    rsa = keygen(ssh_gateway.dir / unique("rsa"), "rsa").with_suffix(".pub").read_text().split()
    other_type = ssh_gateway.add_connection(sshd, host_key=f"{rsa[0]} {rsa[1]}")
    wrong_type = OpenSSH(ssh_gateway).ssh(other_type.name, "true", key=key)
    assert wrong_type.returncode == 255 and b"of the pinned type (ssh-rsa)" in wrong_type.stderr
    unpinned = ssh_gateway.add_connection(sshd, host_key=None)
    refused = OpenSSH(ssh_gateway).ssh(unpinned.name, "true", key=key)
    assert refused.returncode == 255 and b"no pinned host key" in refused.stderr


def test_trust_on_first_use_pins_the_first_key(
    ssh_gateway: SSHGateway, sshd: Sshd, user: tuple[str, Path]
) -> None:
    _, key = user
    conn = ssh_gateway.add_connection(sshd, host_key=None, tofu=True)
    result = OpenSSH(ssh_gateway).ssh(conn.name, "echo first", key=key)
    assert result.stdout == b"first\n", result.stderr
    pinned = ssh_gateway.gateway.connections.get(conn.name).options["host_key"]
    assert pinned.split()[:2] == sshd.host_key_pub.split()[:2]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-scp", "legacy-scp"])
def test_scp_both_ways(
    ssh_gateway: SSHGateway, sshd: Sshd, user: tuple[str, Path], tmp_path: Path, legacy: bool
) -> None:
    _, key = user
    conn = ssh_gateway.add_connection(sshd)
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    remote = tmp_path / "remote.bin"
    back = tmp_path / "back.bin"
    client = OpenSSH(ssh_gateway)
    up = client.scp(str(source), f"{conn.name}@127.0.0.1:{remote}", key=key, legacy=legacy)
    assert up.returncode == 0, up.stderr
    down = client.scp(f"{conn.name}@127.0.0.1:{remote}", str(back), key=key, legacy=legacy)
    assert down.returncode == 0, down.stderr
    assert _digest(source) == _digest(remote) == _digest(back)
    row = ssh_gateway.session(conn.name)
    if legacy:
        scp = ssh_gateway.events(row, "ssh.channel")[0]
        assert (scp["kind"], scp["mode"], scp["path"]) == ("scp", "read", str(remote))
    else:
        closes = [e for e in ssh_gateway.events(row, "sftp") if e["op"] == "close"]
        assert closes and closes[-1]["path"] == str(remote)
        assert closes[-1]["bytes_read"] == source.stat().st_size


def test_sftp_batch_operations_are_recorded_and_writes_can_be_denied(
    ssh_gateway: SSHGateway, sshd: Sshd, user: tuple[str, Path], tmp_path: Path
) -> None:
    _, key = user
    conn = ssh_gateway.add_connection(sshd)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "keep.txt").write_text("keep me")
    ssh_gateway.policy(
        unique("ro"),
        f'@id("read-only-{conn.name}")\n@reason("{locked} is read-only")\n'
        f'forbid (principal, action == Action::"ssh:sftp_write", '
        f'resource == Connection::"{conn.name}")\n'
        f'when {{ context.text like "{locked}/*" }};',
    )
    local = tmp_path / "up.txt"
    local.write_text("hello sftp")
    client = OpenSSH(ssh_gateway)
    ok = client.sftp(
        conn.name,
        f"put {local} {tmp_path}/put.txt\nget {locked}/keep.txt {tmp_path}/got.txt\n"
        f"ls {locked}\nrename {tmp_path}/put.txt {tmp_path}/moved.txt\n",
        key=key,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "moved.txt").read_text() == "hello sftp"
    assert (tmp_path / "got.txt").read_text() == "keep me"
    denied = client.sftp(conn.name, f"put {local} {locked}/new.txt\n", key=key)
    assert denied.returncode != 0 and b"ermission denied" in denied.stderr
    removed = client.sftp(conn.name, f"rm {locked}/keep.txt\n", key=key)
    assert removed.returncode != 0
    assert not (locked / "new.txt").exists() and (locked / "keep.txt").exists()
    legacy = client.scp(str(local), f"{conn.name}@127.0.0.1:{locked}/x.txt", key=key, legacy=True)
    assert legacy.returncode != 0 and not (locked / "x.txt").exists()
    events = [e for r in ssh_gateway.sessions(conn.name) for e in ssh_gateway.events(r, "sftp")]
    ops = {(e["op"], e.get("decision")) for e in events}
    assert {("open", "allow"), ("opendir", "allow"), ("posix-rename", "allow")} <= ops
    assert ("open", "deny") in ops and ("remove", "deny") in ops
    assert any(e["op"] == "close" and e["bytes_written"] == 10 for e in events)


SFTP_SERVER = "/usr/lib/openssh/sftp-server"


@pytest.mark.skipif(not os.path.exists(SFTP_SERVER), reason="no OpenSSH sftp-server binary")
def test_the_sftp_server_run_as_a_command_is_inspected_like_the_subsystem(
    ssh_gateway: SSHGateway, sshd: Sshd, user: tuple[str, Path], tmp_path: Path
) -> None:
    _, key = user
    conn = ssh_gateway.add_connection(sshd)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "keep.txt").write_text("keep me")
    ssh_gateway.policy(
        unique("ro"),
        f'@id("read-only-exec-{conn.name}")\n@reason("{locked} is read-only")\n'
        f'forbid (principal, action == Action::"ssh:sftp_write", '
        f'resource == Connection::"{conn.name}")\n'
        f'when {{ context.text like "{locked}/*" }};',
    )
    local = tmp_path / "up.txt"
    local.write_text("hello")
    client = OpenSSH(ssh_gateway)
    batch = tmp_path / "batch"
    batch.write_text(f"get {locked}/keep.txt {tmp_path}/got.txt\nput {local} {locked}/new.txt\n")
    # A path given to -s makes sftp exec it instead of asking for the subsystem.
    argv = ["sftp", *client.options(key), "-P", str(ssh_gateway.port), "-s", SFTP_SERVER]
    result = subprocess.run(
        [*argv, "-b", str(batch), f"{conn.name}@127.0.0.1"],
        capture_output=True, env=client.env(None), timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode != 0 and b"ermission denied" in result.stderr, result.stderr
    assert (tmp_path / "got.txt").read_text() == "keep me"
    assert not (locked / "new.txt").exists()
    row = ssh_gateway.session(conn.name)
    channel = ssh_gateway.events(row, "ssh.channel")[0]
    assert (channel["kind"], channel["command"], channel["decision"]) == (
        "sftp",
        SFTP_SERVER,
        "allow",
    )
    ops = {(e["op"], e.get("decision")) for e in ssh_gateway.events(row, "sftp")}
    assert {("open", "allow"), ("open", "deny")} <= ops
    # Inside a longer command line its file operations could not be inspected: refused.
    for command in (f"true; {SFTP_SERVER}", f"{SFTP_SERVER} < /dev/null", "internal-sftp &"):
        denied = client.ssh(conn.name, command, key=key)
        assert denied.returncode == 1 and b"sftp subsystem" in denied.stderr, command


def test_sftp_paths_are_normalised_before_policy_decides(
    ssh_gateway: SSHGateway, sshd: Sshd, user: tuple[str, Path], tmp_path: Path
) -> None:
    """``..``, ``//`` and relative paths (from the home directory on the target) cannot
    walk around a rule on a directory."""
    _, key = user
    conn = ssh_gateway.add_connection(sshd)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "keep.txt").write_text("keep me")
    ssh_gateway.policy(
        unique("ro"),
        f'@id("no-read-{conn.name}")\n@reason("{locked} is off limits")\n'
        f'forbid (principal, action in [Action::"ssh:sftp_read", Action::"ssh:sftp_write"], '
        f'resource == Connection::"{conn.name}")\n'
        f'when {{ context.text like "{locked}/*" }};',
    )
    local = tmp_path / "up.txt"
    local.write_text("hello")
    client = OpenSSH(ssh_gateway)
    sneaky = [
        f"{tmp_path}/locked/../locked/keep.txt",
        f"{tmp_path}//locked//keep.txt",
        f"{tmp_path}/./locked/./keep.txt",
        f"/..{locked}/keep.txt",
    ]
    for path in sneaky:
        got = client.sftp(conn.name, f"get {path} {tmp_path}/got.txt\n", key=key)
        assert got.returncode != 0 and b"ermission denied" in got.stderr, (path, got.stderr)
        put = client.sftp(conn.name, f"put {local} {path}\n", key=key)
        assert put.returncode != 0, path
    assert not (tmp_path / "got.txt").exists()
    assert (locked / "keep.txt").read_text() == "keep me"
    home = os.path.expanduser("~" + sshd.user)
    relative = os.path.relpath(locked / "keep.txt", home)  # ../tmp/…/locked/keep.txt
    import asyncssh  # a client that sends relative paths as they are (OpenSSH's does not)

    async def relative_read() -> str:
        async with asyncssh.connect(
            "127.0.0.1", ssh_gateway.port, username=conn.name, client_keys=[str(key)],
            known_hosts=None, agent_path=None, config=[],
        ) as ssh, ssh.start_sftp_client() as sftp:  # fmt: skip
            try:
                async with sftp.open(relative) as f:
                    return str(await f.read())
            except asyncssh.SFTPPermissionDenied as exc:
                return f"denied: {exc.reason}"

    assert ssh_gateway.call(relative_read()) == f"denied: jitgate: {locked} is off limits"
    events = [e for r in ssh_gateway.sessions(conn.name) for e in ssh_gateway.events(r, "sftp")]
    denied = [e for e in events if e.get("decision") == "deny"]
    assert {e["path"] for e in denied} == {str(locked / "keep.txt")}
    assert {e["requested"][0] for e in denied if "requested" in e} >= {relative, *sneaky}


def test_sftp_decides_the_real_path_behind_symbolic_links(
    ssh_gateway: SSHGateway, sshd: Sshd, user: tuple[str, Path], tmp_path: Path
) -> None:
    """A link into a forbidden directory, existing or dangling, made by the client or
    already there, reaches nothing the policy forbids; the record names the real path."""
    _, key = user
    conn = ssh_gateway.add_connection(sshd)
    locked, open_dir = tmp_path / "locked", tmp_path / "open"
    locked.mkdir()
    open_dir.mkdir()
    (locked / "keep.txt").write_text("keep me")
    (open_dir / "existing").symlink_to(locked / "keep.txt")
    (open_dir / "dir").symlink_to(locked)
    (open_dir / "dangling").symlink_to(locked / "created.txt")
    ssh_gateway.policy(
        unique("links"),
        f'@id("no-locked-{conn.name}")\n@reason("{locked} is off limits")\n'
        f'forbid (principal, action in [Action::"ssh:sftp_read", Action::"ssh:sftp_write"], '
        f'resource == Connection::"{conn.name}")\n'
        f'when {{ context.text like "{locked}/*" }};',
    )
    local = tmp_path / "up.txt"
    local.write_text("hello")
    client = OpenSSH(ssh_gateway)
    for path in (f"{open_dir}/existing", f"{open_dir}/dir/keep.txt"):
        got = client.sftp(conn.name, f"get {path} {tmp_path}/got.txt\n", key=key)
        assert got.returncode != 0 and b"ermission denied" in got.stderr, (path, got.stderr)
    for path in (f"{open_dir}/dir/new.txt", f"{open_dir}/dangling"):
        put = client.sftp(conn.name, f"put {local} {path}\n", key=key)
        assert put.returncode != 0 and b"ermission denied" in put.stderr, (path, put.stderr)
    link = client.sftp(conn.name, f"symlink {locked}/keep.txt {open_dir}/mine\n", key=key)
    assert link.returncode != 0 and b"ermission denied" in link.stderr, link.stderr
    ok = client.sftp(conn.name, f"put {local} {open_dir}/plain.txt\n", key=key)
    assert ok.returncode == 0, ok.stderr
    assert not (tmp_path / "got.txt").exists() and not (open_dir / "mine").is_symlink()
    assert sorted(p.name for p in locked.iterdir()) == ["keep.txt"]
    assert (open_dir / "plain.txt").read_text() == "hello"
    events = [e for r in ssh_gateway.sessions(conn.name) for e in ssh_gateway.events(r, "sftp")]
    denied = [e for e in events if e.get("decision") == "deny"]
    assert {(e["op"], e["path"], e.get("requested", [""])[0]) for e in denied} == {
        ("open", f"{locked}/keep.txt", f"{open_dir}/existing"),
        ("open", f"{locked}/keep.txt", f"{open_dir}/dir/keep.txt"),
        ("open", f"{locked}/new.txt", f"{open_dir}/dir/new.txt"),
        ("open", f"{locked}/created.txt", f"{open_dir}/dangling"),
        ("symlink", f"{locked}/keep.txt", ""),  # the target, then the link
    }
    assert [e["to"] for e in denied if e["op"] == "symlink"] == [f"{open_dir}/mine"]


def test_legacy_scp_decides_each_file_both_ways(
    ssh_gateway: SSHGateway, sshd: Sshd, user: tuple[str, Path], tmp_path: Path
) -> None:
    """``scp -O -r``: a file or directory a policy forbids is skipped with a message, the
    others are copied; only the plain ``scp -t``/``scp -f`` is taken for scp."""
    _, key = user
    conn = ssh_gateway.add_connection(sshd)
    ssh_gateway.policy(
        unique("secret"),
        f'@id("no-secrets-{conn.name}")\n@reason("secrets stay put")\n'
        f'forbid (principal, action in [Action::"ssh:sftp_read", Action::"ssh:sftp_write"], '
        f'resource == Connection::"{conn.name}")\n'
        f'when {{ context.text like "*/secret*" }};',
    )
    source = tmp_path / "tree"
    (source / "sub").mkdir(parents=True)
    (source / "secretdir").mkdir()
    (source / "ok.txt").write_text("ok")
    (source / "secret.txt").write_text("s")
    (source / "sub" / "deep.txt").write_text("deep")
    (source / "sub" / "secret.key").write_text("k")
    (source / "secretdir" / "plain.txt").write_text("p")
    client = OpenSSH(ssh_gateway)
    dest = tmp_path / "uploaded"
    dest.mkdir()
    up = client.scp("-r", str(source), f"{conn.name}@127.0.0.1:{dest}", key=key, legacy=True)
    assert up.returncode != 0 and b"jitgate:" in up.stderr and b"secrets stay put" in up.stderr
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert copied == ["tree", "tree/ok.txt", "tree/sub", "tree/sub/deep.txt"]
    back = tmp_path / "downloaded"
    back.mkdir()
    down = client.scp("-r", f"{conn.name}@127.0.0.1:{source}", str(back), key=key, legacy=True)
    assert down.returncode != 0 and b"secrets stay put" in down.stderr, down.stderr
    fetched = sorted(str(p.relative_to(back)) for p in back.rglob("*"))
    assert fetched == ["tree", "tree/ok.txt", "tree/sub", "tree/sub/deep.txt"]
    assert (back / "tree" / "sub" / "deep.txt").read_text() == "deep"
    events = [e for r in ssh_gateway.sessions(conn.name) for e in ssh_gateway.events(r, "sftp")]
    scp = {(e["path"], e["mode"], e["decision"]) for e in events if e.get("op") == "scp"}
    assert (f"{dest}/tree/secret.txt", "write", "deny") in scp
    assert (f"{dest}/tree/sub/deep.txt", "write", "allow") in scp
    assert (f"{source}/secretdir", "read", "deny") in scp
    assert (f"{source}/sub/secret.key", "read", "deny") in scp


def test_an_scp_command_that_is_not_plain_is_an_ordinary_exec(
    ssh_gateway: SSHGateway, sshd: Sshd, user: tuple[str, Path], tmp_path: Path
) -> None:
    _, key = user
    conn = ssh_gateway.add_connection(sshd)
    ssh_gateway.policy(
        unique("noexec-scp"),
        f'@id("no-raw-scp-{conn.name}")\n@reason("scp runs only as scp")\n'
        f'forbid (principal, action == Action::"ssh:exec", resource == Connection::"{conn.name}")\n'
        'when { context.functions.contains("scp") };',
    )
    marker = tmp_path / "marker"
    client = OpenSSH(ssh_gateway)
    for command in (
        f"scp -t {tmp_path}/x; touch {marker}",
        f"scp -t {tmp_path}/x > {marker}",
        f"scp -S /bin/sh -t {tmp_path}/x",
        f"scp -t {tmp_path}/$(touch {marker})",
    ):
        result = client.ssh(conn.name, command, key=key, input=b"")
        assert result.returncode == 1 and b"scp runs only as scp" in result.stderr, command
    assert not marker.exists()
    row = ssh_gateway.session(conn.name)
    channel = ssh_gateway.events(row, "ssh.channel")[0]
    assert channel["kind"] == "exec" and "scp" in channel["commands"]


def test_lines_piped_into_a_pty_shell_all_run_before_its_end_of_input(
    ssh_gateway: SSHGateway, sshd: Sshd, user: tuple[str, Path]
) -> None:
    """`ssh -tt` with a script on stdin: every line reaches the shell while the gateway
    waits for each one's echo, and the end of input comes after them (not before the
    held line, which would leave the shell waiting forever)."""
    _, key = user
    conn = ssh_gateway.add_connection(sshd)
    result = OpenSSH(ssh_gateway).ssh(
        conn.name, None, key=key, extra=("-tt",),
        input=b"echo first-$((1+1))\necho second-$((2+1))\nexit 4\n",
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert b"first-2" in result.stdout and b"second-3" in result.stdout
    row = ssh_gateway.session(conn.name)
    lines = [e["text"] for e in ssh_gateway.events(row, "ssh.line")]
    assert lines == ["echo first-$((1+1))", "echo second-$((2+1))", "exit 4"]
