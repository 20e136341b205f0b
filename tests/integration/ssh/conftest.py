"""The SSH tests' fixtures: a real sshd and the in-process SSH gateway (tests/fixtures/sshd.py)."""

from tests.fixtures.sshd import make_ssh_gateway, ssh_gateway, sshd

__all__ = ["make_ssh_gateway", "ssh_gateway", "sshd"]
