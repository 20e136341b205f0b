"""The Cedar schema policies are validated against when they are submitted.

It declares what the engine (:mod:`.cedar`) puts in front of Cedar:

* entity types ``User`` and ``Agent`` (attributes ``name``, ``kind``, ``groups``; members
  of ``Group``), ``Group`` and ``Connection`` (``name``, ``type``, ``tags``);
* every action (``connect``, ``sql:<kind>`` for each statement kind, ``ssh:exec`` …) with
  its groups (``sql``, ``sql:read``, ``sql:write``, ``sql:admin``, ``ssh``);
* the context record: each attribute with its type; ``has_where``, ``copy_target`` and
  ``actor`` are optional (test them with ``context has has_where`` first).

So a typo (``context.riks``, ``Action::"sql:dellete"``, ``principal.grups``) or a type
error (``context.risk == "high"``) is refused with Cedar's own message, instead of
failing closed at run time. Tags are operator-defined: ``resource.tags`` is a record
whose attributes are the tag names the policies being validated use, each an optional
string (``resource.tags has env && resource.tags.env == "prod"``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import cedarpy

from jitgate.errors import InvalidInput
from jitgate.policy.cedar import PolicyDocument, _action_parents
from jitgate.sql.types import CommandKind

_POLICY_PREFIX = re.compile(r"^\[policy\d+\] (for policy `policy\d+`, )?")
_PER_ACTION = re.compile(r' for Action::"[^"]*"')

SSH_ACTIONS = ("exec", "shell", "line", "sftp_read", "sftp_write", "forward", "env")
PRINCIPALS = ["User", "Agent"]

_STRING = {"type": "String"}
_BOOL = {"type": "Boolean"}
_LONG = {"type": "Long"}
_STRINGS = {"type": "Set", "element": {"type": "String"}}


def _optional(attr: dict[str, Any]) -> dict[str, Any]:
    return {**attr, "required": False}


CONTEXT: dict[str, Any] = {
    "kind": _STRING,
    "risk": _LONG,
    "hour": _LONG,
    "weekday": _LONG,
    "business_hours": _BOOL,
    "is_agent": _BOOL,
    "client_addr": _STRING,
    "has_grant": _BOOL,
    "grant_scopes": _STRINGS,
    "unknown": _BOOL,
    "dangerous": _BOOL,
    "dangerous_reasons": _STRINGS,
    "tag": _STRING,
    "tables_read": _STRINGS,
    "tables_written": _STRINGS,
    "functions": _STRINGS,
    "trivial_where": _BOOL,
    "writes_in_cte": _BOOL,
    "text": _STRING,
    "has_where": _optional(_BOOL),
    "copy_target": _optional(_STRING),
    "actor": _optional(
        {
            "type": "Record",
            "attributes": {"name": _STRING, "kind": _STRING, "groups": _STRINGS},
        }
    ),
}


def action_ids() -> dict[str, list[str]]:
    """Every action the gateway asks about, with the action groups it is in."""
    names = ["connect", *(f"sql:{kind.value}" for kind in CommandKind)]
    names += [f"ssh:{kind}" for kind in SSH_ACTIONS]
    return {name: [parent["id"] for parent in _action_parents(name)] for name in names}


GROUPS = ("sql", "sql:read", "sql:write", "sql:admin", "ssh")


def schema(tag_names: Iterable[str] = ()) -> dict[str, Any]:
    """The schema in Cedar's JSON form; ``tag_names`` are the connection tags it knows."""
    identity = {
        "memberOfTypes": ["Group"],
        "shape": {
            "type": "Record",
            "attributes": {"name": _STRING, "kind": _STRING, "groups": _STRINGS},
        },
    }
    tags = {name: _optional(_STRING) for name in sorted(set(tag_names))}
    applies = {
        "principalTypes": PRINCIPALS,
        "resourceTypes": ["Connection"],
        "context": {"type": "Record", "attributes": CONTEXT},
    }
    actions: dict[str, Any] = {group: {} for group in GROUPS}
    for action, parents in action_ids().items():
        actions[action] = {
            "memberOf": [{"id": parent} for parent in parents],
            "appliesTo": applies,
        }
    return {
        "": {
            "entityTypes": {
                "User": identity,
                "Agent": identity,
                "Group": {},
                "Connection": {
                    "shape": {
                        "type": "Record",
                        "attributes": {
                            "name": _STRING,
                            "type": _STRING,
                            "tags": {"type": "Record", "attributes": tags},
                        },
                    }
                },
            },
            "actions": actions,
        }
    }


def _tag_names(node: Any) -> Iterator[str]:
    """Tag names a policy reads: ``resource.tags.X`` and ``resource.tags has X``."""
    if isinstance(node, dict):
        for op in (".", "has"):
            inner = node.get(op)
            if (
                isinstance(inner, dict)
                and isinstance(inner.get("attr"), str)
                and inner.get("left") == {".": {"left": {"Var": "resource"}, "attr": "tags"}}
            ):
                yield inner["attr"]
        for value in node.values():
            yield from _tag_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _tag_names(value)


def check(document: PolicyDocument) -> None:
    """Validate one (parsed, valid Cedar) document against the schema.

    Raises :class:`InvalidInput` with Cedar's messages when it does not validate.
    """
    parsed = json.loads(cedarpy.policies_to_json_str(document.text))
    result = cedarpy.validate_policies(document.text, schema(set(_tag_names(parsed))))
    if result.validation_passed:
        return
    names = {
        policy_id: (policy.get("annotations") or {}).get("id")
        or f"{document.name}#{int(policy_id[6:])}"
        for policy_id, policy in parsed.get("staticPolicies", {}).items()
    }
    messages: list[str] = []
    for error in result.errors:  # Cedar repeats an error once per action: once is enough
        policy_id = getattr(error, "policy_id", None)
        text = _PER_ACTION.sub("", _POLICY_PREFIX.sub("", str(error)))
        if policy_id in names:
            text = f"{names[policy_id]}: {text}"
        if text not in messages:
            messages.append(text)
    errors = "; ".join(messages[:5])
    more = f" (and {len(messages) - 5} more)" if len(messages) > 5 else ""
    raise InvalidInput(
        f"policy {document.name!r} does not validate against the jitgate schema: {errors}{more}"
    )
