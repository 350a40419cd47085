"""RQ entry points of the distributed mode; the work itself is in app.distributed."""

from __future__ import annotations

from app import distributed


def drain() -> int:
    """Process queued events in batches until the queue is empty (or the job's time is up)."""
    return distributed.drain(distributed.context())
