"""The ``jitgate`` command. Everything but ``serve`` and ``vault`` talks to the REST API.

Server and token come from ``--server``/``JITGATE_SERVER`` and ``JITGATE_TOKEN``, or from
what ``jitgate login`` saved. Secrets are read from stdin or files, never from argv.
Errors print as one ``error: …`` line with a non-zero exit status.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from jitgate.cli import sessions as sessions_commands
from jitgate.cli.client import (
    APIClient,
    CLIError,
    issuer_error,
    issuer_tls_verify,
    load_saved,
    login_token,
    save_credentials,
)
from jitgate.cli.output import OutputFormat, emit_json, emit_list, emit_one
from jitgate.cli.ssh import ssh_keys_app

app = typer.Typer(
    name="jitgate",
    help="jitgate — just-in-time access gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
connections_app = typer.Typer(help="Registered targets.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for users and agents.", no_args_is_help=True)
users_app = typer.Typer(help="Users and agents.", no_args_is_help=True)
delegations_app = typer.Typer(help="Let an agent act on your behalf.", no_args_is_help=True)
audit_app = typer.Typer(help="The administrative audit log.", no_args_is_help=True)
vault_app = typer.Typer(
    help="Master key operations (run on the gateway host).", no_args_is_help=True
)
policy_app = typer.Typer(help="Cedar policies: add, list, validate, test.", no_args_is_help=True)
requests_app = typer.Typer(help="Just-in-time access requests and approvals.", no_args_is_help=True)
grants_app = typer.Typer(help="Active and past grants.", no_args_is_help=True)
rules_app = typer.Typer(help="Approval rules per connection or tag.", no_args_is_help=True)
tasks_app = typer.Typer(help="Agent tasks that grants are scoped to.", no_args_is_help=True)
sessions_app = typer.Typer(help="Recorded sessions.", no_args_is_help=True)
mask_app = typer.Typer(help="Data masking: test profiles, manage them.", no_args_is_help=True)
mask_profiles_app = typer.Typer(help="Mask profiles.", no_args_is_help=True)
mask_app.add_typer(mask_profiles_app, name="profiles")
app.add_typer(connections_app, name="connections")
app.add_typer(tokens_app, name="tokens")
app.add_typer(users_app, name="users")
app.add_typer(delegations_app, name="delegations")
app.add_typer(audit_app, name="audit")
app.add_typer(vault_app, name="vault")
app.add_typer(policy_app, name="policy")
app.add_typer(requests_app, name="requests")
app.add_typer(grants_app, name="grants")
app.add_typer(rules_app, name="rules")
app.add_typer(tasks_app, name="tasks")
app.add_typer(sessions_app, name="sessions")
app.add_typer(mask_app, name="mask")
app.add_typer(ssh_keys_app, name="ssh-keys")

Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json")]
Server = Annotated[str | None, typer.Option("--server", help="API URL (JITGATE_SERVER)")]

_DURATION = re.compile(r"(\d+)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """``90``, ``15m``, ``12h``, ``30d``, ``2w`` → seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise CLIError(f"invalid duration {text!r}: use e.g. 3600, 15m, 12h, 30d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def read_secret_stdin(what: str) -> str:
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"{what}: ")
    else:
        value = sys.stdin.read().rstrip("\r\n")
    if not value:
        raise CLIError(f"no {what} on stdin")
    return value


def read_secret_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"cannot read {what} file {path}: {exc.strerror}") from None


def _parse_pairs(pairs: list[str] | None, what: str) -> dict[str, str]:
    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"{what} {pair!r} is not KEY=VALUE")
        result[key.strip()] = value.strip()
    return result


def _option_value(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


# ---------------------------------------------------------------------- serve


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option("--config", help="YAML/TOML config file")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="state directory")] = None,
) -> None:
    """Run the gateway: the API and the protocol listeners."""
    from jitgate.config import ConfigError, load_settings
    from jitgate.server.serve import serve as run_serve

    overrides = {"data_dir": str(data_dir)} if data_dir else None
    try:
        settings = load_settings(config, overrides=overrides)
        code = run_serve(settings)
    except ConfigError as exc:
        raise CLIError(str(exc), exit_code=2) from None
    raise typer.Exit(code)


# ----------------------------------------------------------------- identity


@app.command()
def login(
    server: Server = None,
    username: Annotated[str | None, typer.Option(help="local user name")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    browser: Annotated[bool, typer.Option("--browser", help="OIDC auth code + PKCE")] = False,
    no_open: Annotated[bool, typer.Option("--no-open", help="print the URL only")] = False,
) -> None:
    """Log in (local password, or OIDC device / browser flow) and save the token."""
    client = APIClient.from_env(server)
    client.saved = None  # a new login, not a renewal of the saved one
    saved: dict[str, Any] = {"server": client.server}
    if username:
        del password_stdin  # the password is always read from stdin (or a tty prompt)
        password = read_secret_stdin("password")
        result = client.request(
            "POST",
            "/api/v1/login",
            json_body={"username": username, "password": password},
            auth=False,
        )
        saved.update(token=result["token"], method="local")
    else:
        saved.update(_oidc_login(client, browser=browser, no_open=no_open))
    client.token = saved["token"]
    who = client.request("GET", "/api/v1/whoami")
    path = save_credentials(saved)
    typer.echo(f"logged in as {who['identity']['name']} (credentials saved to {path})")


def _oidc_login(client: APIClient, *, browser: bool, no_open: bool) -> dict[str, Any]:
    import httpx

    from jitgate.errors import JitgateError
    from jitgate.identity import oidc_flows

    config = client.request("GET", "/api/v1/auth/config", auth=False)
    oidc = config.get("oidc")
    if not oidc or not oidc.get("client_id"):
        raise CLIError("this gateway has no OIDC login; use --username")
    issuer = oidc["issuer"].rstrip("/")
    with httpx.Client(timeout=30, verify=issuer_tls_verify()) as http:
        try:
            discovery = http.get(issuer + "/.well-known/openid-configuration").json()
            if browser:

                def open_url(url: str) -> None:
                    typer.echo(f"Open this URL to log in:\n  {url}")
                    if not no_open:
                        import webbrowser

                        webbrowser.open(url)

                tokens = oidc_flows.pkce_flow(
                    discovery,
                    oidc["client_id"],
                    oidc["scopes"],
                    http=http,
                    open_browser=open_url,
                )
            else:

                def prompt(uri: str, code: str, complete: str | None) -> None:
                    typer.echo(f"To log in, open {complete or uri}\nand enter the code: {code}")

                tokens = oidc_flows.device_flow(
                    discovery, oidc["client_id"], oidc["scopes"], http=http, prompt=prompt
                )
        except JitgateError as exc:
            raise CLIError(f"login failed: {exc.message}") from None
        except (httpx.HTTPError, ValueError) as exc:
            raise CLIError(issuer_error(issuer, exc)) from None
    return {
        "token": login_token(tokens),
        "method": "oidc",
        "refresh_token": tokens.refresh_token,
        "issuer": issuer,
        "client_id": oidc["client_id"],
    }


@app.command()
def logout() -> None:
    """Forget the saved token."""
    saved = load_saved()
    saved.pop("token", None)
    saved.pop("refresh_token", None)
    save_credentials(saved)
    typer.echo("logged out")


@app.command()
def whoami(server: Server = None, output: Output = OutputFormat.TABLE) -> None:
    """Show who the current token identifies."""
    who = APIClient.from_env(server).request("GET", "/api/v1/whoami")
    if output is OutputFormat.JSON:
        emit_json(who)
        return
    ident = who["identity"]
    row = {
        "name": ident["name"],
        "kind": ident["kind"],
        "groups": ident["groups"],
        "roles": ident["roles"],
        "method": who["method"],
        "expires_at": who["expires_at"],
    }
    if who.get("actor"):
        row["actor"] = who["actor"]["name"]
    emit_one(row, output)


# -------------------------------------------------------------- connections

CONNECTION_COLUMNS = [
    "name",
    "type",
    "host",
    "port",
    "database",
    "username",
    "tls_mode",
    "tags",
    "credential",
]


def _connection_row(c: dict[str, Any]) -> dict[str, Any]:
    return {**c, "credential": c["credential"]["kind"] if c.get("credential") else None}


@connections_app.command("add")
def connections_add(
    name: str,
    type: Annotated[str, typer.Option("--type", help="postgres, mysql, ssh, http, kubernetes")],
    host: Annotated[str, typer.Option()],
    port: Annotated[int | None, typer.Option()] = None,
    database: Annotated[str | None, typer.Option()] = None,
    username: Annotated[str | None, typer.Option()] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    private_key_file: Annotated[Path | None, typer.Option("--private-key-file")] = None,
    token_stdin: Annotated[bool, typer.Option("--token-stdin")] = False,
    tls_mode: Annotated[str | None, typer.Option("--tls-mode")] = None,
    tls_ca_file: Annotated[Path | None, typer.Option("--tls-ca-file")] = None,
    tls_server_name: Annotated[str | None, typer.Option("--tls-server-name")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE, repeatable")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="KEY=VALUE")] = None,
    mask_profile: Annotated[str | None, typer.Option("--mask-profile")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Register a connection; its credential is encrypted and never shown again."""
    if sum([password_stdin, private_key_file is not None, token_stdin]) > 1:
        raise CLIError("give only one of --password-stdin, --private-key-file, --token-stdin")
    body: dict[str, Any] = {"name": name, "type": type, "host": host}
    for key, value in (
        ("port", port),
        ("database", database),
        ("username", username),
        ("tls_mode", tls_mode),
        ("tls_server_name", tls_server_name),
        ("description", description),
    ):
        if value is not None:
            body[key] = value
    if tls_ca_file:
        body["tls_ca"] = read_secret_file(tls_ca_file, "CA")
    body["tags"] = _parse_pairs(tag, "tag")
    options = {k: _option_value(v) for k, v in _parse_pairs(option, "option").items()}
    if mask_profile:
        options["mask_profile"] = mask_profile
    body["options"] = options
    if password_stdin:
        body["password"] = read_secret_stdin("password")
    if private_key_file:
        body["private_key"] = read_secret_file(private_key_file, "private key")
    if token_stdin:
        body["token"] = read_secret_stdin("token")
    result = APIClient.from_env(server).request("POST", "/api/v1/connections", json_body=body)
    if output is OutputFormat.JSON:
        emit_json(result)
    else:
        typer.echo(f"connection {result['name']} added")


@connections_app.command("update")
def connections_update(
    name: str,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    database: Annotated[str | None, typer.Option()] = None,
    username: Annotated[str | None, typer.Option()] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    private_key_file: Annotated[Path | None, typer.Option("--private-key-file")] = None,
    token_stdin: Annotated[bool, typer.Option("--token-stdin")] = False,
    tls_mode: Annotated[str | None, typer.Option("--tls-mode")] = None,
    tls_ca_file: Annotated[Path | None, typer.Option("--tls-ca-file")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="replaces all tags")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", help="KEY=VALUE (KEY= removes it)")
    ] = None,
    mask_profile: Annotated[
        str | None, typer.Option("--mask-profile", help='"" removes the default profile')
    ] = None,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Change a connection (only the given fields; options are merged key by key)."""
    body: dict[str, Any] = {}
    client = APIClient.from_env(server)
    changes = _parse_pairs(option, "option")
    if mask_profile is not None:
        changes["mask_profile"] = mask_profile
    if changes:
        current = client.request("GET", f"/api/v1/connections/{name}")
        options = dict(current.get("options") or {})
        for option_key, option_value in changes.items():
            if option_value == "":
                options.pop(option_key, None)
            else:
                options[option_key] = _option_value(option_value)
        body["options"] = options
    for key, value in (
        ("host", host),
        ("port", port),
        ("database", database),
        ("username", username),
        ("tls_mode", tls_mode),
    ):
        if value is not None:
            body[key] = value
    if tls_ca_file:
        body["tls_ca"] = read_secret_file(tls_ca_file, "CA")
    if tag is not None:
        body["tags"] = _parse_pairs(tag, "tag")
    if password_stdin:
        body["password"] = read_secret_stdin("password")
    if private_key_file:
        body["private_key"] = read_secret_file(private_key_file, "private key")
    if token_stdin:
        body["token"] = read_secret_stdin("token")
    result = client.request("PATCH", f"/api/v1/connections/{name}", json_body=body)
    if output is OutputFormat.JSON:
        emit_json(result)
    else:
        typer.echo(f"connection {result['name']} updated")


@connections_app.command("list")
def connections_list(
    type: Annotated[str | None, typer.Option("--type")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE filter")] = None,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List connections."""
    params: dict[str, Any] = {}
    if type:
        params["type"] = type
    if tag:
        params["tag"] = tag
    rows = APIClient.from_env(server).paged("/api/v1/connections", params)
    emit_list(
        rows if output is OutputFormat.JSON else [_connection_row(r) for r in rows],
        CONNECTION_COLUMNS,
        output,
    )


@connections_app.command("show")
def connections_show(name: str, server: Server = None, output: Output = OutputFormat.TABLE) -> None:
    """Show one connection (never its credential)."""
    row = APIClient.from_env(server).request("GET", f"/api/v1/connections/{name}")
    emit_one(row if output is OutputFormat.JSON else _connection_row(row), output)


@connections_app.command("rm")
def connections_rm(name: str, server: Server = None) -> None:
    """Delete a connection."""
    APIClient.from_env(server).request("DELETE", f"/api/v1/connections/{name}")
    typer.echo(f"connection {name} removed")


# ------------------------------------------------------------------- tokens

TOKEN_COLUMNS = ["id", "identity", "identity_kind", "name", "expires_at", "last_used_at", "active"]


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str | None, typer.Option("--name")] = None,
    user: Annotated[str | None, typer.Option("--user")] = None,
    agent: Annotated[str | None, typer.Option("--agent")] = None,
    expires_in: Annotated[str | None, typer.Option("--expires-in", help="e.g. 30d")] = None,
    create_agent: Annotated[
        bool, typer.Option("--create-agent/--no-create-agent", help="create the agent if missing")
    ] = True,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create a token (printed once) for yourself, a user, or an agent."""
    if user and agent:
        raise CLIError("give either --user or --agent")
    body: dict[str, Any] = {"name": name or "default"}
    if user:
        body["user"] = user
    if agent:
        body["agent"] = agent
        body["create_agent"] = create_agent
    if expires_in:
        body["expires_in"] = parse_duration(expires_in)
    result = APIClient.from_env(server).request("POST", "/api/v1/tokens", json_body=body)
    if output is OutputFormat.JSON:
        emit_json(result)
        return
    typer.echo(result["token"])
    typer.echo(
        f"token {result['id']} for {result['identity_kind']} {result['identity']}, "
        f"expires {result['expires_at']}. It is shown only once.",
        err=True,
    )


@tokens_app.command("list")
def tokens_list(
    identity: Annotated[str | None, typer.Option("--identity")] = None,
    all: Annotated[bool, typer.Option("--all", help="every identity's tokens")] = False,
    include_inactive: Annotated[bool, typer.Option("--include-inactive")] = False,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List tokens (yours by default)."""
    params: dict[str, Any] = {"all": all, "include_inactive": include_inactive}
    if identity:
        params["identity"] = identity
    emit_list(APIClient.from_env(server).paged("/api/v1/tokens", params), TOKEN_COLUMNS, output)


@tokens_app.command("revoke")
def tokens_revoke(token_id: str, server: Server = None) -> None:
    """Revoke a token by id."""
    result = APIClient.from_env(server).request("DELETE", f"/api/v1/tokens/{token_id}")
    typer.echo(f"token {result['id']} revoked")


@tokens_app.command("exchange")
def tokens_exchange(
    delegation: Annotated[str | None, typer.Option("--delegation", help="delegation id")] = None,
    subject_token_stdin: Annotated[
        bool, typer.Option("--subject-token-stdin", help="the user's token on stdin")
    ] = False,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """As an agent (JITGATE_TOKEN), get a short-lived token acting for a user."""
    from jitgate.identity.delegation import (
        GRANT_TYPE,
        TOKEN_TYPE_ACCESS,
        TOKEN_TYPE_DELEGATION,
    )

    if bool(delegation) == subject_token_stdin:
        raise CLIError("give exactly one of --delegation or --subject-token-stdin")
    client = APIClient.from_env(server)
    if not client.token:
        raise CLIError("the agent's own token is needed in JITGATE_TOKEN")
    body = {
        "grant_type": GRANT_TYPE,
        "actor_token": client.token,
        "subject_token": delegation or read_secret_stdin("subject token"),
        "subject_token_type": TOKEN_TYPE_DELEGATION if delegation else TOKEN_TYPE_ACCESS,
    }
    result = client.request("POST", "/api/v1/tokens/exchange", json_body=body, auth=False)
    if output is OutputFormat.JSON:
        emit_json(result)
    else:
        typer.echo(result["access_token"])


# -------------------------------------------------------------------- users

USER_COLUMNS = ["name", "kind", "groups", "roles", "source", "disabled", "owner"]


@users_app.command("add")
def users_add(
    name: str,
    group: Annotated[list[str] | None, typer.Option("--group", help="repeatable")] = None,
    agent: Annotated[bool, typer.Option("--agent", help="a non-human identity")] = False,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    email: Annotated[str | None, typer.Option()] = None,
    display_name: Annotated[str | None, typer.Option("--display-name")] = None,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create a user (or, with --agent, an agent)."""
    body: dict[str, Any] = {
        "name": name,
        "kind": "agent" if agent else "user",
        "groups": group or [],
    }
    if password_stdin:
        body["password"] = read_secret_stdin("password")
    if email:
        body["email"] = email
    if display_name:
        body["display_name"] = display_name
    result = APIClient.from_env(server).request("POST", "/api/v1/users", json_body=body)
    if output is OutputFormat.JSON:
        emit_json(result)
    else:
        typer.echo(f"{result['kind']} {result['name']} added (roles: {', '.join(result['roles'])})")


@users_app.command("list")
def users_list(
    kind: Annotated[str | None, typer.Option("--kind", help="user or agent")] = None,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List users and agents."""
    params = {"kind": kind} if kind else {}
    emit_list(APIClient.from_env(server).paged("/api/v1/users", params), USER_COLUMNS, output)


@users_app.command("show")
def users_show(name: str, server: Server = None, output: Output = OutputFormat.TABLE) -> None:
    """Show one identity."""
    emit_one(APIClient.from_env(server).request("GET", f"/api/v1/users/{name}"), output)


@users_app.command("update")
def users_update(
    name: str,
    group: Annotated[list[str] | None, typer.Option("--group", help="replaces all groups")] = None,
    disable: Annotated[bool | None, typer.Option("--disable/--enable")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    server: Server = None,
) -> None:
    """Change groups, enable/disable, or set a password."""
    body: dict[str, Any] = {}
    if group is not None:
        body["groups"] = group
    if disable is not None:
        body["disabled"] = disable
    if password_stdin:
        body["password"] = read_secret_stdin("password")
    if not body:
        raise CLIError("nothing to change")
    APIClient.from_env(server).request("PATCH", f"/api/v1/users/{name}", json_body=body)
    typer.echo(f"{name} updated")


@users_app.command("rm")
def users_rm(name: str, server: Server = None) -> None:
    """Delete a user or agent (and its tokens)."""
    APIClient.from_env(server).request("DELETE", f"/api/v1/users/{name}")
    typer.echo(f"{name} removed")


# -------------------------------------------------------------- delegations


@delegations_app.command("create")
def delegations_create(
    agent: Annotated[str, typer.Option("--agent")],
    expires_in: Annotated[str, typer.Option("--expires-in", help="e.g. 1h")] = "1h",
    connection: Annotated[list[str] | None, typer.Option("--connection")] = None,
    reason: Annotated[str | None, typer.Option("--reason")] = None,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Consent that AGENT may act on your behalf until the delegation expires."""
    body: dict[str, Any] = {"agent": agent, "expires_in": parse_duration(expires_in)}
    if connection:
        body["connections"] = connection
    if reason:
        body["reason"] = reason
    result = APIClient.from_env(server).request("POST", "/api/v1/delegations", json_body=body)
    if output is OutputFormat.JSON:
        emit_json(result)
    else:
        typer.echo(f"delegation {result['id']} to {agent}, expires {result['expires_at']}")


@delegations_app.command("list")
def delegations_list(server: Server = None, output: Output = OutputFormat.TABLE) -> None:
    """List delegations."""
    rows = APIClient.from_env(server).paged("/api/v1/delegations")
    emit_list(rows, ["id", "user", "agent", "expires_at", "active", "connections"], output)


@delegations_app.command("revoke")
def delegations_revoke(delegation_id: str, server: Server = None) -> None:
    """Revoke a delegation: tokens issued from it stop working at once."""
    APIClient.from_env(server).request("DELETE", f"/api/v1/delegations/{delegation_id}")
    typer.echo(f"delegation {delegation_id} revoked")


# -------------------------------------------------------------------- audit


@audit_app.command("list")
def audit_list(
    action: Annotated[str | None, typer.Option("--action", help="e.g. connection:* ")] = None,
    actor: Annotated[str | None, typer.Option("--actor")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 100,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Administrative actions: who changed what, when."""
    params: dict[str, Any] = {"limit": min(limit, 500)}
    if action:
        params["action"] = action
    if actor:
        params["actor"] = actor
    rows = APIClient.from_env(server).paged("/api/v1/audit", params, limit=limit)
    emit_list(
        rows, ["id", "at", "actor", "action", "target_name", "outcome", "client_addr"], output
    )


# -------------------------------------------------------------------- vault


@vault_app.command("rotate-key")
def vault_rotate_key(
    config: Annotated[Path | None, typer.Option("--config")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
    new_key_stdin: Annotated[
        bool,
        typer.Option("--new-key-stdin", help="read the new key (base64) instead of generating one"),
    ] = False,
) -> None:
    """Re-encrypt every stored credential under a new master key."""
    from jitgate.config import ConfigError, load_settings
    from jitgate.server.keyrotation import rotate_master_key

    try:
        settings = load_settings(
            config, overrides={"data_dir": str(data_dir)} if data_dir else None
        )
        new_key = read_secret_stdin("new master key") if new_key_stdin else None
        message = rotate_master_key(settings, new_key)
    except ConfigError as exc:
        raise CLIError(str(exc), exit_code=2) from None
    typer.echo(message)


# ------------------------------------------------------------------- policy


@policy_app.command("add")
def policy_add(
    name: str,
    file: Annotated[Path, typer.Option("--file", "-f", help="Cedar file")],
    description: Annotated[str | None, typer.Option("--description")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="replace if it exists")] = False,
    disabled: Annotated[bool, typer.Option("--disabled")] = False,
    server: Server = None,
) -> None:
    """Add (or with --replace, replace) a policy document; rejected whole if invalid."""
    text = read_secret_file(file, "policy")
    client = APIClient.from_env(server)
    body: dict[str, Any] = {"text": text, "enabled": not disabled}
    if description:
        body["description"] = description
    if replace:
        result = client.request("PUT", f"/api/v1/policies/{name}", json_body=body)
    else:
        result = client.request("POST", "/api/v1/policies", json_body={"name": name, **body})
    typer.echo(f"policy {result['name']} saved: {', '.join(result['policies'])}")


@policy_app.command("list")
def policy_list(server: Server = None, output: Output = OutputFormat.TABLE) -> None:
    """List policy documents and the policies in them."""
    rows = APIClient.from_env(server).request("GET", "/api/v1/policies")["items"]
    emit_list(rows, ["name", "enabled", "policies", "updated_at", "created_by"], output)


@policy_app.command("show")
def policy_show(name: str, server: Server = None, output: Output = OutputFormat.TABLE) -> None:
    """Print a policy document."""
    result = APIClient.from_env(server).request("GET", f"/api/v1/policies/{name}")
    if output is OutputFormat.JSON:
        emit_json(result)
    else:
        typer.echo(result["text"])


@policy_app.command("rm")
def policy_rm(name: str, server: Server = None) -> None:
    """Remove a policy document."""
    APIClient.from_env(server).request("DELETE", f"/api/v1/policies/{name}")
    typer.echo(f"policy {name} removed")


@policy_app.command("validate")
def policy_validate(
    file: Annotated[Path, typer.Option("--file", "-f")],
    name: Annotated[str, typer.Option("--name")] = "candidate",
    server: Server = None,
) -> None:
    """Check a Cedar file alone and together with the installed policies."""
    result = APIClient.from_env(server).request(
        "POST",
        "/api/v1/policies/validate",
        json_body={"name": name, "text": read_secret_file(file, "policy")},
    )
    typer.echo(f"valid: {', '.join(result['policies'])}")


@policy_app.command("test")
def policy_test(
    user: Annotated[str, typer.Option("--user")],
    connection: Annotated[str, typer.Option("--connection")],
    sql: Annotated[str | None, typer.Option("--sql")] = None,
    action: Annotated[str | None, typer.Option("--action", help="e.g. connect, ssh:exec")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="agent acting for the user")] = None,
    at: Annotated[str | None, typer.Option("--at", help="ISO time, default now")] = None,
    has_grant: Annotated[bool, typer.Option("--has-grant")] = False,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Evaluate a hypothetical request and explain which policies decided it."""
    body: dict[str, Any] = {"user": user, "connection": connection, "has_grant": has_grant}
    for key, value in (("sql", sql), ("action", action), ("actor", actor), ("at", at)):
        if value is not None:
            body[key] = value
    result = APIClient.from_env(server).request("POST", "/api/v1/policies/test", json_body=body)
    if output is OutputFormat.JSON:
        emit_json(result)
        return
    typer.echo(
        f"{result['outcome'].upper()}: {result['action']}"
        + (f" — {result['reason']}" if result["reason"] else "")
    )
    if result["mask_profile"]:
        typer.echo(f"mask profile: {result['mask_profile']}")
    typer.echo(f"decided by: {', '.join(result['decided_by']) or '(default deny)'}")
    for policy in result["matched"]:
        typer.echo(f"  matched {policy['effect']:<7} {policy['name']} ({policy['document']})")
    for error in result["errors"]:
        typer.echo(f"  error   {error}")
    typer.echo(f"risk: {result['context'].get('risk')}")


# ----------------------------------------------------------------- requests

REQUEST_COLUMNS = [
    "id",
    "status",
    "kind",
    "requester",
    "actor",
    "connection",
    "reason",
    "current_step",
    "expires_at",
]


@requests_app.command("create")
def requests_create(
    connection: Annotated[str, typer.Option("--connection")],
    reason: Annotated[str, typer.Option("--reason")],
    duration: Annotated[str, typer.Option("--duration", help="e.g. 30m, 2h")] = "1h",
    ticket: Annotated[str | None, typer.Option("--ticket")] = None,
    task_id: Annotated[str | None, typer.Option("--task-id")] = None,
    max_uses: Annotated[int | None, typer.Option("--max-uses")] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="a role or action the grant is for (repeatable)"),
    ] = None,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Ask for just-in-time access to a connection."""
    body: dict[str, Any] = {
        "connection": connection,
        "reason": reason,
        "duration_seconds": parse_duration(duration),
    }
    if scope:
        body["scope"] = scope
    for key, value in (("ticket", ticket), ("task_id", task_id), ("max_uses", max_uses)):
        if value is not None:
            body[key] = value
    result = APIClient.from_env(server).request("POST", "/api/v1/requests", json_body=body)
    if output is OutputFormat.JSON:
        emit_json(result)
    else:
        typer.echo(f"request {result['id']} is {result['status']}")


@requests_app.command("list")
def requests_list(
    status: Annotated[str | None, typer.Option("--status", help="pending, approved, …")] = None,
    connection: Annotated[str | None, typer.Option("--connection")] = None,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List access requests (approvers see everyone's)."""
    params = {k: v for k, v in (("status", status), ("connection", connection)) if v}
    rows = APIClient.from_env(server).paged("/api/v1/requests", params)
    emit_list(rows, REQUEST_COLUMNS, output)


@requests_app.command("show")
def requests_show(
    request_id: str, server: Server = None, output: Output = OutputFormat.TABLE
) -> None:
    """Show one request with its approvals."""
    emit_one(APIClient.from_env(server).request("GET", f"/api/v1/requests/{request_id}"), output)


def _decide(request_id: str, verb: str, comment: str | None, server: str | None) -> None:
    result = APIClient.from_env(server).request(
        "POST", f"/api/v1/requests/{request_id}/{verb}", json_body={"comment": comment}
    )
    extra = f", grant {result['grant_id']}" if result.get("grant_id") else ""
    typer.echo(f"request {result['id']} is {result['status']}{extra}")


@requests_app.command("approve")
def requests_approve(
    request_id: str,
    comment: Annotated[str | None, typer.Option("--comment")] = None,
    server: Server = None,
) -> None:
    """Approve a pending request (or its current step)."""
    _decide(request_id, "approve", comment, server)


@requests_app.command("deny")
def requests_deny(
    request_id: str,
    comment: Annotated[str | None, typer.Option("--comment")] = None,
    server: Server = None,
) -> None:
    """Deny a pending request."""
    _decide(request_id, "deny", comment, server)


@requests_app.command("cancel")
def requests_cancel(request_id: str, server: Server = None) -> None:
    """Withdraw your own pending request."""
    result = APIClient.from_env(server).request("POST", f"/api/v1/requests/{request_id}/cancel")
    typer.echo(f"request {result['id']} is {result['status']}")


@app.command("break-glass")
def break_glass(
    connection: Annotated[str, typer.Option("--connection")],
    reason: Annotated[str, typer.Option("--reason")],
    duration: Annotated[str, typer.Option("--duration")] = "1h",
    server: Server = None,
) -> None:
    """Emergency access without approval: granted at once, flagged and notified."""
    result = APIClient.from_env(server).request(
        "POST",
        "/api/v1/break-glass",
        json_body={
            "connection": connection,
            "reason": reason,
            "duration_seconds": parse_duration(duration),
        },
    )
    typer.echo(f"BREAK-GLASS grant {result['id']} on {connection} until {result['ends_at']}")


# ------------------------------------------------------------------- grants

GRANT_COLUMNS = [
    "id",
    "kind",
    "identity",
    "actor",
    "connection",
    "ends_at",
    "uses",
    "max_uses",
    "task_id",
    "active",
]


@grants_app.command("list")
def grants_list(
    all: Annotated[bool, typer.Option("--all", help="include ended grants")] = False,
    identity: Annotated[str | None, typer.Option("--identity")] = None,
    connection: Annotated[str | None, typer.Option("--connection")] = None,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List grants (active ones by default)."""
    params: dict[str, Any] = {"all": all}
    if identity:
        params["identity"] = identity
    if connection:
        params["connection"] = connection
    rows = APIClient.from_env(server).paged("/api/v1/grants", params)
    emit_list(rows, GRANT_COLUMNS, output)


@grants_app.command("show")
def grants_show(grant_id: str, server: Server = None, output: Output = OutputFormat.TABLE) -> None:
    """Show one grant."""
    emit_one(APIClient.from_env(server).request("GET", f"/api/v1/grants/{grant_id}"), output)


@grants_app.command("revoke")
def grants_revoke(
    grant_id: str,
    reason: Annotated[str, typer.Option("--reason")] = "revoked",
    server: Server = None,
) -> None:
    """Revoke a grant now; sessions that depend on it are ended."""
    APIClient.from_env(server).request(
        "POST", f"/api/v1/grants/{grant_id}/revoke", json_body={"reason": reason}
    )
    typer.echo(f"grant {grant_id} revoked")


@tasks_app.command("complete")
def tasks_complete(task_id: str, server: Server = None) -> None:
    """Mark an agent task complete: grants scoped to it end now."""
    result = APIClient.from_env(server).request("POST", f"/api/v1/tasks/{task_id}/complete")
    cancelled = len(result.get("cancelled_requests", ()))
    typer.echo(
        f"task {task_id} complete; {len(result['items'])} grant(s) ended, "
        f"{cancelled} pending request(s) cancelled"
    )


# -------------------------------------------------------------------- rules


@rules_app.command("list")
def rules_list(server: Server = None, output: Output = OutputFormat.TABLE) -> None:
    """List approval rules."""
    rows = APIClient.from_env(server).request("GET", "/api/v1/approval-rules")["items"]
    emit_list(
        rows,
        [
            "name",
            "priority",
            "connections",
            "tags",
            "steps",
            "max_duration_seconds",
            "auto_approve_groups",
        ],
        output,
    )


@rules_app.command("put")
def rules_put(
    name: str,
    file: Annotated[Path, typer.Option("--file", "-f", help="YAML or JSON rule")],
    server: Server = None,
) -> None:
    """Create or replace an approval rule from a YAML/JSON file."""
    import yaml

    body = yaml.safe_load(read_secret_file(file, "rule"))
    if not isinstance(body, dict):
        raise CLIError("the rule file must hold a mapping")
    body["name"] = name
    APIClient.from_env(server).request("PUT", f"/api/v1/approval-rules/{name}", json_body=body)
    typer.echo(f"approval rule {name} saved")


@rules_app.command("rm")
def rules_rm(name: str, server: Server = None) -> None:
    """Remove an approval rule."""
    APIClient.from_env(server).request("DELETE", f"/api/v1/approval-rules/{name}")
    typer.echo(f"approval rule {name} removed")


# ----------------------------------------------------------------- sessions

# sessions list|show|replay and audit verify|export live in jitgate.cli.sessions
sessions_commands.register(sessions_app, audit_app)


# -------------------------------------------------------------------- mask


@mask_app.command("test")
def mask_test(
    profile: Annotated[str, typer.Option("--profile")],
    column: Annotated[str | None, typer.Option("--column")] = None,
    table: Annotated[str | None, typer.Option("--table")] = None,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Read text on stdin; show each line masked and why."""
    client = APIClient.from_env(server)
    results = []
    for line in sys.stdin.read().splitlines():
        result = client.request(
            "POST",
            "/api/v1/masking/test",
            json_body={"profile": profile, "text": line, "column": column, "table": table},
        )
        results.append({"input": line, **result})
    if output is OutputFormat.JSON:
        emit_json(results)
        return
    for result in results:
        typer.echo(result["masked"] if result["masked"] is not None else "NULL")
        for finding in result["findings"]:
            typer.echo(
                f"    {finding['type']:<8} [{finding['start']}:{finding['end']}] {finding['why']}"
            )


@mask_profiles_app.command("list")
def mask_profiles_list(server: Server = None, output: Output = OutputFormat.TABLE) -> None:
    """List mask profiles (built-in and stored)."""
    rows = APIClient.from_env(server).request("GET", "/api/v1/masking/profiles")["items"]
    if output is OutputFormat.JSON:
        emit_json(rows)
        return
    emit_list(
        [
            {
                "name": r["name"],
                "builtin": r["builtin"],
                "rules": len(r["definition"].get("rules", [])),
            }
            for r in rows
        ],
        ["name", "builtin", "rules"],
        output,
    )


@mask_profiles_app.command("put")
def mask_profiles_put(
    name: str, file: Annotated[Path, typer.Option("--file", "-f")], server: Server = None
) -> None:
    """Create or replace a mask profile from a YAML/JSON file."""
    import yaml

    definition = yaml.safe_load(read_secret_file(file, "profile"))
    if not isinstance(definition, dict):
        raise CLIError("the profile file must hold a mapping")
    APIClient.from_env(server).request(
        "PUT", f"/api/v1/masking/profiles/{name}", json_body={"definition": definition}
    )
    typer.echo(f"mask profile {name} saved")


@mask_profiles_app.command("rm")
def mask_profiles_rm(name: str, server: Server = None) -> None:
    """Remove a stored mask profile."""
    APIClient.from_env(server).request("DELETE", f"/api/v1/masking/profiles/{name}")
    typer.echo(f"mask profile {name} removed")


def main() -> None:
    try:
        result = app(standalone_mode=False, prog_name="jitgate")
        sys.exit(result if isinstance(result, int) else 0)
    except CLIError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors and the like
        # Typer may bundle its own copy of click, so match the exceptions by shape: a usage
        # error prints its message and usage line (exit 2), never a traceback.
        names = {cls.__name__ for cls in type(exc).__mro__}
        if "ClickException" in names:
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        if "Exit" in names and hasattr(exc, "exit_code"):
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
