"""Creating projects and their keys: shared by the CLI and the admin API."""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.auth import KeyKind, dsn, hash_key, hint, new_secret
from app.storage.sqlite import KeyInfo, SqliteStore

MAX_GRACE_SECONDS = 30 * 86400  # long enough to redeploy every client, short enough to end


@dataclass(slots=True)
class NewKey:
    id: int
    kind: KeyKind
    secret: str  # shown once; only its hash is stored


@dataclass(slots=True)
class NewProject:
    id: int
    name: str
    dsn: str
    ingest_key: str
    read_token: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "dsn": self.dsn,
            "ingest_key": self.ingest_key,
            "read_token": self.read_token,
        }


def create_key(store: SqliteStore, project_id: int, kind: KeyKind, label: str = "") -> NewKey:
    secret = new_secret(kind)
    key_id = store.add_key(project_id, kind, hash_key(secret), hint(secret), label)
    return NewKey(key_id, kind, secret)


def create_project(store: SqliteStore, name: str, base_url: str) -> NewProject:
    project_id = store.create_project(name)
    ingest = create_key(store, project_id, "ingest", "default")
    read = create_key(store, project_id, "read", "default")
    return NewProject(
        project_id, name, dsn(base_url, ingest.secret, project_id), ingest.secret, read.secret
    )


@dataclass(slots=True)
class Rotated:
    new: NewKey
    old_id: int
    old_stops_at: float


def rotate_key(
    store: SqliteStore, project_id: int, key_id: int, grace_seconds: float = 0.0
) -> Rotated | None:
    """A new key of the same kind and label; the old one keeps working for
    ``grace_seconds`` (0: refused at once) so clients can switch without losing events.
    None when the project has no live key ``key_id``."""
    old = _key(store, project_id, key_id)
    if old is None or not old.active(time.time()):
        return None
    new = create_key(store, project_id, old.kind, old.label)  # type: ignore[arg-type]
    store.revoke_key(project_id, key_id, grace_seconds)  # False only if revoked meanwhile
    retired = _key(store, project_id, key_id)
    return Rotated(new, key_id, retired.revoked_at if retired and retired.revoked_at else 0.0)


def _key(store: SqliteStore, project_id: int, key_id: int) -> KeyInfo | None:
    return next((k for k in store.list_keys(project_id) if k.id == key_id), None)
