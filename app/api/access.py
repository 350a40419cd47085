"""Who may read or administer what: read tokens per project, one admin token."""

from __future__ import annotations

from fastapi import Request

from app.api.errors import ApiError
from app.auth import hash_key, same_secret
from app.services import Services


def services(request: Request) -> Services:
    return request.app.state.services


def _bearer(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() != "bearer " or not auth[7:].strip():
        raise ApiError(401, "unauthorized", "send the token as 'Authorization: Bearer <token>'")
    return auth[7:].strip()


def require_admin(request: Request) -> Services:
    svc = services(request)
    token = _bearer(request)
    if not svc.settings.admin_token:
        raise ApiError(403, "forbidden", "the admin API is off: set STACKSIFT_ADMIN_TOKEN")
    if not same_secret(token, svc.settings.admin_token):
        raise ApiError(403, "forbidden", "this endpoint needs the admin token")
    return svc


def require_reader(request: Request, project_id: int) -> Services:
    """The project's read token or the admin token."""
    svc = services(request)
    token = _bearer(request)
    if same_secret(token, svc.settings.admin_token):
        return svc
    owner = svc.store.key_project(hash_key(token), "read")
    if owner is None:
        raise ApiError(403, "forbidden", "unknown or revoked token")
    if owner != project_id:
        raise ApiError(403, "forbidden", f"this token does not give access to project {project_id}")
    return svc
