"""Alert rules and notification attempts of a project (admin token)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from app.alerts.rules import (
    MAX_DURATION,
    Rule,
    RuleError,
    public_channels,
    stored_form,
    validate_rule,
)
from app.api.access import Admin
from app.api.errors import ApiError
from app.api.responses import JSON
from app.api.schemas import AUTH, BODY, REF, Page, component_schemas, errors
from app.services import Services
from app.storage.sqlite_alerts import AlertStore

router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["alerts"])

DURATION = (
    "A duration: a number and a unit, `ms`, `s`, `m`, `h` or `d` (`90s`, `5m`, `1.5h`, "
    f"`2d`; a bare number is seconds), at most {MAX_DURATION / 86400:g} days."
)
# Descriptions of the rule fields in /openapi.json (Rule lives in app.alerts.rules).
RULE_DOCS = {
    "name": "Shown in notifications",
    "query": "The query language (as `q` of the search API); an event must match it to "
    "count. Empty matches every event",
    "trigger": "`new_issue`: the first event of an issue matches; `regression`: a resolved "
    "issue gets a matching event; `every_event`: every matching event (throttled per "
    "issue); `frequency`: more than `threshold` matching events of one issue within `window`",
    "threshold": "A `frequency` rule fires on the first matching event past this many within "
    "`window` (1 to 1,000,000); "
    "required for `frequency`, ignored otherwise",
    "window": DURATION + " Required for `frequency` (longer than 0s), ignored otherwise",
    "throttle": DURATION + " The least time between two notifications of this rule for "
    "one issue; matches in between are sent as one digest when it ends. Default 30m",
    "channels": "Where notifications go (1 to 20): `email` through STACKSIFT_SMTP_URL, "
    "`postmark` through the Postmark API (STACKSIFT_POSTMARK_SERVER_TOKEN), `webhook`: a "
    "JSON POST, signed with HMAC-SHA256 of `secret` when one is given",
    "enabled": "A disabled rule is kept but never fires",
}
_CHANNELS = [
    {"type": "email", "to": ["oncall@example.com"]},
    {"type": "postmark", "to": ["oncall@example.com", "lead@example.com"]},
    {"type": "webhook", "url": "https://hooks.example.com/stacksift", "secret": "s3cret"},
]
RULE_EXAMPLES = {
    "new_issue": {
        "summary": "new_issue: e-mail on every new issue in production",
        "value": {
            "name": "New production issue",
            "query": "environment:production",
            "trigger": "new_issue",
            "channels": [_CHANNELS[0]],
        },
    },
    "regression": {
        "summary": "regression: Postmark when a resolved issue comes back",
        "value": {
            "name": "Regressions",
            "query": "",
            "trigger": "regression",
            "throttle": "1h",
            "channels": [_CHANNELS[1]],
        },
    },
    "every_event": {
        "summary": "every_event: a webhook per fatal event, at most every 5 minutes per issue",
        "value": {
            "name": "Fatal crashes",
            "query": "level:fatal",
            "trigger": "every_event",
            "throttle": "5m",
            "channels": [_CHANNELS[2]],
        },
    },
    "frequency": {
        "summary": "frequency: 50 checkout errors in 5 minutes, to all three channels",
        "value": {
            "name": "Checkout errors in production",
            "query": "environment:production level:>=error transaction:/checkout*",
            "trigger": "frequency",
            "threshold": 50,
            "window": "5m",
            "throttle": "30m",
            "channels": _CHANNELS,
            "enabled": True,
        },
    },
}


def rule_components() -> dict[str, Any]:
    """Rule and its channels for ``#/components/schemas``: the routes read the body
    themselves (a bad rule is a 400 invalid_rule that names the field)."""
    out = component_schemas(Rule)
    for field, text in RULE_DOCS.items():
        out["Rule"]["properties"][field]["description"] = text
    return out


_RULE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": REF.format(model="Rule")},
                "examples": RULE_EXAMPLES,
            }
        },
    }
}


class SavedRule(Rule):
    id: int
    project_id: int
    created_at: str = Field(description="RFC 3339 UTC")
    updated_at: str = Field(description="RFC 3339 UTC")


class RuleList(Page):
    data: list[SavedRule]


class Deleted(BaseModel):
    id: int
    deleted: Literal[True]


class Notification(BaseModel):
    id: int
    project_id: int
    rule_id: int
    rule_name: str
    issue_id: int
    kind: str = Field(description="alert, or digest: the events a throttle held back")
    channel: Literal["email", "postmark", "webhook"]
    target: str = Field(description="The addresses or the URL")
    attempt: int = Field(description="1 for the first try; retries count up")
    outcome: str = Field(description="sent, partial (some addresses refused), retrying or failed")
    error: str | None
    events: int = Field(description="Events this notification tells about")
    at: str = Field(description="RFC 3339 UTC")


class NotificationList(Page):
    data: list[Notification]


def _store(svc: Services, project_id: int) -> AlertStore:
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


WRITE = errors(404, *AUTH, *BODY)


@router.post(
    "/alert-rules",
    status_code=201,
    summary="Create an alert rule",
    response_model=SavedRule,
    responses=WRITE,
    openapi_extra=_RULE_BODY,
)
async def create_rule(project_id: int, request: Request, svc: Services = Admin) -> JSON:
    store = _store(svc, project_id)
    rule = validate_rule(await _body(request))
    return JSON(_public(store.create_rule(project_id, stored_form(rule, []))), status_code=201)


@router.get(
    "/alert-rules",
    summary="List alert rules",
    response_model=RuleList,
    responses=errors(400, 404, *AUTH),
)
def list_rules(project_id: int, svc: Services = Admin) -> JSON:
    store = _store(svc, project_id)
    return JSON({"data": [_public(r) for r in store.list_rules(project_id)], "next_cursor": None})


@router.get(
    "/alert-rules/{rule_id}",
    summary="One alert rule",
    response_model=SavedRule,
    responses=errors(400, 404, *AUTH),
)
def get_rule(project_id: int, rule_id: int, svc: Services = Admin) -> JSON:
    store = _store(svc, project_id)
    return JSON(_public(_get(store, project_id, rule_id)))


@router.put(
    "/alert-rules/{rule_id}",
    summary="Replace an alert rule",
    response_model=SavedRule,
    responses=WRITE,
    openapi_extra=_RULE_BODY,
)
async def put_rule(
    project_id: int, rule_id: int, request: Request, svc: Services = Admin
) -> JSON:
    store = _store(svc, project_id)
    current = _get(store, project_id, rule_id)
    rule = validate_rule(await _body(request))
    saved = store.replace_rule(project_id, rule_id, stored_form(rule, current["channels"]))
    return JSON(_public(saved or _get(store, project_id, rule_id)))


@router.patch(
    "/alert-rules/{rule_id}",
    summary='Change some fields of a rule, e.g. {"enabled": false}',
    response_model=SavedRule,
    responses=WRITE,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "Any fields of the rule; the merged rule must be valid",
            "content": {
                "application/json": {
                    "schema": {"type": "object"},
                    "examples": {
                        "disable": {"summary": "Mute a rule", "value": {"enabled": False}},
                        "threshold": {
                            "summary": "Fire later",
                            "value": {"threshold": 200, "window": "10m"},
                        },
                    },
                }
            },
        }
    },
)
async def patch_rule(
    project_id: int, rule_id: int, request: Request, svc: Services = Admin
) -> JSON:
    store = _store(svc, project_id)
    current = _get(store, project_id, rule_id)
    changes = await _body(request)
    if not isinstance(changes, dict):
        raise RuleError("the body must be a JSON object of the fields to change")
    merged = {k: current[k] for k in Rule.model_fields}
    merged.update(changes)
    rule = validate_rule(merged)
    saved = store.replace_rule(project_id, rule_id, stored_form(rule, current["channels"]))
    return JSON(_public(saved or _get(store, project_id, rule_id)))


@router.delete(
    "/alert-rules/{rule_id}",
    summary="Delete an alert rule",
    response_model=Deleted,
    responses=WRITE,
)
def delete_rule(project_id: int, rule_id: int, svc: Services = Admin) -> JSON:
    store = _store(svc, project_id)
    if not store.delete_rule(project_id, rule_id):
        raise ApiError(404, "not_found", f"project {project_id} has no alert rule {rule_id}")
    return JSON({"id": rule_id, "deleted": True})


@router.get(
    "/notifications",
    summary="Notification attempts, newest first",
    response_model=NotificationList,
    responses=errors(400, 404, *AUTH),
)
def notifications(
    project_id: int,
    rule_id: int | None = None,
    issue_id: int | None = None,
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = None,
    svc: Services = Admin,
) -> JSON:
    store = _store(svc, project_id)
    page = store.list_notifications(
        project_id, limit=limit, cursor=cursor, rule_id=rule_id, issue_id=issue_id
    )
    return JSON({"data": page.data, "next_cursor": page.next_cursor})
