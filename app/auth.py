"""Keys and tokens: how they are made, stored (SHA-256 only) and recognised."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from typing import Literal

KeyKind = Literal["ingest", "read"]


def hash_key(secret: str) -> str:
    """Keys are 128+ random bits, so an unsalted SHA-256 is enough to make a leaked
    database useless for sending or reading, and it keeps lookup a single index probe."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(kind: KeyKind) -> str:
    if kind == "ingest":
        return uuid.uuid4().hex  # the DSN public key: 32 hex, as every SDK expects
    return "sst_" + secrets.token_urlsafe(32)


def hint(secret: str) -> str:
    """What lists show of a key: enough to tell keys apart, too little to use."""
    return secret[:8] + "…"


def same_secret(given: str, expected: str | None) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), (expected or "").encode())


def dsn(base_url: str, public_key: str, project_id: int) -> str:
    scheme, _, rest = base_url.partition("://")
    return f"{scheme}://{public_key}@{rest}/{project_id}"
