"""Creating projects and their keys: shared by the CLI and the admin API."""

from __future__ import annotations

from dataclasses import dataclass

from app.auth import KeyKind, dsn, hash_key, hint, new_secret
from app.storage.sqlite import SqliteStore


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
