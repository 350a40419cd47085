"""The ASGI application: routers, CORS for browser SDKs, error shape, lifecycle."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

from app import logs
from app.alerts import RuleError
from app.api import admin, alerts, errors, ingest, read
from app.api.body_limit import BodyLimit
from app.api.errors import error_response
from app.api.ingest import IngestFront
from app.api.responses import JSON
from app.api.schemas import errors as error_docs
from app.decompress import BodyError
from app.ingest import AuthError
from app.logs import RequestIds
from app.metrics import RequestMetrics, exposition
from app.query import QueryError
from app.search import SearchError
from app.services import API_ONLY_ENV, Services, follow_parent
from app.settings import Settings, load_settings
from app.storage.sqlite import CursorError

# Relay's CORS layer (shared/reference/sentry-protocol.md section 8).
CORS_HEADERS = [
    "x-sentry-auth",
    "x-requested-with",
    "x-forwarded-for",
    "origin",
    "referer",
    "accept",
    "content-type",
    "authentication",
    "authorization",
    "content-encoding",
    "transfer-encoding",
    "x-api-key",
    "baggage",
    "sentry-trace",
]


DESCRIPTION = """\
Sentry-compatible ingestion, search and administration.

Every 4xx/5xx answer has the body `{"error": {"code": "...", "message": "..."}}`;
invalid parameters and bodies are answered `400` (never `422`).
Read routes take a project's read token or the admin token, administration routes
the admin token, both as `Authorization: Bearer <token>`; ingest routes take an
ingest key (see each route).
"""


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Ready(BaseModel):
    status: str = Field(examples=["ready"])
    storage: str = Field(examples=["ok"])
    queue_depth: int = Field(description="Events waiting to be processed")
    queue_lag_seconds: float = Field(description="Age of the oldest waiting event")


def _complete(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document plus what it cannot know: the ingest routes (served by
    IngestFront), the schemas of bodies read by hand, and no 422 anywhere: validation
    errors are answered 400 in our error shape (app.api.errors)."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, definition in {**ingest.OPENAPI_SCHEMAS, **alerts.rule_components()}.items():
        schemas.setdefault(name, definition)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    admin.describe_settings(schemas)
    components.setdefault("securitySchemes", {}).update(ingest.OPENAPI_SECURITY_SCHEMES)
    for path, methods in ingest.OPENAPI_PATHS.items():
        schema["paths"][path] = {**schema["paths"].get(path, {}), **methods}
    for methods in schema["paths"].values():
        for operation in methods.values():
            operation["responses"].pop("422", None)
    return schema


def create_app(settings: Settings | None = None) -> IngestFront:
    """The ingest routes in front (pure ASGI, see app.api.ingest), FastAPI for the rest."""
    settings = settings or load_settings()
    logs.configure(settings.log_level)
    follow_parent()  # an API process of `serve --workers N` stops with its supervisor
    # `serve --workers N` (embedded) processes in its main process: these only serve.
    services = Services(settings, run_worker=os.environ.get(API_ONLY_ENV) != "1")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.start()
        try:
            yield
        finally:
            services.close()

    # FastAPIOffline: /docs is Swagger UI from the package's own copy (no CDN: the page
    # works without internet); ReDoc is off.
    app = FastAPIOffline(
        docs_url="/docs",
        redoc_url=None,
        static_url="/docs/static",
        title="stacksift",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JSON,
    )
    app.state.services = services
    # Innermost: its 413/408 answers still get CORS headers, request ids and metrics.
    app.add_middleware(BodyLimit, timeout_s=settings.read_timeout_seconds)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=CORS_HEADERS,
        expose_headers=list(ingest.EXPOSE_HEADERS),
        max_age=3600,
    )
    app.add_middleware(RequestMetrics)
    app.add_middleware(RequestIds)
    errors.install(app, (BodyError, AuthError, CursorError, QueryError, SearchError, RuleError))
    app.include_router(read.router)
    app.include_router(admin.router)
    app.include_router(alerts.router)

    @app.get(
        "/healthz", tags=["operations"], summary="The process is alive", response_model=Health
    )
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Storage and queue are reachable",
        response_model=Ready,
        responses=error_docs(503),
    )
    def readyz(request: Request) -> JSON:
        if services.setup_error:
            return error_response(503, "not_ready", services.setup_error)
        try:
            services.store.ping()
            depth, oldest = services.store.inbox_stats()
        except Exception as exc:  # the message names the part: sqlite, redis, elasticsearch
            return error_response(503, "not_ready", str(exc))
        lag = time.time() - oldest if oldest else 0.0
        return JSON(
            {
                "status": "ready",
                "storage": "ok",
                "queue_depth": depth,
                "queue_lag_seconds": round(lag, 3),
            }
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "description": "The Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    def metrics() -> Response:
        body, content_type = exposition(services.store.inbox_stats)
        return Response(body, media_type=content_type)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _complete(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return IngestFront(app, services)
