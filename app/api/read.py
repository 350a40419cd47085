"""Read API: issues and events of a project, paginated with opaque cursors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from app import fields, search
from app.api.access import Reader
from app.api.errors import ApiError
from app.api.responses import JSON
from app.api.schemas import AUTH, Page, Span, errors
from app.services import Services
from app.timefmt import iso

router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["read"])

Limit = Query(50, ge=1, le=500)
Status = Literal["unresolved", "resolved", "ignored"]
Q = Query("", description="The query language: words, \"phrases\", field:value, AND/OR/NOT")
From = Query(None, alias="from", description="RFC 3339 or unix seconds; inclusive")
To = Query(None, description="RFC 3339 or unix seconds; exclusive; default: now")
# Ids are signed 64-bit integers in storage: a larger one is a 400, never a query.
Id = Annotated[int, Path(ge=0, le=2**63 - 1)]


class Issue(BaseModel):
    id: int
    project_id: int
    fingerprint: str
    title: str
    culprit: str
    level: str
    status: Status
    first_seen: str = Field(description="RFC 3339 UTC")
    last_seen: str = Field(description="RFC 3339 UTC")
    count: int = Field(description="Events of the issue")
    user_count: int = Field(description="Distinct users in its events")
    regressed_at: str | None
    resolved_at: str | None


class Event(BaseModel):
    """A normalized event as stored: the Sentry event payload (exception, stacktrace,
    breadcrumbs, user, contexts, tags, ...) plus what the server added."""

    model_config = ConfigDict(extra="allow")
    event_id: str = Field(description="32 lowercase hex digits")
    timestamp: float = Field(description="unix seconds")
    received: float = Field(description="unix seconds, when the server accepted it")
    level: str
    platform: str
    project_id: int
    issue_id: int
    tags: dict[str, str] = Field(default_factory=dict)
    errors: list[dict[str, Any]] = Field(
        default_factory=list, description="What normalization had to fix or drop"
    )
    ingest: dict[str, Any] = Field(default_factory=dict, description="client_ip, user_agent")


class IssueDetail(Issue):
    latest_event: Event | None


class IssuePage(Page, Span):
    data: list[Issue]


class IssueEvents(Page):
    data: list[Event]


class EventPage(Page, Span):
    data: list[Event]


class Bucket(BaseModel):
    time: str = Field(description="Start of the bucket, RFC 3339 UTC")
    count: int


class Histogram(Span):
    interval_seconds: int
    data: list[Bucket]
    total: int


class TopValue(BaseModel):
    value: str
    count: int


class Top(Span):
    field: str
    data: list[TopValue]
    other: int = Field(description="Events with another value of the field")
    total: int = Field(description="Events with the field at all")


class IssuePatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"status": "resolved"}]}
    )
    status: Status


@router.get(
    "/issues", summary="List issues", response_model=IssuePage, responses=errors(400, *AUTH)
)
def list_issues(
    project_id: Id,
    q: str = Q,
    status: Status | None = None,
    sort: Literal["last_seen", "first_seen", "count"] = "last_seen",
    from_: str | None = From,
    to: str | None = To,
    cursor: str | None = None,
    limit: int = Limit,
    svc: Services = Reader,
) -> JSON:
    """``q``/``from``/``to`` select issues that have at least one matching event."""
    found = search.build(q, from_, to)
    page = svc.store.list_issues(
        project_id, status=status, sort=sort, limit=limit, cursor=cursor, search=found
    )
    return JSON({"data": page.data, "next_cursor": page.next_cursor, **found.span()})


@router.get(
    "/issues/{issue_id}",
    summary="Issue detail",
    response_model=IssueDetail,
    responses=errors(400, 404, *AUTH),
)
def get_issue(project_id: Id, issue_id: Id, svc: Services = Reader) -> JSON:
    issue = svc.store.get_issue(project_id, issue_id)
    if issue is None:
        raise ApiError(404, "not_found", f"project {project_id} has no issue {issue_id}")
    latest = svc.store.list_events(project_id, issue_id=issue_id, limit=1, cursor=None)
    issue["latest_event"] = latest.data[0] if latest.data else None
    return JSON(issue)


@router.patch(
    "/issues/{issue_id}",
    summary="Change an issue's status",
    response_model=Issue,
    responses=errors(404, 507, *AUTH, 400, 408, 413),
)
def patch_issue(
    project_id: Id, issue_id: Id, patch: IssuePatch, svc: Services = Reader
) -> JSON:
    if not svc.store.set_issue_status(project_id, issue_id, patch.status):
        raise ApiError(404, "not_found", f"project {project_id} has no issue {issue_id}")
    return JSON(svc.store.get_issue(project_id, issue_id))


@router.get(
    "/issues/{issue_id}/events",
    summary="Events of an issue, newest first",
    response_model=IssueEvents,
    responses=errors(400, 404, *AUTH),
)
def issue_events(
    project_id: Id,
    issue_id: Id,
    cursor: str | None = None,
    limit: int = Limit,
    svc: Services = Reader,
) -> JSON:
    if svc.store.get_issue(project_id, issue_id) is None:
        raise ApiError(404, "not_found", f"project {project_id} has no issue {issue_id}")
    page = svc.store.list_events(project_id, issue_id=issue_id, limit=limit, cursor=cursor)
    return JSON({"data": page.data, "next_cursor": page.next_cursor})


@router.get(
    "/events",
    summary="Search events, newest first",
    response_model=EventPage,
    responses=errors(400, *AUTH),
)
def list_events(
    project_id: Id,
    q: str = Q,
    from_: str | None = From,
    to: str | None = To,
    cursor: str | None = None,
    limit: int = Limit,
    svc: Services = Reader,
) -> JSON:
    found = search.build(q, from_, to)
    page = svc.store.list_events(
        project_id, issue_id=None, limit=limit, cursor=cursor, search=found
    )
    return JSON({"data": page.data, "next_cursor": page.next_cursor, **found.span()})


@router.get(
    "/events/{event_id}",
    summary="Event detail with its full stack trace",
    response_model=Event,
    responses=errors(400, 404, *AUTH),
)
def get_event(project_id: Id, event_id: str, svc: Services = Reader) -> JSON:
    event = svc.store.get_event(project_id, event_id.replace("-", "").lower())
    if event is None:
        raise ApiError(404, "not_found", f"project {project_id} has no event {event_id}")
    return JSON(event)


DAY = 86400.0


@router.get(
    "/stats/histogram",
    summary="Event counts per interval (UTC buckets)",
    response_model=Histogram,
    responses=errors(400, *AUTH),
)
def histogram(
    project_id: Id,
    q: str = Q,
    from_: str | None = Query(None, alias="from", description="default: 24 hours ago"),
    to: str | None = Query(None, description="default: now"),
    interval: str | None = Query(None, description="30s, 5m, 1h, 1d, 1w; default: auto"),
    svc: Services = Reader,
) -> JSON:
    found = search.build(q, from_, to, default_from=DAY)
    start = found.start if found.start is not None else found.now - DAY
    end = found.end if found.end is not None else found.now
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


@router.get(
    "/stats/top",
    summary="Most frequent values of a field, with the rest as 'other'",
    response_model=Top,
    responses=errors(400, *AUTH),
)
def top(
    project_id: Id,
    field: str = Query(description="A query-language field, or tags.<key>"),
    q: str = Q,
    from_: str | None = From,
    to: str | None = To,
    limit: int = Query(10, ge=1, le=100),
    svc: Services = Reader,
) -> JSON:
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
