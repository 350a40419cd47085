"""One listening socket per API process, so the kernel spreads connections evenly.

uvicorn's ``--workers N`` binds one socket in its supervisor and every worker
accepts from it; asyncio accepts up to 100 waiting connections each time it
wakes, so the process that wakes first takes a whole burst of new
connections.  SDK transports and proxies keep their connections open, so
they stay where they landed: in the benchmark one of two API processes held
85 % of the connections, saturated its core while the other idled, and the
same code accepted 3,554 instead of 5,075 events/s (docs/benchmarks.md).

With ``SO_REUSEPORT`` each worker binds a socket of its own to the address
and the kernel hashes every new connection to one of them.  The supervisor
only checks that the address is free and hands the workers a
:class:`Listener`, which becomes the worker's own socket when the worker
process unpickles it (uvicorn passes sockets to its spawned workers by
pickling them; a restarted worker binds afresh the same way).
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

log = logging.getLogger("stacksift.listen")

STARTUP_FAILURE = 3  # uvicorn stops its supervisor instead of restarting a worker that exits so


def run(app: str, **options: Any) -> None:
    """``uvicorn.run(app, **options)``, except that several workers listen on a socket each.

    One way to serve for ``stacksift serve`` and for the benchmark's bare app alike, so
    the ceiling stacksift is measured against listens as stacksift does."""
    import uvicorn

    if options.get("workers", 1) == 1 or not reuse_port_supported():
        uvicorn.run(app, **options)
        return
    from uvicorn.supervisors import Multiprocess

    listener = Listener(options.get("host", "127.0.0.1"), options.get("port", 8000))
    try:
        listener.check_free()
    except OSError as exc:
        print(f"cannot listen on {listener.host}:{listener.port}: {exc}", file=sys.stderr)
        raise SystemExit(STARTUP_FAILURE) from None
    Multiprocess(uvicorn.Config(app, **options), sockets=[listener]).run()  # type: ignore[list-item]


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")


class Listener:
    """The address a worker process is to listen on; unpickled, a socket bound to it."""

    def __init__(self, host: str, port: int) -> None:
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.port = port

    def check_free(self) -> None:
        """Bind without SO_REUSEPORT: fails while anything listens on the address, our own
        earlier server included (its sockets would otherwise share the port silently).
        Port 0 becomes the free port the kernel chose, for every worker alike."""
        probe = socket.socket(self.family)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((self.host, self.port))
            self.port = probe.getsockname()[1]
        finally:
            probe.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (bind, (self.family, self.host, self.port))


def bind(family: int, host: str, port: int) -> socket.socket:
    """A socket of this process's own in the address's SO_REUSEPORT group (not yet listening:
    uvicorn's ``create_server`` listens once the application has started)."""
    sock = socket.socket(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        raise SystemExit(STARTUP_FAILURE) from None
    return sock
