"""Alert rules and notification attempts of a project (admin token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from app.alerts.rules import Rule, RuleError, public_channels, stored_form, validate_rule
from app.api.access import require_admin
from app.api.errors import ApiError
from app.api.responses import JSON
from app.services import Services
from app.storage.sqlite_alerts import AlertStore

router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["alerts"])


def _store(request: Request, project_id: int) -> AlertStore:
    svc: Services = require_admin(request)
    if svc.store.get_project(project_id) is None:
        raise ApiError(404, "not_found", f"no project {project_id}")
    return getattr(svc.store, "alert_store", None) or AlertStore(svc.store)


async def _body(request: Request) -> Any:
    try:
        return await request.json()
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        raise RuleError("the body is not JSON, or is nested too deeply") from None


def _public(rule: dict[str, Any]) -> dict[str, Any]:
    """A stored rule as answers show it: no internal timestamp, no webhook secret."""
    out = {k: v for k, v in rule.items() if k != "updated_ts"}
    out["channels"] = public_channels(rule["channels"])
    return out


def _get(store: AlertStore, project_id: int, rule_id: int) -> dict[str, Any]:
    rule = store.get_rule(project_id, rule_id)
    if rule is None:
        raise ApiError(404, "not_found", f"project {project_id} has no alert rule {rule_id}")
    return rule


@router.post(
    "/alert-rules",
    status_code=201,
    summary="Create an alert rule",
    openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": Rule.model_json_schema()}}}
    },
)
async def create_rule(project_id: int, request: Request) -> JSON:
    store = _store(request, project_id)
    rule = validate_rule(await _body(request))
    return JSON(_public(store.create_rule(project_id, stored_form(rule, []))), status_code=201)


@router.get("/alert-rules", summary="List alert rules")
def list_rules(project_id: int, request: Request) -> JSON:
    store = _store(request, project_id)
    return JSON({"data": [_public(r) for r in store.list_rules(project_id)], "next_cursor": None})


@router.get("/alert-rules/{rule_id}", summary="One alert rule")
def get_rule(project_id: int, rule_id: int, request: Request) -> JSON:
    store = _store(request, project_id)
    return JSON(_public(_get(store, project_id, rule_id)))


@router.put("/alert-rules/{rule_id}", summary="Replace an alert rule")
async def put_rule(project_id: int, rule_id: int, request: Request) -> JSON:
    store = _store(request, project_id)
    current = _get(store, project_id, rule_id)
    rule = validate_rule(await _body(request))
    saved = store.replace_rule(project_id, rule_id, stored_form(rule, current["channels"]))
    return JSON(_public(saved or _get(store, project_id, rule_id)))


@router.patch(
    "/alert-rules/{rule_id}", summary='Change some fields of a rule, e.g. {"enabled": false}'
)
async def patch_rule(project_id: int, rule_id: int, request: Request) -> JSON:
    store = _store(request, project_id)
    current = _get(store, project_id, rule_id)
    changes = await _body(request)
    if not isinstance(changes, dict):
        raise RuleError("the body must be a JSON object of the fields to change")
    merged = {k: current[k] for k in Rule.model_fields}
    merged.update(changes)
    rule = validate_rule(merged)
    saved = store.replace_rule(project_id, rule_id, stored_form(rule, current["channels"]))
    return JSON(_public(saved or _get(store, project_id, rule_id)))


@router.delete("/alert-rules/{rule_id}", summary="Delete an alert rule")
def delete_rule(project_id: int, rule_id: int, request: Request) -> JSON:
    store = _store(request, project_id)
    if not store.delete_rule(project_id, rule_id):
        raise ApiError(404, "not_found", f"project {project_id} has no alert rule {rule_id}")
    return JSON({"id": rule_id, "deleted": True})


@router.get("/notifications", summary="Notification attempts, newest first")
def notifications(
    project_id: int,
    request: Request,
    rule_id: int | None = None,
    issue_id: int | None = None,
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = None,
) -> JSON:
    store = _store(request, project_id)
    page = store.list_notifications(
        project_id, limit=limit, cursor=cursor, rule_id=rule_id, issue_id=issue_id
    )
    return JSON({"data": page.data, "next_cursor": page.next_cursor})
