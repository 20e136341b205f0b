"""``jitgate ssh-keys``: public keys that log in to the SSH listener, and how to connect.

jitgate ssh-keys add ~/.ssh/id_ed25519.pub [--name laptop] [--user alice]
jitgate ssh-keys list [--user alice | --all]
jitgate ssh-keys rm KEY_ID
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from jitgate.cli.client import APIClient, CLIError
from jitgate.cli.output import OutputFormat, emit_json, emit_list, emit_one

ssh_keys_app = typer.Typer(
    help="SSH public keys for `ssh -p 12222 CONNECTION@gateway`.", no_args_is_help=True
)

Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json")]
Server = Annotated[str | None, typer.Option("--server", help="API URL (JITGATE_SERVER)")]
COLUMNS = ["id", "identity", "name", "algorithm", "fingerprint", "created_at", "last_used_at"]


@ssh_keys_app.command("add")
def ssh_keys_add(
    public_key_file: Annotated[Path, typer.Argument(help="an OpenSSH public key (.pub)")],
    name: Annotated[str | None, typer.Option("--name")] = None,
    user: Annotated[str | None, typer.Option("--user", help="for someone else (admin)")] = None,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Register a public key to yourself (or, as an admin, to another identity)."""
    try:
        text = public_key_file.expanduser().read_text()
    except OSError as exc:
        raise CLIError(f"cannot read {public_key_file}: {exc.strerror}") from None
    if "PRIVATE KEY" in text:
        raise CLIError(f"{public_key_file} is a private key; give the .pub file")
    body: dict[str, Any] = {"public_key": text.strip()}
    if name:
        body["name"] = name
    if user:
        body["identity"] = user
    result = APIClient.from_env(server).request("POST", "/api/v1/ssh-keys", json_body=body)
    if output is OutputFormat.JSON:
        emit_json(result)
        return
    emit_one(result, output, skip=("public_key",))


@ssh_keys_app.command("list")
def ssh_keys_list(
    user: Annotated[str | None, typer.Option("--user")] = None,
    all: Annotated[bool, typer.Option("--all", help="every identity's keys")] = False,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List SSH keys (yours by default)."""
    params: dict[str, Any] = {"all": all}
    if user:
        params["identity"] = user
    rows = APIClient.from_env(server).request("GET", "/api/v1/ssh-keys", params=params)["items"]
    emit_list(rows, COLUMNS, output)


@ssh_keys_app.command("rm")
def ssh_keys_rm(key_id: str, server: Server = None) -> None:
    """Remove an SSH key by id."""
    result = APIClient.from_env(server).request("DELETE", f"/api/v1/ssh-keys/{key_id}")
    typer.echo(f"SSH key {result['fingerprint']} of {result['identity']} removed")
