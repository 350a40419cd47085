"""Read API: issues and events of a project, paginated with opaque cursors."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict

from app import fields, search
from app.api.access import require_reader
from app.api.errors import ApiError
from app.api.responses import JSON
from app.timefmt import iso

router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["read"])

Limit = Query(50, ge=1, le=500)


@router.get("/issues", summary="List issues")
def list_issues(
    project_id: int,
    request: Request,
    q: str = "",
    status: Literal["unresolved", "resolved", "ignored"] | None = None,
    sort: Literal["last_seen", "first_seen", "count"] = "last_seen",
    from_: str | None = Query(None, alias="from"),
    to: str | None = None,
    cursor: str | None = None,
    limit: int = Limit,
) -> JSON:
    """``q``/``from``/``to`` select issues that have at least one matching event."""
    svc = require_reader(request, project_id)
    found = search.build(q, from_, to)
    page = svc.store.list_issues(
        project_id, status=status, sort=sort, limit=limit, cursor=cursor, search=found
    )
    return JSON({"data": page.data, "next_cursor": page.next_cursor, **found.span()})


@router.get("/issues/{issue_id}", summary="Issue detail")
def get_issue(project_id: int, issue_id: int, request: Request) -> JSON:
    svc = require_reader(request, project_id)
    issue = svc.store.get_issue(project_id, issue_id)
    if issue is None:
        raise ApiError(404, "not_found", f"project {project_id} has no issue {issue_id}")
    latest = svc.store.list_events(project_id, issue_id=issue_id, limit=1, cursor=None)
    issue["latest_event"] = latest.data[0] if latest.data else None
    return JSON(issue)


class IssuePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["unresolved", "resolved", "ignored"]


@router.patch("/issues/{issue_id}", summary="Change an issue's status")
def patch_issue(project_id: int, issue_id: int, patch: IssuePatch, request: Request) -> JSON:
    svc = require_reader(request, project_id)
    if not svc.store.set_issue_status(project_id, issue_id, patch.status):
        raise ApiError(404, "not_found", f"project {project_id} has no issue {issue_id}")
    return JSON(svc.store.get_issue(project_id, issue_id))


@router.get("/issues/{issue_id}/events", summary="Events of an issue, newest first")
def issue_events(
    project_id: int,
    issue_id: int,
    request: Request,
    cursor: str | None = None,
    limit: int = Limit,
) -> JSON:
    svc = require_reader(request, project_id)
    if svc.store.get_issue(project_id, issue_id) is None:
        raise ApiError(404, "not_found", f"project {project_id} has no issue {issue_id}")
    page = svc.store.list_events(project_id, issue_id=issue_id, limit=limit, cursor=cursor)
    return JSON({"data": page.data, "next_cursor": page.next_cursor})


@router.get("/events", summary="Search events, newest first")
def list_events(
    project_id: int,
    request: Request,
    q: str = "",
    from_: str | None = Query(None, alias="from"),
    to: str | None = None,
    cursor: str | None = None,
    limit: int = Limit,
) -> JSON:
    svc = require_reader(request, project_id)
    found = search.build(q, from_, to)
    page = svc.store.list_events(
        project_id, issue_id=None, limit=limit, cursor=cursor, search=found
    )
    return JSON({"data": page.data, "next_cursor": page.next_cursor, **found.span()})


@router.get("/events/{event_id}", summary="Event detail with its full stack trace")
def get_event(project_id: int, event_id: str, request: Request) -> JSON:
    svc = require_reader(request, project_id)
    event = svc.store.get_event(project_id, event_id.replace("-", "").lower())
    if event is None:
        raise ApiError(404, "not_found", f"project {project_id} has no event {event_id}")
    return JSON(event)


DAY = 86400.0


@router.get("/stats/histogram", summary="Event counts per interval (UTC buckets)")
def histogram(
    project_id: int,
    request: Request,
    q: str = "",
    from_: str | None = Query(None, alias="from", description="default: 24 hours ago"),
    to: str | None = Query(None, description="default: now"),
    interval: str | None = Query(None, description="30s, 5m, 1h, 1d, ...; default: auto"),
) -> JSON:
    svc = require_reader(request, project_id)
    found = search.build(q, from_, to, default_from=DAY)
    start, end = found.start or found.now - DAY, found.end or found.now
    step = search.interval_seconds(interval, start, end)
    buckets = svc.store.histogram(project_id, found, start, end, step)
    return JSON(
        {
            "interval_seconds": step,
            "data": [{"time": iso(t), "count": n} for t, n in buckets],
            "total": sum(n for _, n in buckets),
            **found.span(),
        }
    )


@router.get("/stats/top", summary="Most frequent values of a field, with the rest as 'other'")
def top(
    project_id: int,
    request: Request,
    field: str,
    q: str = "",
    from_: str | None = Query(None, alias="from"),
    to: str | None = None,
    limit: int = Query(10, ge=1, le=100),
) -> JSON:
    svc = require_reader(request, project_id)
    if not (field in TOP_FIELDS or (field.startswith("tags.") and len(field) > 5)):
        raise ApiError(
            400,
            "invalid_parameter",
            f"field must be one of {', '.join(TOP_FIELDS)} or tags.<key>, got {field!r}",
        )
    found = search.build(q, from_, to)
    values, other, total = svc.store.top_values(project_id, field, found, limit)
    return JSON(
        {
            "field": field,
            "data": [{"value": v, "count": n} for v, n in values],
            "other": other,
            "total": total,
            **found.span(),
        }
    )


TOP_FIELDS = tuple(f for f in (*fields.SCALAR_FIELDS, *fields.MULTI_FIELDS) if f != "message")
