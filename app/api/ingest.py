"""Ingest routes: Sentry envelope and store, and the native JSON endpoint.

Handlers stay thin and fast: the work is in :mod:`app.ingest`; the request is
answered once the inbox has the event durably.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import APIRouter, Request

from app import ingest, metrics
from app.api.errors import ApiError
from app.api.responses import JSON
from app.auth import hash_key
from app.decompress import BodyError, PayloadTooLarge
from app.services import Services

router = APIRouter(tags=["ingest"])


def _project_id(value: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise ApiError(400, "invalid_project_id", f"project id must be a number, got {value!r}")
    return int(value)


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it passes ``limit`` bytes (no unbounded buffering)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    metrics.BYTES_IN.labels(request.url.path.rstrip("/").rsplit("/", 1)[-1]).inc(size)
    return b"".join(chunks)


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


async def _admit(svc: Services, project_id: int, key_hash: str, accepted: ingest.Accepted) -> None:
    """Spend the rate limits and quotas, then hand the events to the queue durably."""
    events = len(accepted.rows)
    project = str(project_id)
    metrics.EVENTS_RECEIVED.labels(project).inc(events)
    refusal = svc.limiter.check(
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


def _client(svc: Services, request: Request, sentry_client: str | None) -> ingest.Client:
    user_agent = request.headers.get("user-agent")
    peer = request.client.host if request.client else None
    return ingest.Client(
        ip=peer,  # already the forwarded client when the peer is a trusted proxy
        user_agent=user_agent[:512] if user_agent else None,
        sdk=ingest.sdk_from(sentry_client, user_agent),
    )


def _svc(request: Request) -> Services:
    return request.app.state.services


@router.post("/api/{project_id}/envelope/", summary="Sentry envelope ingest")
@router.post("/api/{project_id}/envelope", include_in_schema=False)
async def envelope(project_id: str, request: Request) -> JSON:
    svc = _svc(request)
    pid = _project_id(project_id)
    key, sentry_client = ingest.header_key(request.headers, request.query_params)
    if key:  # refuse bad keys before spending time on the body
        _authenticate(svc, key, pid)
    with _counting_invalid(svc, pid if key else None):
        body = await _read_body(request, svc.settings.max_compressed_bytes)
        data = ingest.decode_body(
            body, request.headers.get("content-encoding"), svc.settings.max_envelope_bytes
        )
        key, env = ingest.envelope(data, key, svc.settings.max_event_bytes)
    key_hash = _authenticate(svc, key, pid)
    with _counting_invalid(svc, pid):
        accepted = ingest.accept_envelope(env, pid, _client(svc, request, sentry_client))
    await _admit(svc, pid, key_hash, accepted)
    return JSON({"id": accepted.event_ids[0]} if accepted.event_ids else {})


@router.post("/api/{project_id}/store/", summary="Sentry store ingest (legacy)")
@router.post("/api/{project_id}/store", include_in_schema=False)
async def store(project_id: str, request: Request) -> JSON:
    if request.headers.get("content-type", "").startswith("application/x-sentry-envelope"):
        return await envelope(project_id, request)
    svc = _svc(request)
    pid = _project_id(project_id)
    key, sentry_client = ingest.header_key(request.headers, request.query_params)
    key_hash = _authenticate(svc, key, pid)
    with _counting_invalid(svc, pid):
        body = await _read_body(request, svc.settings.max_compressed_bytes)
        data = ingest.decode_body(
            body, request.headers.get("content-encoding"), svc.settings.max_event_bytes
        )
        events = ingest.store_event(data, svc.settings.max_event_bytes)
    accepted = ingest.accept_events(events, pid, _client(svc, request, sentry_client))
    await _admit(svc, pid, key_hash, accepted)
    return JSON({"id": accepted.event_ids[0]})


@router.post("/api/v1/projects/{project_id}/events", summary="Native ingest: one event or a batch")
async def native(project_id: str, request: Request) -> JSON:
    svc = _svc(request)
    pid = _project_id(project_id)
    key_hash = _authenticate(svc, ingest.bearer_key(request.headers), pid)
    with _counting_invalid(svc, pid):
        body = await _read_body(request, svc.settings.max_compressed_bytes)
        data = ingest.decode_body(
            body, request.headers.get("content-encoding"), svc.settings.max_envelope_bytes
        )
        events, batch = ingest.native_events(data, svc.settings.max_event_bytes)
    accepted = ingest.accept_events(events, pid, _client(svc, request, None))
    await _admit(svc, pid, key_hash, accepted)
    if batch:
        return JSON({"ids": accepted.event_ids})
    return JSON({"id": accepted.event_ids[0]})
