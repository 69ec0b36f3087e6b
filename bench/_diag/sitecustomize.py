"""Bench-only instrumentation of a daphne server, loaded by bench/load_bench.py through
PYTHONPATH (Python imports `sitecustomize` at start). Does nothing unless LOAD_BENCH_DIAG
names a file. Records:

- every cyclic-GC collection's duration, by generation (gc.callbacks);
- event-loop lag: every 100 ms a thread schedules a callback on daphne's asyncio loop
  (Twisted's asyncio reactor) with call_soon_threadsafe and measures how late it runs.

LOAD_BENCH_GC_THRESHOLD="g0,g1,g2", if set, is passed to gc.set_threshold at start.

Every second the thread rewrites the file (JSON): GC counts / total / max seconds per
generation, full collections (gen 2) with their time and duration, and lag samples above
20 ms with their time, plus the count and sum of all lag samples.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time

_PATH = os.environ.get("LOAD_BENCH_DIAG")
_GC_THRESHOLD = os.environ.get("LOAD_BENCH_GC_THRESHOLD")


def _install(path: str) -> None:
    # No lock: a GC callback runs in whichever thread triggered the collection, this
    # module's own thread included (while it holds any lock of its own), and a callback
    # that blocks leaves the collector marked busy: the process would never collect again.
    # Each update below is a few operations on lists and floats under the GIL; json.dumps
    # encodes without releasing it.
    stats = {
        "gc": {str(g): [0, 0.0, 0.0] for g in range(3)},  # count, total s, max s
        "full": [],  # [unix time, seconds, objects collected]
        "lag": [],  # [unix time, seconds] for lags over 20 ms
        "lag_count": 0,
        "lag_sum": 0.0,
        "lag_max": 0.0,
    }
    started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        entry = stats["gc"][str(info["generation"])]
        entry[0] += 1
        entry[1] += took
        entry[2] = max(entry[2], took)
        if info["generation"] == 2:
            stats["full"].append([time.time(), took, info.get("collected", 0)])

    gc.callbacks.append(on_gc)

    def write() -> None:
        text = json.dumps(stats)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    def watch() -> None:
        loop = None
        while loop is None:
            time.sleep(0.2)
            reactor = sys.modules.get("twisted.internet.reactor")
            loop = getattr(reactor, "_asyncioEventloop", None)
        last_write = 0.0
        while True:
            time.sleep(0.1)
            ran = threading.Event()
            sent = time.perf_counter()
            try:
                loop.call_soon_threadsafe(ran.set)
            except RuntimeError:  # the loop is closed: the server is stopping
                return
            ran.wait(60)
            lag = time.perf_counter() - sent
            stats["lag_count"] += 1
            stats["lag_sum"] += lag
            stats["lag_max"] = max(stats["lag_max"], lag)
            if lag > 0.020:
                stats["lag"].append([time.time(), lag])
            if time.monotonic() - last_write >= 1.0:
                last_write = time.monotonic()
                write()

    threading.Thread(target=watch, name="load-bench-diag", daemon=True).start()


if _GC_THRESHOLD:  # an experiment: what the cyclic GC costs a loaded server
    gc.set_threshold(*(int(part) for part in _GC_THRESHOLD.split(",")))
if _PATH:
    _install(_PATH)
