"""Serve bare_app:app as ``stacksift serve`` serves stacksift: same uvicorn options and,
with several workers, a listening socket per worker (app/listen.py).

With uvicorn's shared socket the bare ceiling moved between 10,400 and 12,500
requests/s from run to run, depending on how wrk's connections happened to land
on the two workers; stacksift spreads them with SO_REUSEPORT, so the ceiling it
is compared with must too.

  python scripts/bench/bare_serve.py --port 8000 --workers 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bare_app, in spawned workers too

from app import listen  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    options = dict(host=args.host, port=args.port, workers=args.workers)
    options |= dict(access_log=False, log_level="warning")
    listen.run("bare_app:app", **options)


if __name__ == "__main__":
    main()
