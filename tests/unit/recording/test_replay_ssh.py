"""Replay of SSH sessions: channels, exit status, typed lines, file operations, forwards."""

from __future__ import annotations

from jitgate.recording.replay import frames, timeline

AT = "2026-11-29T10:00:0{}.000000+00:00"

EXEC_AND_SFTP = [
    {"seq": 1, "type": "session.start", "at": AT.format(0), "session": "s",
     "identity_name": "ann", "connection_name": "box", "client_addr": "127.0.0.1",
     "client_program": "SSH-2.0-OpenSSH_9.2"},
    {"seq": 2, "type": "ssh.channel", "at": AT.format(1), "kind": "exec",
     "command": "echo out; exit 3", "commands": ["echo", "exit"], "decision": "allow",
     "policies": ["p"]},
    {"seq": 3, "type": "ssh.exit", "at": AT.format(2), "kind": "exec", "exit_status": 3},
    {"seq": 4, "type": "ssh.channel", "at": AT.format(3), "kind": "exec",
     "command": "rm -rf /", "decision": "deny", "policies": ["d"],
     "reason": "deletes the root filesystem"},
    {"seq": 5, "type": "ssh.channel", "at": AT.format(4), "kind": "sftp", "decision": "allow",
     "policies": []},
    {"seq": 6, "type": "sftp", "at": AT.format(5), "op": "open", "path": "/tmp/up.txt",
     "mode": "write", "decision": "allow", "status": "ok"},
    {"seq": 7, "type": "sftp", "at": AT.format(5), "op": "close", "path": "/tmp/up.txt",
     "mode": "write", "bytes_read": 0, "bytes_written": 10},
    {"seq": 8, "type": "sftp", "at": AT.format(6), "op": "remove", "path": "/srv/keep.txt",
     "mode": "write", "decision": "deny", "reason": "read-only"},
    {"seq": 9, "type": "sftp", "at": AT.format(6), "op": "posix-rename", "path": "/tmp/a",
     "to": "/tmp/b", "mode": "write", "decision": "allow", "status": "ok"},
    {"seq": 10, "type": "ssh.forward", "at": AT.format(7), "host": "db.internal", "port": 5432,
     "origin": "127.0.0.1:4000", "decision": "deny", "policies": [], "reason": "no tunnels"},
    {"seq": 11, "type": "ssh.exit", "at": AT.format(8), "kind": "sftp", "exit_signal": "TERM"},
    {"seq": 12, "type": "session.end", "at": AT.format(9), "reason": "client disconnected",
     "counts": {}},
]  # fmt: skip


def test_exec_sftp_and_forwards_are_in_the_timeline() -> None:
    lines = timeline(EXEC_AND_SFTP).splitlines()
    assert "10:00:01.000 ALLOW  exec: echo out; exit 3" in lines
    assert "    → exec exit status 3" in lines
    assert "10:00:03.000 DENY   exec: rm -rf /" in lines
    assert "    reason: deletes the root filesystem" in lines
    assert "10:00:04.000 ALLOW  sftp session" in lines
    assert "10:00:05.000 ALLOW  sftp open /tmp/up.txt (write)" in lines
    assert "10:00:05.000        sftp close /tmp/up.txt: 10 bytes written, 0 bytes read" in lines
    assert "10:00:06.000 DENY   sftp remove /srv/keep.txt (write)" in lines
    assert "    reason: read-only" in lines
    assert "10:00:06.000 ALLOW  sftp posix-rename /tmp/a → /tmp/b (write)" in lines
    assert "10:00:07.000 DENY   forward to db.internal:5432 (from 127.0.0.1:4000)" in lines
    assert "    → sftp ended by signal TERM" in lines
    assert lines[-1].startswith("session ended: client disconnected")


def test_a_session_without_a_terminal_replays_as_its_timeline() -> None:
    replayed = [d for _t, _s, d in frames(EXEC_AND_SFTP)]
    assert "10:00:01.000 ALLOW  exec: echo out; exit 3\r\n" in replayed
    times = [t for t, _s, _d in frames(EXEC_AND_SFTP)]
    assert times == sorted(times) and times[-1] == 9.0


def test_shell_lines_and_other_ssh_events() -> None:
    events = [
        {"seq": 1, "type": "ssh.channel", "at": AT.format(1), "kind": "shell",
         "decision": "allow", "policies": []},
        {"seq": 2, "type": "ssh.line", "at": AT.format(2), "text": "sudo reboot",
         "decision": "review", "review": "deny", "reason": "needs approval"},
        {"seq": 3, "type": "ssh.line", "at": AT.format(3), "secret": True},
        {"seq": 4, "type": "ssh.env", "at": AT.format(3), "denied": ["LD_PRELOAD"]},
        {"seq": 5, "type": "ssh.subsystem", "at": AT.format(4), "name": "netconf",
         "decision": "deny"},
        {"seq": 6, "type": "ssh.remote_forward", "at": AT.format(4), "host": "",
         "port": 8080, "decision": "deny"},
        {"seq": 7, "type": "ssh.signal", "at": AT.format(5), "signal": "INT"},
        {"seq": 8, "type": "ssh.auth", "at": AT.format(0), "method": "publickey",
         "credential": "ssh_key", "key": "SHA256:abc"},
        {"seq": 9, "type": "request.refused", "at": AT.format(6), "event": 8,
         "reason": "its event could not be written"},
    ]  # fmt: skip
    lines = timeline(events).splitlines()
    assert lines[:4] == [
        "10:00:01.000 ALLOW  interactive shell",
        "10:00:02.000 REVIEW $ sudo reboot",
        "    reason: needs approval",
        "    review: deny",
    ]
    assert "10:00:03.000 (a line typed at a password prompt, not recorded)" in lines
    assert "    environment not passed on: LD_PRELOAD" in lines
    assert "10:00:04.000 DENY   subsystem netconf" in lines
    assert "10:00:04.000 DENY   remote forward :8080" in lines
    assert "10:00:05.000        signal INT" in lines
    assert "    logged in by publickey (ssh_key) key SHA256:abc" in lines
    assert "    refused (event 8): its event could not be written" in lines
