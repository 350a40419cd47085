"""A Sentry SDK transport that keeps the events the real SDK would send, as JSON."""

from __future__ import annotations

from typing import Any

import orjson
from sentry_sdk.transport import Transport


class KeepEvents(Transport):
    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Any) -> None:
        event = envelope.get_event()
        if event is not None:
            self.events.append(orjson.loads(orjson.dumps(event)))

    def flush(self, timeout: float, callback: Any = None) -> None:
        return None

    def kill(self) -> None:
        return None
