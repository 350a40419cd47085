"""Ingest routes: Sentry envelope and store, and the native JSON endpoint.

These three routes carry nearly all the traffic, and on them FastAPI's
routing, dependency solving and middleware stack cost more than our work
(the same body answered by bare FastAPI: 6,500 requests/s on this machine; by
a bare ASGI callable: 15,200/s).  So they are served by :class:`IngestFront`,
a pure ASGI app in front of FastAPI that answers these paths itself, with what
the middleware would have added (request id, CORS, latency metric, the error
shape), and hands every other request to the FastAPI app.  The work is in
:mod:`app.ingest`; the answer waits until the queue has the events durably.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, Field

from app import ingest, logs, metrics
from app.api.body_limit import BodyDeadlines, ClientGone, Receive, read_body
from app.api.errors import ApiError, as_api_error
from app.api.schemas import REF, ErrorBody, component_schemas, error_responses
from app.auth import hash_key
from app.decompress import BodyError
from app.services import Services

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("stacksift.api")

# project id, then which route; the native path is checked first (its GET is the read API).
_NATIVE = re.compile(r"/api/v1/projects/([^/]+)/events")
_SENTRY = re.compile(r"/api/([^/]+)/(envelope|store)/?")
_ID = re.compile(r"[0-9]{1,19}")
# Route templates as FastAPI named them: the metrics' endpoint label.
_TEMPLATES = {
    "envelope": "/api/{project_id}/envelope/",
    "store": "/api/{project_id}/store/",
    "native": "/api/v1/projects/{project_id}/events",
}
# Response headers browser SDKs may read (CORS), here and in app.api.app's CORSMiddleware.
EXPOSE_HEADERS = ("x-sentry-error", "x-sentry-rate-limits", "retry-after")
_EXPOSE = ", ".join(EXPOSE_HEADERS).encode()


class IngestFront:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.svc = services
        self._latency: dict[tuple[str, int], Any] = {}
        self._deadlines = BodyDeadlines(services.settings.read_timeout_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if match := _NATIVE.fullmatch(path):
                await self._serve("native", match[1], scope, receive, send)
                return
            if match := _SENTRY.fullmatch(path):
                await self._serve(match[2], match[1], scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(
        self, route: str, project_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        start = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        rid = logs.request_id_from(headers.get("x-request-id"))
        token = logs.request_id.set(rid)
        status = 499  # the client went away before its body arrived: no answer
        try:
            try:
                body = await self._answer(route, project_id, scope, headers, receive)
                status, extra = 200, None
            except ClientGone:
                return
            except Exception as exc:
                error = as_api_error(exc)
                if error is None:
                    log.exception("unhandled error on POST %s", scope["path"])
                    error = ApiError(500, "internal_error", "internal error; see the server log")
                else:
                    logs.refused(error.status, error.code, error.message, "POST", scope["path"])
                status, extra = error.status, error.headers
                body = orjson.dumps({"error": {"code": error.code, "message": error.message}})
            await _respond(send, status, body, rid, headers, extra)
        finally:
            logs.request_id.reset(token)
            self._observe(route, status, start)

    async def _answer(
        self, route: str, project_id: str, scope: Scope, headers: dict[str, str], receive: Receive
    ) -> bytes:
        if route == "envelope" or (
            route == "store"
            and headers.get("content-type", "").startswith("application/x-sentry-envelope")
        ):
            return await self._envelope(project_id, scope, headers, receive)
        if route == "store":
            return await self._store(project_id, scope, headers, receive)
        return await self._native(project_id, scope, headers, receive)

    def _observe(self, route: str, status: int, start: float) -> None:
        child = self._latency.get((route, status))
        if child is None:  # labels() costs a few microseconds: keep the children
            child = metrics.REQUEST_SECONDS.labels("POST", _TEMPLATES[route], str(status))
            self._latency[(route, status)] = child
        child.observe(time.perf_counter() - start)

    # -- the three routes -----------------------------------------------------

    async def _envelope(
        self, project_id: str, scope: Scope, headers: dict[str, str], receive: Receive
    ) -> bytes:
        svc = self.svc
        pid = _project_id(project_id)
        key, sentry_client = ingest.header_key(headers, _query(scope))
        if key:  # refuse bad keys before spending time on the body
            _authenticate(svc, key, pid)
        with _counting_invalid(svc, pid if key else None):
            raw = await read_body(
                receive, headers, svc.settings.max_compressed_bytes, "envelope", self._deadlines
            )
            data = ingest.decode_body(
                raw, headers.get("content-encoding"), svc.settings.max_envelope_bytes
            )
            key, env = ingest.envelope(data, key, svc.settings.max_event_bytes)
        key_hash = _authenticate(svc, key, pid)
        with _counting_invalid(svc, pid):
            accepted = ingest.accept_envelope(env, pid, _client(scope, headers, sentry_client))
        await _admit(svc, pid, key_hash, accepted)
        return orjson.dumps({"id": accepted.event_ids[0]} if accepted.event_ids else {})

    async def _store(
        self, project_id: str, scope: Scope, headers: dict[str, str], receive: Receive
    ) -> bytes:
        svc = self.svc
        pid = _project_id(project_id)
        key, sentry_client = ingest.header_key(headers, _query(scope))
        key_hash = _authenticate(svc, key, pid)
        with _counting_invalid(svc, pid):
            raw = await read_body(
                receive, headers, svc.settings.max_compressed_bytes, "store", self._deadlines
            )
            data = ingest.decode_body(
                raw, headers.get("content-encoding"), svc.settings.max_event_bytes
            )
            events = ingest.store_event(data, svc.settings.max_event_bytes)
        accepted = ingest.accept_events(events, pid, _client(scope, headers, sentry_client))
        await _admit(svc, pid, key_hash, accepted)
        return orjson.dumps({"id": accepted.event_ids[0]})

    async def _native(
        self, project_id: str, scope: Scope, headers: dict[str, str], receive: Receive
    ) -> bytes:
        svc = self.svc
        pid = _project_id(project_id)
        key_hash = _authenticate(svc, ingest.bearer_key(headers), pid)
        with _counting_invalid(svc, pid):
            raw = await read_body(
                receive, headers, svc.settings.max_compressed_bytes, "events", self._deadlines
            )
            data = ingest.decode_body(
                raw, headers.get("content-encoding"), svc.settings.max_envelope_bytes
            )
            events, batch = ingest.native_events(data, svc.settings.max_event_bytes)
        accepted = ingest.accept_events(events, pid, _client(scope, headers, None))
        await _admit(svc, pid, key_hash, accepted)
        if batch:
            return orjson.dumps({"ids": accepted.event_ids})
        return orjson.dumps({"id": accepted.event_ids[0]})


# -- documentation of these routes (FastAPI does not see them) ------------------------


class Accepted(BaseModel):
    id: str = Field(description="The event's id, 32 lowercase hex digits")


class EnvelopeAccepted(BaseModel):
    id: str | None = Field(
        None, description="The event's id; absent when the envelope holds no event"
    )


class BatchAccepted(BaseModel):
    ids: list[str] = Field(description="The events' ids, in the order sent")


_EXAMPLE_EVENT = {
    "event_id": "fc6d8c0c43fc4630ad850ee518f1b9d0",
    "timestamp": "2026-12-02T10:15:00Z",
    "level": "error",
    "platform": "python",
    "environment": "production",
    "release": "shop@1.4.2",
    "exception": {
        "values": [
            {
                "type": "ValueError",
                "value": "bad cart",
                "stacktrace": {"frames": [{"function": "checkout", "module": "shop.views"}]},
            }
        ]
    },
    "tags": {"region": "eu"},
}
_ENVELOPE = (
    '{"event_id":"fc6d8c0c43fc4630ad850ee518f1b9d0"}\n'
    '{"type":"event"}\n'
    '{"event_id":"fc6d8c0c43fc4630ad850ee518f1b9d0","message":"boom","level":"error"}\n'
)
_EVENT = {"type": "object", "description": "A Sentry event payload"}
_ENCODING = {
    "name": "Content-Encoding",
    "in": "header",
    "required": False,
    "description": "gzip, deflate, br or zstd; the limits apply to the decompressed size too",
    "schema": {"type": "string"},
}
_ERRORS = error_responses(400, 401, 403, 408, 413, 415, 429, 503, 507)
_SENTRY_AUTH = [{"sentryAuth": []}, {"sentryKey": []}]

OPENAPI_SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "sentryAuth": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Sentry-Auth",
        "description": "`Sentry sentry_key=<ingest key>, sentry_version=7, "
        "sentry_client=<sdk>/<version>`, as Sentry SDKs send it; "
        "`Authorization: Sentry ...` is read the same way",
    },
    "sentryKey": {
        "type": "apiKey",
        "in": "query",
        "name": "sentry_key",
        "description": "The ingest key as a query parameter (browser SDKs)",
    },
    "ingestBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An ingest key of the project: `Authorization: Bearer <ingest key>`",
    },
    "ingestApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An ingest key of the project",
    },
}


def _operation(
    summary: str, description: str, security: list[dict[str, list[str]]],
    body: dict[str, Any], ok: dict[str, Any],
) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["ingest"],
            "summary": summary,
            "description": description,
            "security": security,
            "parameters": [
                {
                    "name": "project_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer"},
                },
                _ENCODING,
            ],
            "requestBody": {"required": True, "content": body},
            "responses": {
                "200": {
                    "description": "Accepted: stored durably before this answer",
                    "content": {"application/json": {"schema": ok}},
                },
                **_ERRORS,
            },
        }
    }


OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    _TEMPLATES["envelope"]: _operation(
        "Sentry envelope ingest",
        "The key comes from X-Sentry-Auth, the sentry_key query parameter, or the `dsn` "
        "of the envelope header (then no other credentials are needed).",
        [*_SENTRY_AUTH, {}],
        {
            "application/x-sentry-envelope": {
                "schema": {"type": "string"},
                "example": _ENVELOPE,
            }
        },
        {"$ref": REF.format(model="EnvelopeAccepted")},
    ),
    _TEMPLATES["store"]: _operation(
        "Sentry store ingest (legacy)",
        "One event as JSON (a body of type application/x-sentry-envelope is read as an "
        "envelope). The key comes from X-Sentry-Auth or the sentry_key query parameter.",
        _SENTRY_AUTH,
        {"application/json": {"schema": _EVENT, "example": _EXAMPLE_EVENT}},
        {"$ref": REF.format(model="Accepted")},
    ),
    _TEMPLATES["native"]: _operation(
        "Native ingest: one event or a batch",
        "One event object (answered with its `id`), or `{\"events\": [...]}` (answered "
        "with `ids`).",
        [{"ingestBearer": []}, {"ingestApiKey": []}],
        {
            "application/json": {
                "schema": {
                    "anyOf": [
                        _EVENT,
                        {
                            "type": "object",
                            "required": ["events"],
                            "properties": {"events": {"type": "array", "items": _EVENT}},
                        },
                    ]
                },
                "examples": {
                    "one": {"summary": "One event", "value": _EXAMPLE_EVENT},
                    "batch": {"summary": "A batch", "value": {"events": [_EXAMPLE_EVENT]}},
                },
            }
        },
        {
            "oneOf": [
                {"$ref": REF.format(model="Accepted")},
                {"$ref": REF.format(model="BatchAccepted")},
            ]
        },
    ),
}
OPENAPI_SCHEMAS = component_schemas(Accepted, EnvelopeAccepted, BatchAccepted, ErrorBody)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    rid: str,
    request_headers: dict[str, str],
    extra: dict[str, str] | None,
) -> None:
    out = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode()),
    ]
    origin = request_headers.get("origin")
    if origin:  # as Starlette's CORSMiddleware with allow_origins=["*"] answers
        if "cookie" in request_headers:
            out += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"vary", b"Origin"),
            ]
        else:
            out.append((b"access-control-allow-origin", b"*"))
        out.append((b"access-control-expose-headers", _EXPOSE))
    if extra:
        out += [(k.lower().encode(), v.encode("latin-1")) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"")
    return dict(parse_qsl(raw.decode("latin-1"))) if raw else {}


def _project_id(value: str) -> int:
    """ASCII digits within signed 64 bits (str.isdigit also takes '²', which int() refuses)."""
    if not _ID.fullmatch(value) or int(value) > 2**63 - 1:
        raise ApiError(400, "invalid_project_id", f"project id must be a number, got {value!r}")
    return int(value)


def _authenticate(svc: Services, key: str | None, project_id: int) -> str:
    """The key's hash, once it is known to be a live key of this project."""
    if not key:
        metrics.EVENTS_REJECTED.labels("unknown", "unauthorized").inc()
        raise ingest.AuthError(
            "no key: send X-Sentry-Auth, the sentry_key query parameter, an envelope dsn, "
            "Authorization: Bearer or X-API-Key"
        )
    key_hash = hash_key(key)
    owner = svc.store.key_project(key_hash, "ingest")
    if owner is None or owner != project_id:
        metrics.EVENTS_REJECTED.labels("unknown", "forbidden").inc()  # unbounded ids: no label
    if owner is None:
        raise ingest.Forbidden("unknown or revoked key")
    if owner != project_id:
        raise ingest.Forbidden(f"this key does not belong to project {project_id}")
    return key_hash


# All categories, for a minute (the form the Sentry SDKs parse: app.ratelimit).
BACKLOG_FULL_HEADERS = {
    "Retry-After": "60",
    "X-Sentry-Rate-Limits": "60::organization:backlog_full",
}


async def _admit(svc: Services, project_id: int, key_hash: str, accepted: ingest.Accepted) -> None:
    """Spend the rate limits and quotas, then hand the events to the queue durably."""
    events = len(accepted.rows)
    project = str(project_id)
    metrics.EVENTS_RECEIVED.labels(project).inc(events)
    waiting = svc.backlog_over_limit() if events else None
    if waiting is not None:
        svc.writer.count(Counter({(project_id, "backlog_full"): events}))
        metrics.EVENTS_REJECTED.labels(project, "backlog_full").inc(events)
        raise ApiError(
            429,
            "backlog_full",
            f"processing is behind: {waiting} events are waiting (more than "
            f"STACKSIFT_MAX_BACKLOG={svc.settings.max_backlog}); retry later",
            BACKLOG_FULL_HEADERS,
        )
    refusal = await svc.limiter.check(
        project_id, key_hash, svc.project_settings(project_id).limits, events
    )
    if refusal is not None:
        svc.writer.count(Counter({(project_id, refusal.reason): max(events, 1)}))
        metrics.RATE_LIMITED.labels(project, refusal.reason).inc()
        metrics.EVENTS_REJECTED.labels(project, refusal.reason).inc(max(events, 1))
        code = "quota_exceeded" if refusal.reason == "over_quota" else "rate_limited"
        raise ApiError(429, code, refusal.message, refusal.headers)
    await svc.enqueue(accepted)
    metrics.EVENTS_ACCEPTED.labels(project).inc(events)


@contextmanager
def _counting_invalid(svc: Services, project_id: int | None) -> Iterator[None]:
    """Bad bodies of an authenticated project are counted as 'invalid' before the 4xx."""
    try:
        yield
    except BodyError as exc:
        if project_id is None:  # not authenticated yet: nobody to count it against
            metrics.EVENTS_REJECTED.labels("unknown", exc.code).inc()
            raise
        svc.writer.count(Counter({(project_id, "invalid"): 1}))
        metrics.EVENTS_REJECTED.labels(str(project_id), exc.code).inc()
        raise


def _client(scope: Scope, headers: dict[str, str], sentry_client: str | None) -> ingest.Client:
    user_agent = headers.get("user-agent")
    client = scope.get("client")
    return ingest.Client(
        ip=client[0] if client else None,  # already the forwarded client behind a trusted proxy
        user_agent=user_agent[:512] if user_agent else None,
        sdk=ingest.sdk_from(sentry_client, user_agent),
    )
