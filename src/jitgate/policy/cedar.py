"""The Cedar policy engine (cedarpy): pure, explainable decisions.

Model
-----
* principal: ``User::"<name>"`` or ``Agent::"<name>"``, member of ``Group::"<group>"``
  entities, with attributes ``name``, ``kind``, ``groups``. When an agent acts for a user
  the principal is the user and ``context.actor`` is the agent (``{name, kind, groups}``).
* action: ``Action::"connect"``, ``Action::"sql:select"``, ``Action::"sql:delete"``,
  ``Action::"ssh:exec"``… each ``sql:*`` action is ``in Action::"sql"`` and in one of
  ``Action::"sql:read"``, ``Action::"sql:write"``, ``Action::"sql:admin"``.
* resource: ``Connection::"<name>"`` with ``name``, ``type`` and ``tags`` (a record:
  test with ``resource.tags has env && resource.tags.env == "prod"``).
* context: ``kind``, ``tag``, ``unknown``, ``dangerous``, ``dangerous_reasons``,
  ``tables_read``, ``tables_written``, ``functions``, ``has_where`` (only present for
  UPDATE/DELETE), ``trivial_where``, ``writes_in_cte``, ``text``, ``risk`` (0–100,
  :mod:`.risk`), ``hour``, ``weekday``, ``business_hours``, ``is_agent``, ``client_addr``,
  ``has_grant``, ``grant_scopes``, ``actor``.

Outcomes
--------
Cedar says allow or deny; annotations refine it:

1. deny first: any matching ``forbid`` (or ``permit`` annotated ``@outcome("deny")``)
   → **deny**, whatever else matches; the reason is the first one's ``@reason("…")``;
2. otherwise a matching ``permit`` annotated ``@outcome("review")`` → **review**;
3. otherwise a matching ``permit`` → **allow**;
4. nothing matches → **deny** ("no policy permits this").

The mask profile (allow and review) is the *strictest* ``@mask("…")`` among the matching
permits, in the order ``none`` < ``pii`` < ``pci`` < ``secrets`` < operator-defined
profiles (ordered by name among themselves) < ``strict`` (:func:`mask_strictness`).
Cedar policy *templates* (``?principal``/``?resource`` slots) are refused: every policy
must be a complete, static one.

Fail closed: a ``forbid`` whose condition fails to evaluate (a typo, a missing attribute)
denies; a ``permit`` that fails to evaluate does not permit. Reasons may use
``{dangerous}``, ``{kind}``, ``{tag}``, ``{connection}``, ``{risk}`` placeholders.
Policies name themselves with ``@id("…")``; otherwise ``<document>#<n>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cedarpy

from jitgate.errors import InvalidInput
from jitgate.identity.principal import Identity
from jitgate.policy.risk import RiskSettings, is_business_hours, risk_score
from jitgate.policy.types import Decision, Outcome, Request

READ_KINDS = {
    "select",
    "show",
    "explain",
    "cursor",
    "listen",
    "empty",
    "set",
    "transaction",
    "deallocate",
    "prepare",
    "execute",
}
ADMIN_KINDS = {"ddl", "dcl", "do", "maintenance", "session", "lock", "truncate", "unknown"}
MAX_TEXT = 4096


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """A named block of Cedar text, as stored (one document may hold many policies)."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    id: str  # Cedar's id in the combined set (policyN)
    name: str  # @id annotation, or "<document>#<n>"
    document: str
    effect: str
    annotations: Mapping[str, str]

    @property
    def review(self) -> bool:
        return self.annotations.get("outcome") == "review"

    @property
    def denies(self) -> bool:
        return self.effect == "forbid" or self.annotations.get("outcome") == "deny"


#: Built-in mask profiles from least to most strict; operator-defined profiles rank
#: between ``secrets`` and ``strict``, ordered by name among themselves.
MASK_ORDER = ("none", "pii", "pci", "secrets")


def mask_strictness(profile: str) -> tuple[int, str]:
    """Sort key of a mask profile: the larger, the stricter (see the module doc)."""
    if profile == "strict":
        return (len(MASK_ORDER) + 1, "")
    if profile in MASK_ORDER:
        return (MASK_ORDER.index(profile), "")
    return (len(MASK_ORDER), profile)


def strictest_mask(profiles: Iterable[str]) -> str | None:
    return max(profiles, key=mask_strictness, default=None)


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    matched: tuple[PolicyInfo, ...]
    errored: tuple[tuple[PolicyInfo, str], ...]
    context: Mapping[str, Any] = field(default_factory=dict)


class TemplateError(Exception):
    """The text holds a Cedar policy template (a policy with ``?principal``/``?resource``)."""


def _annotations_by_policy(text: str) -> list[tuple[str, dict[str, str]]]:
    raw = json.loads(cedarpy.policies_to_json_str(text))
    if raw.get("templates"):
        raise TemplateError
    items = sorted(raw.get("staticPolicies", {}).items(), key=lambda kv: int(kv[0][6:]))
    return [(item["effect"], dict(item.get("annotations") or {})) for _id, item in items]


def parse_document(doc: PolicyDocument) -> list[tuple[str, dict[str, str]]]:
    """Parse one document; raises InvalidInput with Cedar's message if it is not valid."""
    if not doc.text.strip():
        raise InvalidInput(f"policy {doc.name!r} is empty")
    try:
        cedarpy.PolicySet.from_str(doc.text)
        policies = _annotations_by_policy(doc.text)
    except ValueError as exc:
        raise InvalidInput(f"policy {doc.name!r} is not valid Cedar: {exc}") from None
    except TemplateError:
        raise InvalidInput(
            f"policy {doc.name!r}: Cedar policy templates (?principal, ?resource slots) are "
            "not supported; write a static policy that names its principal and resource"
        ) from None
    for _effect, notes in policies:
        outcome = notes.get("outcome")
        if outcome is not None and outcome not in ("allow", "review", "deny"):
            raise InvalidInput(
                f'policy {doc.name!r}: @outcome must be "allow", "review" or "deny", '
                f"not {outcome!r}"
            )
    return policies


class CedarEngine:
    def __init__(
        self,
        documents: Sequence[PolicyDocument],
        *,
        version: int = 1,
        risk: RiskSettings | None = None,
    ) -> None:
        self.version = version
        self.risk = risk or RiskSettings()
        self.documents = tuple(documents)
        self.policies: list[PolicyInfo] = []
        texts = []
        for doc in self.documents:
            parsed = parse_document(doc)
            for local, (effect, notes) in enumerate(parsed):
                index = len(self.policies)
                name = notes.get("id") or f"{doc.name}#{local}"
                self.policies.append(PolicyInfo(f"policy{index}", name, doc.name, effect, notes))
            texts.append(doc.text.strip())
        self._by_id = {p.id: p for p in self.policies}
        combined = "\n".join(texts)
        self._policy_set = cedarpy.PolicySet.from_str(combined) if combined else None
        # Which actions have a policy that reads context.text: for those, two statements
        # that differ only in a constant may be decided differently (see the gate's cache).
        self._text_scopes: list[frozenset[str] | None] = []
        for text in texts:
            parsed_json = json.loads(cedarpy.policies_to_json_str(text))
            for policy in parsed_json.get("staticPolicies", {}).values():
                if '"attr":"text"' in json.dumps(policy, separators=(",", ":")):
                    self._text_scopes.append(_action_scope(policy.get("action", {})))
        self.reads_text = bool(self._text_scopes)
        self._reads_text_for: dict[str, bool] = {}

    # ---------------------------------------------------------------- decide

    def reads_text_for(self, action: str) -> bool:
        """Whether some policy that can apply to ``action`` reads ``context.text``."""
        known = self._reads_text_for.get(action)
        if known is None:
            ids = {action, *(parent["id"] for parent in _action_parents(action))}
            known = any(scope is None or scope & ids for scope in self._text_scopes)
            self._reads_text_for[action] = known
        return known

    def decide(self, request: Request) -> Decision:
        return self.explain(request).decision

    def explain(self, request: Request) -> Explanation:
        context = self.context_for(request)
        if self._policy_set is None:
            return Explanation(Decision.deny("no policy permits this"), (), (), context)
        result = cedarpy.is_authorized(
            {
                "principal": _uid(request.principal),
                "action": {"type": "Action", "id": request.action},
                "resource": {"type": "Connection", "id": request.target.name},
                "context": context,
            },
            self._policy_set,
            _entities(request),
        )
        matched = tuple(self._by_id[r] for r in result.diagnostics.reasons if r in self._by_id)
        errored = tuple(_errors(result.diagnostics.errors, self._by_id))
        return Explanation(
            self._outcome(request, context, matched, errored), matched, errored, context
        )

    def _outcome(
        self,
        request: Request,
        context: Mapping[str, Any],
        matched: tuple[PolicyInfo, ...],
        errored: tuple[tuple[PolicyInfo, str], ...],
    ) -> Decision:
        broken_forbids = [p for p, _ in errored if p.denies]
        forbids = [p for p in matched if p.denies] + broken_forbids
        if forbids:
            first = forbids[0]
            reason = first.annotations.get("reason") or f"forbidden by policy {first.name}"
            if first in broken_forbids:
                reason = f"policy {first.name} could not be evaluated, so it denies"
            return Decision(
                Outcome.DENY,
                _render(reason, request, context),
                None,
                tuple(p.name for p in forbids),
            )
        permits = [p for p in matched if p.effect == "permit"]
        if not permits:
            return Decision(Outcome.DENY, "no policy permits this", None, ())
        mask = strictest_mask(p.annotations["mask"] for p in permits if "mask" in p.annotations)
        reviews = [p for p in permits if p.review]
        if reviews:
            reason = (
                reviews[0].annotations.get("reason") or f"policy {reviews[0].name} asks for review"
            )
            return Decision(
                Outcome.REVIEW,
                _render(reason, request, context),
                mask,
                tuple(p.name for p in reviews),
            )
        return Decision(Outcome.ALLOW, None, mask, tuple(p.name for p in permits))

    # --------------------------------------------------------------- context

    def context_for(self, request: Request) -> dict[str, Any]:
        at = request.at or datetime.now(UTC)
        stmt = request.statement
        kind = request.action.split(":", 1)[1] if ":" in request.action else request.action
        agent = request.actor is not None or request.principal.is_agent
        ctx: dict[str, Any] = {
            "kind": kind,
            "risk": risk_score(
                kind=kind,
                statement=stmt,
                tags=request.target.tags,
                agent=agent,
                at=at,
                settings=self.risk,
            ),
            "hour": at.hour,
            "weekday": at.weekday(),
            "business_hours": is_business_hours(at, self.risk),
            "is_agent": agent,
            "client_addr": request.client_addr or "",
            "has_grant": bool(request.context.get("has_grant", False)),
            "grant_scopes": sorted(request.context.get("grant_scopes", ())),
            "unknown": stmt is not None and stmt.kind.value == "unknown",
            "dangerous": bool(stmt is not None and stmt.dangerous),
            "dangerous_reasons": list(stmt.dangerous) if stmt is not None else [],
            "tag": stmt.tag if stmt is not None else "",
            "tables_read": sorted(stmt.tables_read) if stmt is not None else [],
            "tables_written": sorted(stmt.tables_written) if stmt is not None else [],
            "functions": sorted(stmt.functions) if stmt is not None else [],
            "trivial_where": bool(stmt is not None and stmt.trivial_where),
            "writes_in_cte": bool(stmt is not None and stmt.writes_in_cte),
            "text": (request.text or (stmt.text if stmt is not None else ""))[:MAX_TEXT],
        }
        if stmt is not None and stmt.has_where is not None:
            ctx["has_where"] = stmt.has_where
        if stmt is not None and stmt.copy_target:
            ctx["copy_target"] = stmt.copy_target
        if request.actor is not None:
            ctx["actor"] = {
                "name": request.actor.name,
                "kind": request.actor.kind.value,
                "groups": sorted(request.actor.groups),
            }
        return ctx


def _uid(identity: Identity) -> dict[str, str]:
    return {"type": "Agent" if identity.is_agent else "User", "id": identity.name}


def _identity_entities(identity: Identity) -> list[dict[str, Any]]:
    groups = sorted(identity.groups)
    return [
        {
            "uid": _uid(identity),
            "attrs": {"name": identity.name, "kind": identity.kind.value, "groups": groups},
            "parents": [{"type": "Group", "id": g} for g in groups],
        },
        *({"uid": {"type": "Group", "id": g}, "attrs": {}, "parents": []} for g in groups),
    ]


def _action_scope(scope: dict[str, Any]) -> frozenset[str] | None:
    """The action ids a policy's action constraint names (``None``: any action)."""
    op = scope.get("op")
    if op == "==":
        return frozenset([scope["entity"]["id"]])
    if op == "in" and "entities" in scope:
        return frozenset(entity["id"] for entity in scope["entities"])
    if op == "in" and "entity" in scope:
        return frozenset([scope["entity"]["id"]])
    return None


def _action_parents(action: str) -> list[dict[str, str]]:
    if ":" not in action:
        return []
    protocol, kind = action.split(":", 1)
    parents = [{"type": "Action", "id": protocol}]
    if protocol == "sql":
        category = "read" if kind in READ_KINDS else "admin" if kind in ADMIN_KINDS else "write"
        parents.append({"type": "Action", "id": f"sql:{category}"})
    return parents


def _entities(request: Request) -> list[dict[str, Any]]:
    entities = _identity_entities(request.principal)
    if request.actor is not None:
        entities += [
            e
            for e in _identity_entities(request.actor)
            if e["uid"] not in [x["uid"] for x in entities]
        ]
    entities.append(
        {
            "uid": {"type": "Connection", "id": request.target.name},
            "attrs": {
                "name": request.target.name,
                "type": request.target.type,
                "tags": dict(request.target.tags),
            },
            "parents": [],
        }
    )
    parents = _action_parents(request.action)
    entities.append(
        {"uid": {"type": "Action", "id": request.action}, "attrs": {}, "parents": parents}
    )
    entities += [{"uid": p, "attrs": {}, "parents": []} for p in parents]
    return entities


def _errors(
    errors: Iterable[Any], by_id: Mapping[str, PolicyInfo]
) -> Iterable[tuple[PolicyInfo, str]]:
    for error in errors:
        text = str(error)
        for policy_id, info in by_id.items():
            if (
                f"policy id {policy_id}" in text
                or f"`{policy_id}`" in text
                or text.startswith(f"{policy_id}:")
                or f"policy {policy_id}" in text
            ):
                yield info, text
                break


def _render(reason: str, request: Request, context: Mapping[str, Any]) -> str:
    stmt = request.statement
    values = {
        "dangerous": "; ".join(stmt.dangerous) if stmt is not None else "",
        "kind": str(context.get("kind", "")),
        "tag": str(context.get("tag", "")),
        "connection": request.target.name,
        "risk": str(context.get("risk", "")),
    }
    for key, value in values.items():
        reason = reason.replace("{" + key + "}", value)
    return reason
