"""An SSH exec request held for review and approved: its recorded event says who approved."""

from __future__ import annotations

import pytest

from tests.fixtures.postgres_gateway import unique
from tests.fixtures.sshd import Sshd, SSHGateway
from tests.integration.ssh.test_asyncssh import _approver, connect

pytestmark = pytest.mark.timeout(60)


async def test_approved_exec_records_its_approver(ssh_gateway: SSHGateway, sshd: Sshd) -> None:
    token = ssh_gateway.add_user()
    conn = ssh_gateway.add_connection(sshd)
    ssh_gateway.policy(
        unique("review"),
        '@outcome("review")\n@reason("releases need approval")\n'
        f'permit (principal, action == Action::"ssh:exec", resource == Connection::"{conn.name}")'
        ' when { context.functions.contains("release-now") };',
    )
    async with connect(ssh_gateway, conn.name, token) as client:
        thread = _approver(ssh_gateway, conn.name)
        held = await client.run("release-now() { echo released; }; release-now", timeout=30)
        thread.join()
        assert held.exit_status == 0 and held.stdout == "released\n"
    [request] = [
        r for r in ssh_gateway.gateway.access.list_requests(status="approved")
        if r.connection == conn.name
    ]  # fmt: skip
    approver = request.decided_by
    assert approver
    row = ssh_gateway.session(conn.name)
    [event] = ssh_gateway.events(row, "ssh.channel")
    assert event["review"] == "allow"
    assert event["review_by"] == [f"approved-request:{request.id}", f"approved-by:{approver}"]
