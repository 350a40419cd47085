"""How fast this host runs a fixed piece of Python right now.

On the shared 2-core box the same single-threaded work took 145 to 248 ms of CPU
from one second to the next with nothing else running (docs/benchmarks.md, eighth
session).  The bare ceiling and stacksift, measured a minute apart, can therefore
run on what amounts to different machines; each target's report carries this
figure from just before and just after its burst, so a ratio can be read against it.
"""

from __future__ import annotations

import json
import statistics
import time

_FRAMES = [{"lineno": n, "function": f"f{n}", "vars": {"x": "y" * 40}} for n in range(40)]
_PAYLOAD = {"frames": _FRAMES}


def cpu_ms(rounds: int = 5) -> float:
    """Median CPU milliseconds of ``rounds`` runs of the same work (lower is faster)."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(400):
            json.loads(json.dumps(_PAYLOAD))
        times.append((time.process_time() - start) * 1000)
    return round(statistics.median(times), 1)


if __name__ == "__main__":
    print(cpu_ms(), "ms")
