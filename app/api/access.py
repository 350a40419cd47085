"""Who may read or administer what: read tokens per project, one admin token.

:func:`reader` and :func:`admin` are FastAPI dependencies: they run before the
parameters and the body are validated (no work for a stranger), and their
``Security`` parameters put the bearer schemes into ``/openapi.json``."""

from __future__ import annotations

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.errors import ApiError
from app.auth import hash_key, same_secret
from app.services import Services

# auto_error=False: only documentation; the checks below answer in our error shape.
READ_TOKEN = HTTPBearer(
    scheme_name="readToken",
    description="A read token of the project (`stacksift project create` prints one; "
    "`POST /api/v1/projects/{project_id}/keys` with kind `read` makes more)",
    auto_error=False,
)
ADMIN_TOKEN = HTTPBearer(
    scheme_name="adminToken",
    description="The value of STACKSIFT_ADMIN_TOKEN (the admin API is off without it)",
    auto_error=False,
)
Credentials = HTTPAuthorizationCredentials | None
_READ = Security(READ_TOKEN)
_ADMIN = Security(ADMIN_TOKEN)


def services(request: Request) -> Services:
    return request.app.state.services


def _bearer(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() != "bearer " or not auth[7:].strip():
        raise ApiError(401, "unauthorized", "send the token as 'Authorization: Bearer <token>'")
    return auth[7:].strip()


def admin(request: Request, _: Credentials = _ADMIN) -> Services:
    """Dependency: the admin token."""
    svc = services(request)
    token = _bearer(request)
    if not svc.settings.admin_token:
        raise ApiError(403, "forbidden", "the admin API is off: set STACKSIFT_ADMIN_TOKEN")
    if not same_secret(token, svc.settings.admin_token):
        raise ApiError(403, "forbidden", "this endpoint needs the admin token")
    return svc


def reader(
    request: Request,
    project_id: int,
    _read: Credentials = _READ,
    _admin: Credentials = _ADMIN,
) -> Services:
    """Dependency: the project's read token or the admin token (FastAPI lists the two
    schemes as alternatives in the operation's ``security``)."""
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


# Route parameters: ``svc: Services = Reader`` / ``= Admin``.
Reader = Depends(reader)
Admin = Depends(admin)
