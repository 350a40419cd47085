"""Administration (admin token): projects, keys, settings, dead letters, counters."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, ValidationError

from app.api.access import Admin
from app.api.errors import ApiError
from app.api.responses import JSON
from app.api.schemas import AUTH, BODY, Page, errors
from app.auth import dsn
from app.project_settings import ProjectSettings
from app.projects import (
    MAX_GRACE_SECONDS,
    create_key,
    create_project,
    rotate_key,
)
from app.projects import NewKey as CreatedKey
from app.services import Services
from app.timefmt import iso

router = APIRouter(prefix="/api/v1", tags=["admin"])


class ProjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["ingest", "read"] = "ingest"
    label: str = Field("", max_length=200)


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_seconds: float = Field(0, ge=0, le=MAX_GRACE_SECONDS)


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[int] | None = None


class ProjectSummary(BaseModel):
    id: int
    name: str
    created_at: str = Field(description="RFC 3339 UTC")


class ProjectList(Page):
    data: list[ProjectSummary]


class NewProject(BaseModel):
    id: int
    name: str
    dsn: str = Field(description="For Sentry SDKs: http(s)://<ingest key>@<host>/<id>")
    ingest_key: str = Field(description="Shown once: only its hash is stored")
    read_token: str = Field(description="Shown once: only its hash is stored")
    created_at: str = Field(description="RFC 3339 UTC")


class KeyInfo(BaseModel):
    id: int
    kind: Literal["ingest", "read"]
    label: str
    hint: str = Field(description="The first characters of the secret")
    created_at: str = Field(description="RFC 3339 UTC")
    revoked_at: str | None = Field(description="RFC 3339 UTC; in the future while rotating")
    active: bool


class KeyList(Page):
    data: list[KeyInfo]


class NewKey(BaseModel):
    id: int
    kind: Literal["ingest", "read"]
    secret: str = Field(description="Shown once: only its hash is stored")
    dsn: str | None = Field(None, description="Only for ingest keys")


class Replaced(BaseModel):
    id: int
    revoked_at: str = Field(description="RFC 3339 UTC: when the old key stops working")


class RotatedKey(NewKey):
    replaced: Replaced


class Revoked(BaseModel):
    id: int
    revoked: Literal[True]


class Outcomes(BaseModel):
    project_id: int
    counts: dict[str, int] = Field(
        description="Events by outcome: accepted, processed, and every drop reason "
        "(filtered reasons, rate_limited, over_quota, backlog_full, invalid, ...)"
    )


class DeadLetter(BaseModel):
    id: int
    project_id: int
    event_id: str | None
    received: str = Field(description="RFC 3339 UTC")
    failed_at: str = Field(description="RFC 3339 UTC")
    error: str = Field(description="The last processing error")


class DeadLetterList(Page):
    data: list[DeadLetter]


class Replayed(BaseModel):
    replayed: int = Field(description="Dead letters moved back to the queue")


SETTINGS_EXAMPLE = {
    "scrubbing": {
        "scrub_defaults": True,
        "scrub_ip_addresses": True,
        "scrub_emails": False,
        "sensitive_fields": ["iban", "x-internal-id"],
        "safe_fields": ["session_count"],
        "custom_patterns": [r"\bACCT-\d{8}\b"],
    },
    "filters": {
        "localhost": True,
        "browser_extensions": True,
        "web_crawlers": True,
        "legacy_browsers": False,
        "error_messages": ["*ResizeObserver loop*", "ChunkLoadError: *"],
        "releases": ["*-dev", "1.0.0-rc*"],
        "environments": ["production", "staging"],
        "min_level": "warning",
    },
    "limits": {
        "key_rate_limit": "100/second",
        "project_rate_limit": "5000/minute",
        "events_per_hour": 100000,
        "events_per_day": 1000000,
    },
}

_RATE = (
    "A rate limit like `1000/minute`, `100/second` or `10 per second`; several, "
    "separated by `;` or `,`, all apply (`10/second;500/minute`). Counted per request. "
)
# Descriptions of the settings fields in /openapi.json, by model and field.
SETTINGS_DOCS: dict[str, dict[str, str]] = {
    "ProjectSettings": {
        "": "Replaced whole by PUT: a part or field left out gets its default. "
        "Unknown fields are refused (400).",
        "scrubbing": "What is removed from events (replaced by `[Filtered]`) before they "
        "are stored, indexed or sent in notifications",
        "filters": "Which events are dropped before processing (counted per reason in "
        "outcomes)",
        "limits": "Rate limits and quotas at ingest (answered 429 with Retry-After)",
    },
    "ScrubbingSettings": {
        "scrub_defaults": "Scrub values under keys containing password, passwd, pwd, secret, "
        "token, api_key, auth, credential, private_key, session, cookie, csrf, xsrf; and, "
        "in every string, credit-card numbers, Bearer/Basic credentials, URL passwords and "
        "PEM private keys",
        "scrub_ip_addresses": "Also scrub IP addresses (user.ip_address, X-Forwarded-For, ...)",
        "scrub_emails": "Also scrub e-mail addresses",
        "sensitive_fields": "More key names whose values are scrubbed (case-insensitive, "
        "matched as substrings like the defaults); at most 200",
        "safe_fields": "Key names (case-insensitive, exact) whose values are never scrubbed; "
        "at most 200",
        "custom_patterns": "Regular expressions (Python `regex` syntax); every match in any "
        "string becomes `[Filtered]`. At most 50 of 500 characters; a pattern that matches "
        "the empty string, nests unbounded repeats like `(a+)+` or is slow is refused",
    },
    "FilterSettings": {
        "localhost": "Drop events from a local machine: loopback user IP, request URL host "
        "localhost or loopback, file:// URLs",
        "browser_extensions": "Drop errors caused by browser extensions",
        "web_crawlers": "Drop events whose User-Agent is a known crawler",
        "legacy_browsers": "Drop events from old browsers (by User-Agent)",
        "error_messages": "Globs (fnmatch: `*`, `?`, `[...]`; case-insensitive) matched "
        "against the whole `Type: value`, the type, the value and the log message; at most 50",
        "releases": "Globs (fnmatch, case-insensitive) matched against the release; at most 50",
        "environments": "Allow-list (case-insensitive): only these environments are kept, and "
        "an event without an environment is dropped; empty keeps every event",
        "min_level": "Drop events below this level (a missing level counts as error); "
        "null keeps every level",
    },
    "LimitSettings": {
        "key_rate_limit": _RATE + "Per ingest key; null: the server's STACKSIFT_RATE_LIMIT",
        "project_rate_limit": _RATE + "All keys of the project together; null: no limit",
        "events_per_hour": "Quota of accepted events per hour (the window starts with its "
        "first event); null: no quota",
        "events_per_day": "Quota of accepted events per day; null: no quota",
    },
}


SettingsBody = Body(
    openapi_examples={
        "everything": {"summary": "Every field set", "value": SETTINGS_EXAMPLE},
        "defaults": {"summary": "Back to the defaults", "value": {}},
    }
)


def describe_settings(components: dict[str, dict[str, object]]) -> None:
    """Write SETTINGS_DOCS into the settings schemas (FastAPI may split a model into
    ``Name-Input`` and ``Name-Output``)."""
    for name, schema in components.items():
        docs = SETTINGS_DOCS.get(name.split("-")[0], {})
        properties = schema.get("properties")
        for field, text in docs.items():
            if not field:
                schema["description"] = text
            elif isinstance(properties, dict) and field in properties:
                properties[field]["description"] = text


def _new_key(svc: Services, project_id: int, key: CreatedKey) -> dict[str, object]:
    """A new key as created and rotated keys answer it: its secret, shown this once, and
    for an ingest key the DSN."""
    out: dict[str, object] = {"id": key.id, "kind": key.kind, "secret": key.secret}
    if key.kind == "ingest":
        out["dsn"] = dsn(svc.settings.public_base_url, key.secret, project_id)
    return out


def _project(svc: Services, project_id: int) -> dict[str, object]:
    project = svc.store.get_project(project_id)
    if project is None:
        raise ApiError(404, "not_found", f"no project {project_id}")
    return project


@router.get(
    "/projects", summary="List projects", response_model=ProjectList, responses=errors(*AUTH)
)
def list_projects(svc: Services = Admin) -> JSON:
    return JSON({"data": svc.store.list_projects(), "next_cursor": None})


@router.post(
    "/projects",
    status_code=201,
    summary="Create a project with an ingest key and a read token",
    response_model=NewProject,
    responses=errors(*AUTH, *BODY),
)
def new_project(body: ProjectIn, svc: Services = Admin) -> JSON:
    project = create_project(svc.store, body.name, svc.settings.public_base_url)
    created = _project(svc, project.id)["created_at"]  # ISO 8601, as GET shows it
    return JSON({**project.as_dict(), "created_at": created}, status_code=201)


@router.get(
    "/projects/{project_id}/keys",
    summary="List a project's keys (hints only)",
    response_model=KeyList,
    responses=errors(400, 404, *AUTH),
)
def list_keys(project_id: int, svc: Services = Admin) -> JSON:
    _project(svc, project_id)
    now = time.time()
    keys = [
        {
            "id": k.id,
            "kind": k.kind,
            "label": k.label,
            "hint": k.hint,
            "created_at": iso(k.created_at),
            "revoked_at": None if k.revoked_at is None else iso(k.revoked_at),
            "active": k.active(now),
        }
        for k in svc.store.list_keys(project_id)
    ]
    return JSON({"data": keys, "next_cursor": None})


@router.post(
    "/projects/{project_id}/keys",
    status_code=201,
    summary="Create a key",
    response_model=NewKey,
    responses=errors(404, *AUTH, *BODY),
)
def new_key(project_id: int, body: KeyIn, svc: Services = Admin) -> JSON:
    _project(svc, project_id)
    key = create_key(svc.store, project_id, body.kind, body.label)
    return JSON(_new_key(svc, project_id, key), status_code=201)


@router.post(
    "/projects/{project_id}/keys/{key_id}/rotate",
    status_code=201,
    summary="Replace a key by a new one; the old one keeps working for grace_seconds",
    response_model=RotatedKey,
    responses=errors(404, *AUTH, *BODY),
)
def rotate(
    project_id: int, key_id: int, body: RotateIn | None = None, svc: Services = Admin
) -> JSON:
    _project(svc, project_id)
    rotated = rotate_key(svc.store, project_id, key_id, (body or RotateIn()).grace_seconds)
    if rotated is None:
        raise ApiError(404, "not_found", f"project {project_id} has no active key {key_id}")
    replaced = {"id": rotated.old_id, "revoked_at": iso(rotated.old_stops_at)}
    return JSON({**_new_key(svc, project_id, rotated.new), "replaced": replaced}, status_code=201)


@router.delete(
    "/projects/{project_id}/keys/{key_id}",
    summary="Revoke a key, at once",
    response_model=Revoked,
    responses=errors(404, *AUTH, *BODY),
)
def revoke_key(project_id: int, key_id: int, svc: Services = Admin) -> JSON:
    if not svc.store.revoke_key(project_id, key_id):
        raise ApiError(404, "not_found", f"project {project_id} has no active key {key_id}")
    return JSON({"id": key_id, "revoked": True})


@router.get(
    "/projects/{project_id}/settings",
    summary="Scrubbing, inbound filters and rate limits",
    response_model=ProjectSettings,
    responses=errors(400, 404, *AUTH),
)
def get_settings(project_id: int, svc: Services = Admin) -> JSON:
    project = _project(svc, project_id)
    return JSON(ProjectSettings.from_stored(project["settings"]).model_dump())


@router.put(
    "/projects/{project_id}/settings",
    summary="Replace scrubbing, inbound filters and rate limits",
    response_model=ProjectSettings,
    responses=errors(404, *AUTH, *BODY),
)
def put_settings(
    project_id: int,
    # Documented as ProjectSettings but validated below, in the thread this sync route
    # runs in: custom patterns are probed, which must not hold up the event loop.
    raw: Annotated[ProjectSettings, SkipValidation] = SettingsBody,
    svc: Services = Admin,
) -> JSON:
    _project(svc, project_id)
    body = _settings(raw)
    svc.store.set_project_settings(project_id, body.model_dump_json())
    return JSON(orjson.loads(body.model_dump_json()))


def _settings(raw: Any) -> ProjectSettings:
    try:
        return ProjectSettings.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from None


@router.get(
    "/projects/{project_id}/outcomes",
    summary="Accepted / filtered / dropped counts",
    response_model=Outcomes,
    responses=errors(400, 404, *AUTH),
)
def outcomes(project_id: int, svc: Services = Admin) -> JSON:
    _project(svc, project_id)
    return JSON({"project_id": project_id, "counts": svc.store.counters(project_id)})


@router.get(
    "/dead-letter",
    summary="Events that kept failing processing",
    response_model=DeadLetterList,
    responses=errors(*AUTH),
)
def dead_letters(svc: Services = Admin) -> JSON:
    items = [
        {**item, "received": iso(item["received"]), "failed_at": iso(item["failed_at"])}
        for item in svc.store.list_dead_letters()
    ]
    return JSON({"data": items, "next_cursor": None})


@router.post(
    "/dead-letter/replay",
    summary="Move dead letters back to the queue",
    response_model=Replayed,
    responses=errors(*AUTH, *BODY),
)
def replay(body: ReplayIn, svc: Services = Admin) -> JSON:
    count = svc.store.replay_dead_letters(body.ids)
    svc.worker.wake()
    return JSON({"replayed": count})
