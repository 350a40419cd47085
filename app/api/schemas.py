"""What the API answers, for ``/openapi.json``: the error shape and the statuses each
route can answer.  Routes return :class:`app.api.responses.JSON` themselves, so these
models document the answers without re-validating them on the hot path."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    code: str = Field(
        description="Stable, machine-readable: e.g. invalid_request, invalid_query, "
        "unauthorized, forbidden, not_found, payload_too_large, rate_limited, unavailable",
        examples=["invalid_query"],
    )
    message: str = Field(description="For people: what is wrong and how to fix it")


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer of every route."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": {"code": "unauthorized",
                   "message": "send the token as 'Authorization: Bearer <token>'"}}
    ]})
    error: ErrorDetail


_RETRY_AFTER = {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}

ERRORS: dict[int, dict[str, Any]] = {
    400: {"description": "A parameter, the body or the query (`q`) is invalid; the message "
                         "says which (validation errors are answered here, never with 422)"},
    401: {"description": "No credentials were sent"},
    403: {"description": "The credentials are unknown, revoked, or not valid for this "
                         "project or route"},
    404: {"description": "No such project, issue, event, key or rule"},
    408: {"description": "The body did not arrive within STACKSIFT_READ_TIMEOUT_SECONDS"},
    413: {"description": "The body (or, decompressed, the event or envelope) is too large"},
    415: {"description": "Unsupported Content-Encoding (gzip, deflate, br and zstd are read)"},
    429: {
        "description": "Rate limit, quota or queue backlog exceeded (codes rate_limited, "
                       "quota_exceeded, backlog_full)",
        "headers": {
            "Retry-After": _RETRY_AFTER,
            "X-Sentry-Rate-Limits": {
                "description": "retry_after:categories:scope:reason, as Sentry SDKs parse it",
                "schema": {"type": "string"},
            },
        },
    },
    503: {"description": "Storage or queue unreachable; nothing was stored",
          "headers": {"Retry-After": _RETRY_AFTER}},
    507: {"description": "The data disk is full; nothing was stored",
          "headers": {"Retry-After": _RETRY_AFTER}},
}

# The statuses of the usual kinds of route (a route adds 400 and 404 where they apply).
AUTH = (401, 403, 503)  # a token is checked and storage read
BODY = (400, 408, 413, 507)  # a JSON body is read and something written


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the error shape under each status it can answer."""
    return {s: {"model": ErrorBody, **ERRORS[s]} for s in sorted(set(statuses))}


def error_responses(*statuses: int) -> dict[str, dict[str, Any]]:
    """The same as :func:`errors`, as OpenAPI for routes FastAPI does not see."""
    ref = {"$ref": REF.format(model="ErrorBody")}
    return {
        str(s): {**ERRORS[s], "content": {"application/json": {"schema": ref}}}
        for s in sorted(set(statuses))
    }


def component_schemas(*models: type[BaseModel]) -> dict[str, Any]:
    """JSON schemas of models that no FastAPI route declares (bodies read by hand, the
    ingest front's answers), named as FastAPI names them in ``#/components/schemas``."""
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    return top.get("$defs", {})


class Page(BaseModel):
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page"
    )


class Span(BaseModel):
    """The time range the answer covers, as the server read `from` and `to`."""

    from_: str | None = Field(alias="from", description="RFC 3339 UTC; null: no lower bound")
    to: str = Field(description="RFC 3339 UTC; `now` when not given")
