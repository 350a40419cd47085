"""What a running server is made of, built once from the settings."""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time

from app.alerts import AlertService
from app.inbox import InboxWriter
from app.ingest import Accepted
from app.prepare_pool import PreparePool
from app.project_settings import ProjectSettings, SettingsCache
from app.ratelimit import RateLimiter
from app.settings import Settings
from app.storage.sqlite import SqliteStore, encode_event
from app.worker import BACKGROUND_NICE, EmbeddedWorker

log = logging.getLogger("stacksift")

# Set by `stacksift serve --workers N` (embedded) for its API processes: the main
# process runs the one worker thread, so processing has a GIL of its own instead of
# sharing one with ingest (not a STACKSIFT_ setting: users never set it).
API_ONLY_ENV = "_STACKSIFT_API_ONLY"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PR_SET_NAME = 15
BACKLOG_READ_EVERY_S = 1.0


def follow_parent(sig: int = signal.SIGTERM) -> None:
    """Stop this process (SIGTERM: a graceful stop) when the process that started it dies.

    uvicorn's worker processes (``serve --workers N``) outlived a supervisor killed with
    SIGKILL (the OOM killer, say): they kept the port, so a restart could not bind it,
    and kept answering 200 to events that, embedded, no process was left to process.
    Linux only (prctl); elsewhere, and in a process nobody spawned, nothing to do."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        log.warning("cannot follow the parent process: errno %d", ctypes.get_errno())
        return
    if os.getppid() != parent.pid:  # it died before the call above
        os.kill(os.getpid(), sig)


def name_process(name: str) -> None:
    """The name ps and top show (Linux: comm), for processes that are all "python3"."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


class Services:
    def __init__(
        self,
        settings: Settings,
        *,
        run_worker: bool = True,
        serves_api: bool = True,
        prepare_processes: int = 0,
    ) -> None:
        self.settings = settings
        if settings.distributed:
            # Same API, other storage: Elasticsearch + a Redis stream drained by RQ workers.
            from app.distributed import QueueKicker, build

            ctx = build(settings)
            self.store = ctx.store
            self._setup_with_retry()
            self.worker = QueueKicker(ctx.queue)
            self.writer = InboxWriter(ctx.queue, on_commit=lambda: None, in_thread=True)
        else:
            self.store = SqliteStore(settings.db_path, settings.retention_days)
            self.store.setup()
            nice = 0 if serves_api else BACKGROUND_NICE
            self.worker = EmbeddedWorker(
                self.store,
                settings.data_dir / "worker.lock",
                nice=nice,
                prepare=(
                    PreparePool(prepare_processes, encode_event, not serves_api, settings.log_level)
                    if prepare_processes > 1
                    else None
                ),
            )
            self.writer = InboxWriter(self.store, on_commit=self.worker.wake)
        self.limiter = RateLimiter(settings.rate_limit, settings.redis_url, settings.data_dir)
        self._project_settings = SettingsCache()
        self._run_worker = run_worker
        self._serves_api = serves_api
        self._backlog = (-math.inf, 0)  # (monotonic time read, events waiting)
        # Alerts follow processing; their delivery thread also sends due digests.
        self.alerts = AlertService(self.store, settings)  # type: ignore[arg-type]
        self.worker.on_updates = self.alerts.on_updates

    setup_error: str | None = None

    def _setup_with_retry(self) -> None:
        """Redis or Elasticsearch down at start-up must not stop the API from starting:
        /readyz answers 503 with the reason while a thread retries the setup."""
        try:
            self.store.setup()
        except Exception as exc:
            self.setup_error = self._reason(exc)
            log.warning(
                "storage unreachable at start-up; retrying", extra={"error": self.setup_error}
            )
            threading.Thread(target=self._retry_setup, name="setup-retry", daemon=True).start()

    def _reason(self, exc: Exception) -> str:
        """The failing part by name (ping says redis: / elasticsearch:), else the setup error."""
        try:
            self.store.ping()
        except Exception as named:
            return str(named)
        return f"setup: {exc}"

    def _retry_setup(self) -> None:
        delay = 1.0
        while self.setup_error is not None:
            time.sleep(delay)
            try:
                self.store.setup()
            except Exception as exc:
                self.setup_error = f"setup: {exc}"
                log.warning(
                    "storage still unreachable; retrying in %.0f s",
                    min(delay * 2, 30),
                    extra={"error": str(exc)},
                )
                delay = min(delay * 2, 30.0)
            else:
                self.setup_error = None
                log.info("storage reachable; setup done")

    def start(self) -> None:
        log.info(
            "stacksift started",
            extra={
                "mode": self.settings.distributed and "distributed" or "embedded",
                "data_dir": str(self.settings.data_dir),
            },
        )
        self.alerts.start()
        if self._run_worker:
            if self._serves_api:
                # The worker thread is CPU-bound Python; with the default 5 ms GIL switch
                # interval every request waits behind it (p99 237 ms -> 89 ms measured with
                # 0.5 ms under full load, at the same accepted rate).
                sys.setswitchinterval(0.0005)
            self.worker.start()

    def close(self) -> None:
        self.writer.close()
        self.worker.stop()
        self.alerts.close()

    def backlog_over_limit(self) -> int | None:
        """Events waiting for processing when there are more than STACKSIFT_MAX_BACKLOG,
        else None.  Read at most once a second per process (one row in SQLite, three
        Redis commands): a bound, not an exact gate."""
        limit = self.settings.max_backlog
        if not limit:
            return None
        now = time.monotonic()
        read_at, waiting = self._backlog
        if now - read_at >= BACKLOG_READ_EVERY_S:
            try:
                waiting = self.store.inbox_stats()[0]
            except Exception:  # storage away: the enqueue answers that (503, 507)
                waiting = 0
            self._backlog = (now, waiting)
        return waiting if waiting > limit else None

    def project_settings(self, project_id: int) -> ProjectSettings:
        return self._project_settings.get(project_id, self.store.project_config(project_id))

    async def enqueue(self, accepted: Accepted) -> None:
        if accepted.rows or accepted.counts:
            await self.writer.submit(accepted.rows, accepted.counts)
