"""Installing and maintaining stacksift's Elasticsearch layout (``stacksift setup``).

The JSON in ``index_templates/`` is the layout, written for the default index
prefix ``stacksift``; another prefix (``STACKSIFT_INDEX_PREFIX``) is substituted
into names and patterns when it is loaded.  Everything is a PUT of the whole
object, so running setup again installs upgrades and changes nothing otherwise.

Retention: with ILM (a full distribution), the policy in ``ilm.*.json`` deletes
a daily index RETENTION_DAYS after it was created.  Without ILM (the
integ-test-zip has none), :func:`delete_expired` does the same by index name;
the worker calls it periodically.  ILM settings are only sent to a cluster
that has ILM: an unknown setting makes the template PUT fail.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.resources
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.abc import Traversable
from typing import Any

import orjson
from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError

log = logging.getLogger("stacksift.elastic")

# Package data (pyproject.toml), so that a wheel finds them as an editable install does.
TEMPLATES_DIR = importlib.resources.files("index_templates")
DEFAULT_PREFIX = "stacksift"
DAY_FORMAT = "%Y.%m.%d"


class SetupError(Exception):
    """The cluster refused part of the layout; the message names the object."""


@dataclass(frozen=True, slots=True)
class Names:
    """Every index, alias and template name of one deployment (one prefix)."""

    prefix: str

    @property
    def events_alias(self) -> str:
        return f"{self.prefix}-events"

    def events_index(self, day: str) -> str:
        return f"{self.prefix}-events-{day}"

    @property
    def events_pattern(self) -> str:
        return f"{self.prefix}-events-*"

    @property
    def issues(self) -> str:
        return f"{self.prefix}-issues"

    @property
    def projects(self) -> str:
        return f"{self.prefix}-projects"

    @property
    def keys(self) -> str:
        return f"{self.prefix}-keys"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}-dead-letters"

    @property
    def alert_rules(self) -> str:
        return f"{self.prefix}-alert-rules"

    @property
    def alert_notifications(self) -> str:
        return f"{self.prefix}-alert-notifications"

    @property
    def small_indices(self) -> tuple[str, ...]:
        return (
            self.issues,
            self.projects,
            self.keys,
            self.dead_letters,
            self.alert_rules,
            self.alert_notifications,
        )


def day_of(epoch_seconds: float) -> str:
    return dt.datetime.fromtimestamp(epoch_seconds, dt.UTC).strftime(DAY_FORMAT)


def _load(path: Traversable, prefix: str) -> Any:
    text = path.read_text()
    if prefix != DEFAULT_PREFIX:
        text = text.replace(f"{DEFAULT_PREFIX}-", f"{prefix}-")
    return orjson.loads(text)


def layout(prefix: str) -> dict[str, list[tuple[str, Any]]]:
    """(name, body) of every object in ``index_templates/``, by kind, with ``prefix`` applied."""
    out: dict[str, list[tuple[str, Any]]] = {"component": [], "index": [], "ilm": []}
    for path in sorted(TEMPLATES_DIR.iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".json"):
            continue
        kind, _, name = path.name.removesuffix(".json").partition(".")
        if kind not in out:
            raise SetupError(f"{path.name}: file names start with component., index. or ilm.")
        if prefix != DEFAULT_PREFIX:
            name = name.replace(f"{DEFAULT_PREFIX}-", f"{prefix}-")
        out[kind].append((name, _load(path, prefix)))
    if not out["index"]:
        raise SetupError(f"no index templates in {TEMPLATES_DIR}")
    return out


def has_ilm(es: Elasticsearch) -> bool:
    """ILM is a module that minimal distributions lack; ask instead of assuming."""
    try:
        es.ilm.get_status()
    except (ApiError, TransportError):
        return False
    return True


def _ilm_policy(body: dict[str, Any], retention_days: int) -> dict[str, Any]:
    policy = orjson.loads(
        orjson.dumps(body).replace(b"RETENTION_DAYS", str(retention_days).encode())
    )
    phases = policy["policy"]["phases"]
    warm_days = int(str(phases.get("warm", {}).get("min_age", "0d")).rstrip("d") or 0)
    if "warm" in phases and warm_days >= retention_days:
        del phases["warm"]  # phases must be in order of age
    return policy


def install(es: Elasticsearch, prefix: str, retention_days: int) -> list[str]:
    """Install or upgrade templates, the ILM policy (if the cluster has ILM), the small
    indices and today's events index; returns what was done, one line each."""
    done: list[str] = []
    objects = layout(prefix)
    ilm = has_ilm(es)
    names = Names(prefix)
    try:
        for name, body in objects["component"]:
            es.cluster.put_component_template(name=name, **body)
            done.append(f"component template {name}")
        if ilm:
            for name, body in objects["ilm"]:
                es.ilm.put_lifecycle(name=name, **_ilm_policy(body, retention_days))
                done.append(f"ILM policy {name} (delete after {retention_days} days)")
            ilm_component = f"{prefix}-events-ilm"
            es.cluster.put_component_template(
                name=ilm_component,
                template={"settings": {"index.lifecycle.name": f"{prefix}-events"}},
            )
            done.append(f"component template {ilm_component}")
        for name, body in objects["index"]:
            if ilm and name == f"{prefix}-events":
                body = {**body, "composed_of": [*body["composed_of"], f"{prefix}-events-ilm"]}
            es.indices.put_index_template(name=name, **body)
            done.append(f"index template {name}")
            _upgrade_existing(es, body)
        wanted = (*names.small_indices, names.events_index(day_of(_now())))
        missing = [i for i in wanted if not es.indices.exists(index=i)]
        # In parallel: each creation waits for its shard to start (~0.7 s on a small node).
        with ThreadPoolExecutor(max_workers=len(missing) or 1) as pool:
            for index in pool.map(lambda i: _create(es, i), missing):
                done.append(f"index {index}")
    except ApiError as exc:
        raise SetupError(
            f"Elasticsearch refused the layout ({done[-1:] or 'start'}): {exc}"
        ) from exc
    if not ilm:
        done.append("no ILM on this cluster: the worker deletes expired daily indices by name")
    return done


def _create(es: Elasticsearch, index: str) -> str:
    try:
        es.indices.create(index=index)
    except ApiError as exc:  # another process created it first
        if exc.error != "resource_already_exists_exception":
            raise
    return index


def _upgrade_existing(es: Elasticsearch, body: dict[str, Any]) -> None:
    """New fields reach indices that already exist (additive mapping changes only)."""
    mappings = body.get("template", {}).get("mappings")
    if not mappings:
        return
    patterns = ",".join(body["index_patterns"])
    try:
        existing = es.indices.get(index=patterns, ignore_unavailable=True, allow_no_indices=True)
    except NotFoundError:
        return
    if existing.body:
        es.indices.put_mapping(index=",".join(existing.body), **mappings)


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


_DAY_RE = re.compile(r"(\d{4})\.(\d{2})\.(\d{2})$")


def event_indices(es: Elasticsearch, prefix: str) -> list[str]:
    names = Names(prefix)
    found = es.indices.get(
        index=names.events_pattern, ignore_unavailable=True, allow_no_indices=True
    )
    return sorted(found.body)


def delete_expired(es: Elasticsearch, prefix: str, retention_days: int, now: float) -> list[str]:
    """Delete daily event indices whose whole day is older than the retention, by name
    (the cluster refuses wildcard deletes); returns the deleted names."""
    cutoff = dt.datetime.fromtimestamp(now, dt.UTC).date() - dt.timedelta(days=retention_days)
    expired = []
    for index in event_indices(es, prefix):
        match = _DAY_RE.search(index)
        if match is None or not index.startswith(f"{prefix}-events-"):
            continue
        day = dt.date(*(int(g) for g in match.groups()))
        if day < cutoff:
            expired.append(index)
    for start in range(0, len(expired), 50):
        es.indices.delete(index=",".join(expired[start : start + 50]))
    if expired:
        log.info("retention: deleted %s", ", ".join(expired))
    return expired


def drop_everything(es: Elasticsearch, prefix: str, templates: bool = True) -> None:
    """Remove every index (and template) of ``prefix`` (tests; ``stacksift`` never calls it)."""
    names = Names(prefix)
    indices = [*event_indices(es, prefix)]
    indices += [i for i in names.small_indices if es.indices.exists(index=i)]
    for start in range(0, len(indices), 50):
        es.indices.delete(index=",".join(indices[start : start + 50]), ignore_unavailable=True)
    if not templates:
        return
    objects = layout(prefix)
    for name, _ in objects["index"]:
        with contextlib.suppress(NotFoundError):
            es.indices.delete_index_template(name=name)
    for name in [n for n, _ in objects["component"]] + [f"{prefix}-events-ilm"]:
        with contextlib.suppress(NotFoundError):
            es.cluster.delete_component_template(name=name)
