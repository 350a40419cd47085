"""Administration (admin token): projects, keys, settings, dead letters, counters."""

from __future__ import annotations

import time
from typing import Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app.api.access import require_admin
from app.api.errors import ApiError
from app.api.responses import JSON
from app.auth import dsn
from app.project_settings import ProjectSettings
from app.projects import MAX_GRACE_SECONDS, create_key, create_project, rotate_key
from app.services import Services

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


def _project(svc: Services, project_id: int) -> dict[str, object]:
    project = svc.store.get_project(project_id)
    if project is None:
        raise ApiError(404, "not_found", f"no project {project_id}")
    return project


@router.get("/projects", summary="List projects")
def list_projects(request: Request) -> JSON:
    svc = require_admin(request)
    return JSON({"data": svc.store.list_projects(), "next_cursor": None})


@router.post(
    "/projects", status_code=201, summary="Create a project with an ingest key and a read token"
)
def new_project(body: ProjectIn, request: Request) -> JSON:
    svc = require_admin(request)
    project = create_project(svc.store, body.name, svc.settings.public_base_url)
    created = _project(svc, project.id)["created_at"]  # ISO 8601, as GET shows it
    return JSON({**project.as_dict(), "created_at": created}, status_code=201)


@router.get("/projects/{project_id}/keys", summary="List a project's keys (hints only)")
def list_keys(project_id: int, request: Request) -> JSON:
    svc = require_admin(request)
    _project(svc, project_id)
    now = time.time()
    keys = [
        {
            "id": k.id,
            "kind": k.kind,
            "label": k.label,
            "hint": k.hint,
            "created_at": k.created_at,
            "revoked_at": k.revoked_at,
            "active": k.active(now),
        }
        for k in svc.store.list_keys(project_id)
    ]
    return JSON({"data": keys, "next_cursor": None})


@router.post("/projects/{project_id}/keys", status_code=201, summary="Create a key")
def new_key(project_id: int, body: KeyIn, request: Request) -> JSON:
    svc = require_admin(request)
    _project(svc, project_id)
    key = create_key(svc.store, project_id, body.kind, body.label)
    out: dict[str, object] = {"id": key.id, "kind": key.kind, "secret": key.secret}
    if key.kind == "ingest":
        out["dsn"] = dsn(svc.settings.public_base_url, key.secret, project_id)
    return JSON(out, status_code=201)


@router.post(
    "/projects/{project_id}/keys/{key_id}/rotate",
    status_code=201,
    summary="Replace a key by a new one; the old one keeps working for grace_seconds",
)
def rotate(project_id: int, key_id: int, request: Request, body: RotateIn | None = None) -> JSON:
    svc = require_admin(request)
    _project(svc, project_id)
    rotated = rotate_key(svc.store, project_id, key_id, (body or RotateIn()).grace_seconds)
    if rotated is None:
        raise ApiError(404, "not_found", f"project {project_id} has no active key {key_id}")
    key = rotated.new
    out: dict[str, object] = {"id": key.id, "kind": key.kind, "secret": key.secret}
    if key.kind == "ingest":
        out["dsn"] = dsn(svc.settings.public_base_url, key.secret, project_id)
    out["replaced"] = {"id": rotated.old_id, "revoked_at": rotated.old_stops_at}
    return JSON(out, status_code=201)


@router.delete("/projects/{project_id}/keys/{key_id}", summary="Revoke a key, at once")
def revoke_key(project_id: int, key_id: int, request: Request) -> JSON:
    svc = require_admin(request)
    if not svc.store.revoke_key(project_id, key_id):
        raise ApiError(404, "not_found", f"project {project_id} has no active key {key_id}")
    return JSON({"id": key_id, "revoked": True})


@router.get("/projects/{project_id}/settings", summary="Scrubbing and inbound filters")
def get_settings(project_id: int, request: Request) -> JSON:
    svc = require_admin(request)
    project = _project(svc, project_id)
    return JSON(ProjectSettings.from_stored(project["settings"]).model_dump())


@router.put("/projects/{project_id}/settings", summary="Replace scrubbing and inbound filters")
def put_settings(project_id: int, body: ProjectSettings, request: Request) -> JSON:
    svc = require_admin(request)
    _project(svc, project_id)
    svc.store.set_project_settings(project_id, body.model_dump_json())
    return JSON(orjson.loads(body.model_dump_json()))


@router.get("/projects/{project_id}/outcomes", summary="Accepted / filtered / dropped counts")
def outcomes(project_id: int, request: Request) -> JSON:
    svc = require_admin(request)
    _project(svc, project_id)
    return JSON({"project_id": project_id, "counts": svc.store.counters(project_id)})


@router.get("/dead-letter", summary="Events that kept failing processing")
def dead_letters(request: Request) -> JSON:
    svc = require_admin(request)
    return JSON({"data": svc.store.list_dead_letters(), "next_cursor": None})


@router.post("/dead-letter/replay", summary="Move dead letters back to the queue")
def replay(body: ReplayIn, request: Request) -> JSON:
    svc = require_admin(request)
    count = svc.store.replay_dead_letters(body.ids)
    svc.worker.wake()
    return JSON({"replayed": count})
