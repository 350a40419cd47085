"""The ``stacksift`` command line."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app import datadir, listen
from app.datadir import DataDirError
from app.settings import Settings, SettingsError, load_settings
from app.storage.sqlite import SqliteStore


class CliError(Exception):
    """A command that cannot go on; main prints the message as one line."""


def _store(settings: Settings, create: bool = False) -> SqliteStore:
    """The deployment's store, set up.  Only ``create`` makes a missing data directory:
    any other command would otherwise show an empty store of the wrong directory."""
    if settings.distributed:
        from app.distributed import build

        distributed = build(settings).store
        distributed.setup()
        return distributed  # type: ignore[return-value]  # same public interface
    if create:
        datadir.create(settings.data_dir)
    else:
        datadir.require(settings.data_dir)
    store = SqliteStore(settings.db_path, settings.retention_days)
    try:
        store.setup()
    except sqlite3.Error as exc:
        raise CliError(f"cannot open the database {settings.db_path}: {exc}") from None
    return store


def _project_id(store: SqliteStore, ref: str) -> int:
    """A project given by id or by name, as everywhere on the command line."""
    projects = store.list_projects()
    if ref.isascii() and ref.isdigit():
        for project in projects:
            if project["id"] == int(ref):
                return int(project["id"])
    named = [int(p["id"]) for p in projects if p["name"] == ref]
    if len(named) == 1:
        return named[0]
    if named:
        raise CliError(f"{len(named)} projects are named {ref!r}; give the id instead")
    raise CliError(f"no project {ref!r} (give its id or name; see `stacksift project list`)")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from app.projects import create_project

    scheme = "https" if args.ssl_certfile else "http"
    served = datadir.served_url(scheme, args.host, args.port)
    if settings.base_url is None and (
        settings.distributed or args.host in datadir.WILDCARD_HOSTS
    ):
        why = "in distributed mode" if settings.distributed else f"when listening on {args.host}"
        raise CliError(
            f"STACKSIFT_BASE_URL is required {why}: set it to the address SDKs and people "
            f"reach this server at (e.g. https://errors.example.com), for DSNs and alert links"
        )
    data_dir = datadir.create(settings.data_dir)
    # Recorded, so that the CLI's DSNs and alert links name what this server serves.
    base_url = settings.base_url or served
    datadir.record_base_url(data_dir, base_url)
    try:
        store = _store(settings)  # the data directory was made above
        first_run = not store.list_projects()
    except CliError:
        raise
    except Exception as exc:
        if not settings.distributed:
            raise CliError(f"cannot start: {exc}") from None
        # Redis or Elasticsearch down: serve anyway; /readyz answers 503 until they are back.
        print(f"storage unreachable, serving anyway (/readyz says 503 until it is back): {exc}",
              file=sys.stderr)
        first_run = False
    if first_run:
        project = create_project(store, "default", base_url)
        print(f"created project {project.id} 'default'")
        print(f"  DSN (point any Sentry SDK here): {project.dsn}")
        print(f"  read token (Authorization: Bearer ...): {project.read_token}")
        print("  (shown once; make more with `stacksift project create` / `key create`)")
    print(f"stacksift listening on {served} (data in {data_dir})", flush=True)
    processing = None
    metrics_dir = None
    if args.workers > 1:
        # Each uvicorn worker is a process: metrics go to files that /metrics merges.  Not
        # in the data directory: prometheus_client writes them through sparse mappings, and
        # on a full data disk that write is a SIGBUS that kills every API process.
        metrics_dir = tempfile.mkdtemp(prefix="stacksift-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        if not settings.distributed:
            # Embedded: the worker thread runs here, in the main process, and the N API
            # processes only serve; processing gets a GIL of its own (ingest and
            # processing in one process share one, and each waits behind the other),
            # and prepares events in N processes, so a backlog drains on all cores.
            from app import logs
            from app.services import API_ONLY_ENV, Services

            logs.configure(settings.log_level)
            os.environ[API_ONLY_ENV] = "1"
            processing = Services(settings, serves_api=False, prepare_processes=args.workers)
            processing.start()
    try:
        _run_uvicorn(args, settings)
    finally:
        if processing is not None:
            processing.close()  # the API processes are gone: finish the batch, stop
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _run_uvicorn(args: argparse.Namespace, settings: Settings) -> None:
    options: dict[str, Any] = dict(
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,  # app.logs: one JSON line per log record
        timeout_graceful_shutdown=30,
        # Client IP and scheme from X-Forwarded-For/-Proto only when the peer is a
        # trusted proxy; uvicorn walks the hops from the right, skipping trusted ones.
        proxy_headers=bool(settings.trusted_proxies.strip()),
        forwarded_allow_ips=settings.trusted_proxies.strip() or None,
        # httptools with a deadline and a size limit on request heads (app/http_guard.py).
        http=(
            "app.http_guard:GuardedHttpProtocol"
            if importlib.util.find_spec("httptools")
            else "auto"
        ),
    )
    # Several API processes listen on a socket each, so connections spread evenly.
    listen.run("app.api.app:create_app", **options)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.distributed:
        print(
            "stacksift worker is for distributed mode: set STACKSIFT_REDIS_URL and "
            "STACKSIFT_ELASTICSEARCH_URL (embedded `stacksift serve` processes events itself)",
            file=sys.stderr,
        )
        return 2
    if settings.base_url is None:
        raise CliError(
            "STACKSIFT_BASE_URL is required in distributed mode: workers put it in alert links "
            "(the address people reach the API at, e.g. https://errors.example.com)"
        )
    from app.distributed import run_worker

    return run_worker(settings, burst=args.burst, metrics_port=args.metrics_port)


def cmd_setup(args: argparse.Namespace, settings: Settings) -> int:
    if settings.distributed:
        from app.distributed import build

        for line in build(settings).store.setup(force=True):
            print(line)
        print(f"Elasticsearch layout ready (prefix {settings.index_prefix!r})")
        return 0
    _store(settings, create=True)
    print(f"SQLite schema ready in {settings.db_path}")
    return 0


def cmd_project(args: argparse.Namespace, settings: Settings) -> int:
    from app.projects import create_project

    store = _store(settings, create=args.action == "create")
    if args.action == "create":
        if not settings.distributed:
            print(f"data directory: {settings.data_dir}", file=sys.stderr)
        project = create_project(store, args.name, settings.public_base_url)
        if args.json:
            print(json.dumps(project.as_dict()))
        else:
            print(
                f"id:          {project.id}\ndsn:         {project.dsn}\n"
                f"ingest_key:  {project.ingest_key}\nread_token:  {project.read_token}"
            )
        return 0
    for project in store.list_projects():
        print(f"{project['id']}\t{project['name']}")
    return 0


def cmd_key(args: argparse.Namespace, settings: Settings) -> int:
    from app.auth import dsn
    from app.projects import create_key

    store = _store(settings)
    args.project_id = _project_id(store, args.project)
    if args.action == "create":
        key = create_key(store, args.project_id, args.kind, args.label)
        print(f"key {key.id} ({key.kind}): {key.secret}")
        if key.kind == "ingest":
            print(f"dsn: {dsn(settings.public_base_url, key.secret, args.project_id)}")
        return 0
    if args.action == "rotate":
        return _rotate(args, settings, store)
    if args.action == "revoke":
        if not store.revoke_key(args.project_id, args.key_id):
            print(f"project {args.project_id} has no active key {args.key_id}", file=sys.stderr)
            return 1
        print(f"key {args.key_id} revoked")
        return 0
    now = time.time()
    for key in store.list_keys(args.project_id):
        state = "active" if key.revoked_at is None else "revoked"
        if key.revoked_at is not None and key.active(now):
            state = f"expires in {key.revoked_at - now:.0f}s"
        print(f"{key.id}\t{key.kind}\t{key.hint}\t{state}\t{key.label}")
    return 0


def _rotate(args: argparse.Namespace, settings: Settings, store: SqliteStore) -> int:
    from app.auth import dsn
    from app.projects import MAX_GRACE_SECONDS, rotate_key

    if not 0 <= args.grace <= MAX_GRACE_SECONDS:
        print(f"--grace must be between 0 and {MAX_GRACE_SECONDS} seconds", file=sys.stderr)
        return 2
    rotated = rotate_key(store, args.project_id, args.key_id, args.grace)
    if rotated is None:
        print(f"project {args.project_id} has no active key {args.key_id}", file=sys.stderr)
        return 1
    key = rotated.new
    print(f"key {key.id} ({key.kind}): {key.secret}")
    if key.kind == "ingest":
        print(f"dsn: {dsn(settings.public_base_url, key.secret, args.project_id)}")
    if args.grace:
        print(f"key {args.key_id} keeps working for {args.grace:g}s, then is refused")
    else:
        print(f"key {args.key_id} revoked")
    return 0


def cmd_dead_letter(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    if args.action == "replay":
        print(f"replayed {store.replay_dead_letters(args.ids or None)} events")
        return 0
    items = store.list_dead_letters(limit=1000)
    if not items:
        print("no events in the dead-letter store")
    for item in items:
        print(f"{item['id']}\tproject {item['project_id']}\t{item['event_id']}\t{item['error']}")
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    if settings.distributed:
        raise CliError(
            "stacksift backup copies an embedded data directory; in distributed mode back up "
            "Redis (its AOF/RDB files) and Elasticsearch (snapshots): see docs/guide"
        )
    store = _store(settings)
    dest = args.path.expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CliError(f"{dest} exists and is not an empty directory")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in store.backup(dest):
        print(f"copied {path}")
    base_url = datadir.recorded_base_url(settings.data_dir)
    if base_url:
        datadir.record_base_url(dest, base_url)
    print(f"backup of {settings.data_dir} complete in {dest}")
    return 0


def _cores() -> int:
    """The cores this process may run on (its CPU affinity, as in a container), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {value!r}")
    return number


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stacksift", description="Sentry-compatible error tracker")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the API (and, embedded, the worker)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--workers",
        type=_positive,
        default=_cores(),
        help="processes serving the API (embedded: as many prepare events, and this one "
        "stores them); default: one per core this process may use, %(default)s here; 1 for "
        "a single process. Rate limits and quotas are one budget across them all",
    )
    s.add_argument("--ssl-certfile")
    s.add_argument("--ssl-keyfile")
    s.set_defaults(func=cmd_serve)

    w = sub.add_parser("worker", help="run an RQ worker (distributed mode)")
    w.add_argument("--burst", action="store_true", help="process what is queued, then exit")
    w.add_argument(
        "--metrics-port", type=int, default=0, help="serve Prometheus metrics here (0: off)"
    )
    w.set_defaults(func=cmd_worker)

    sub.add_parser("setup", help="create or upgrade storage").set_defaults(func=cmd_setup)

    pr = sub.add_parser("project", help="manage projects")
    prs = pr.add_subparsers(dest="action", required=True)
    c = prs.add_parser("create", help="create a project; print its DSN and read token")
    c.add_argument("name")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    prs.add_parser("list", help="list projects (id and name)")
    pr.set_defaults(func=cmd_project)

    project_help = "the project's id or name"
    k = sub.add_parser("key", help="manage keys of a project")
    ks = k.add_subparsers(dest="action", required=True)
    kc = ks.add_parser("create", help="make an ingest key (prints its DSN) or a read token")
    kc.add_argument("project", metavar="PROJECT", help=project_help)
    kc.add_argument("--kind", choices=["ingest", "read"], default="ingest",
                    help="ingest: an SDK's DSN key; read: a read token (default: ingest)")
    kc.add_argument("--label", default="", help="a note shown by `key list`")
    kl = ks.add_parser("list", help="list a project's keys: id, kind, hint, state, label")
    kl.add_argument("project", metavar="PROJECT", help=project_help)
    kr = ks.add_parser("revoke", help="stop accepting a key, at once")
    kr.add_argument("project", metavar="PROJECT", help=project_help)
    kr.add_argument("key_id", type=int, metavar="KEY_ID", help="as `key list` shows it")
    kt = ks.add_parser("rotate", help="make a new key; the old one stops after --grace")
    kt.add_argument("project", metavar="PROJECT", help=project_help)
    kt.add_argument("key_id", type=int, metavar="KEY_ID", help="as `key list` shows it")
    kt.add_argument(
        "--grace", type=float, default=0.0, help="seconds the old key keeps working (default 0)"
    )
    k.set_defaults(func=cmd_key)

    d = sub.add_parser("dead-letter", help="inspect and replay events that failed processing")
    ds = d.add_subparsers(dest="action", required=True)
    ds.add_parser("list", help="list them with the error of their last attempt")
    dr = ds.add_parser("replay", help="queue them for processing again")
    dr.add_argument("ids", nargs="*", type=int, help="dead-letter ids (default: all)")
    d.set_defaults(func=cmd_dead_letter)

    b = sub.add_parser(
        "backup", help="copy the data directory consistently while the server runs (embedded)"
    )
    b.add_argument("path", type=Path, help="a new or empty directory to copy into")
    b.set_defaults(func=cmd_backup)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve" and bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        print("--ssl-certfile and --ssl-keyfile go together", file=sys.stderr)
        return 2
    datadir.private_files()  # events hold personal data
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"stacksift: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, settings))
    except (CliError, DataDirError) as exc:
        print(f"stacksift: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
