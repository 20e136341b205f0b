"""Mask profiles and the operator's "what would be masked, and why" test."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import Field

from jitgate.api.deps import Admin, Caller, GatewayDep
from jitgate.api.schemas import Strict

router = APIRouter(prefix="/api/v1/masking", tags=["masking"])


class ProfileIn(Strict):
    definition: dict[str, Any]


class MaskTestIn(Strict):
    profile: str = Field(min_length=1, max_length=128)
    text: str = Field(max_length=1 << 20)
    column: str | None = Field(default=None, max_length=256)
    table: str | None = Field(default=None, max_length=256)
    type_class: str = Field(default="text", pattern="^(text|json|numeric|other)$")


@router.get("/profiles")
def list_profiles(gw: GatewayDep, _who: Caller) -> dict[str, Any]:
    return {"items": gw.masking.list()}


@router.put("/profiles/{name}")
def put_profile(name: str, body: ProfileIn, gw: GatewayDep, who: Admin) -> dict[str, Any]:
    profile = gw.masking.put(name, body.definition, caller=who)
    return {"name": name, "definition": profile.model_dump(mode="json")}


@router.delete("/profiles/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_profile(name: str, gw: GatewayDep, who: Admin) -> None:
    gw.masking.delete(name, caller=who)


@router.post("/test")
def mask_test(body: MaskTestIn, gw: GatewayDep, _who: Caller) -> dict[str, Any]:
    """Mask ``text`` with a profile and explain each finding (nothing is stored)."""
    masker = gw.masking.masker(body.profile)
    result = masker.mask_text(
        body.text, column=body.column, table=body.table, type_class=body.type_class
    )
    findings = masker.explain(body.text, column=body.column, table=body.table)
    return {
        "masked": result.value,
        "changed": result.changed,
        "counts": dict(result.counts),
        "findings": [
            {"type": f.type, "start": f.start, "end": f.end, "why": f.why} for f in findings
        ],
    }
