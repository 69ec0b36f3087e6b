"""Bench-only instrumentation of a daphne server, loaded by bench/load_bench.py through
PYTHONPATH (Python imports `sitecustomize` at start). Does nothing unless LOAD_BENCH_DIAG
names a file. Records:

- every cyclic-GC collection's duration, by generation (gc.callbacks), in wall-clock time
  (what the server's clients wait) and in the collecting thread's CPU time (the collector's
  own work: on a loaded machine the wall clock also counts time the process was not
  scheduled);
- event-loop lag: every 100 ms a thread schedules a callback on daphne's asyncio loop
  (Twisted's asyncio reactor) with call_soon_threadsafe and measures how late it runs;
- each write of a stock level change to the node's sockets (the node-local fan-out's
  `deliver` to its "stock" topic): when it began and ended (CLOCK_MONOTONIC, the clock of
  every process on the machine) and how many sockets it wrote to (stock_push_bench.py).

LOAD_BENCH_GC_THRESHOLD="g0,g1,g2", if set, is passed to gc.set_threshold at start (the
site's GC policy, shop/gc_tuning.py, sets its own thresholds when GC_TUNING is on).

On SIGUSR2 (sent by the benchmark once every client socket is closed), recording stops, the
collector's callbacks are removed (the site's policy among them: this process is about to
stop) and the file gets "garbage": the cyclic garbage a full collection finds now
("collected"), then, after gc.unfreeze(), what a second one finds among the objects the
site's policy had frozen ("frozen": objects frozen and then left in reference cycles,
never freed while frozen), each with the most common types and the length of the pass;
and the most common types of the objects still tracked.

Every second the thread rewrites the file (JSON): GC counts / total / max seconds per
generation, full collections (gen 2) with their time, duration and the number of objects
they walked (counted before each, outside its timing), collections of any
generation over 10 ms with their time, and lag samples above 20 ms with their time, plus
the count and sum of all lag samples.
"""

from __future__ import annotations

import collections
import gc
import importlib.machinery
import json
import os
import signal
import sys
import threading
import time

_PATH = os.environ.get("LOAD_BENCH_DIAG")
_GC_THRESHOLD = os.environ.get("LOAD_BENCH_GC_THRESHOLD")


class _PatchOnImport:
    """A meta path finder that calls `patches[name](module)` once module `name` has been
    executed (the code measured is unchanged; its functions are wrapped)."""

    def __init__(self, patches: dict) -> None:
        self.patches = patches

    def find_spec(self, name, path=None, target=None):
        patch = self.patches.get(name)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module) -> None:
            execute(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _install(path: str) -> None:
    # No lock: a GC callback runs in whichever thread triggered the collection, this
    # module's own thread included (while it holds any lock of its own), and a callback
    # that blocks leaves the collector marked busy: the process would never collect again.
    # Each update below is a few operations on lists and floats under the GIL; json.dumps
    # encodes without releasing it.
    stats = {
        "gc": {str(g): [0, 0.0, 0.0] for g in range(3)},  # count, total s, max s
        "full": [],  # [unix time, seconds, objects collected, objects walked, CPU seconds]
        "long": [],  # [unix time, generation, seconds, CPU seconds] of those over 10 ms
        "lag": [],  # [unix time, seconds] for lags over 20 ms
        "lag_count": 0,
        "lag_sum": 0.0,
        "lag_max": 0.0,
    }
    started = [0.0, 0.0]  # wall clock, this thread's CPU time
    recording = [True]

    walked = [0]

    def on_gc(phase: str, info: dict) -> None:
        if not recording[0]:
            return
        if phase == "start":
            if info["generation"] == 2:  # what this full collection will walk
                walked[0] = sum(len(gc.get_objects(g)) for g in range(3))
            started[0] = time.perf_counter()
            started[1] = time.thread_time()
            return
        took = time.perf_counter() - started[0]
        cpu = time.thread_time() - started[1]
        entry = stats["gc"][str(info["generation"])]
        entry[0] += 1
        entry[1] += took
        entry[2] = max(entry[2], took)
        if info["generation"] == 2:
            stats["full"].append([time.time(), took, info.get("collected", 0), walked[0], cpu])
        if took > 0.010:
            stats["long"].append([time.time(), info["generation"], took, cpu])

    gc.callbacks.append(on_gc)

    # The node-local fan-out's writes of stock levels (shop.fanout.LocalFanout.deliver to
    # the "stock" topic): [CLOCK_MONOTONIC start, end, sockets written] of the last 500.
    deliveries = stats["deliveries"] = []

    def patch_fanout(module) -> None:
        deliver = module.LocalFanout.deliver

        def timed(self, topic, text):
            began = time.monotonic()
            written = deliver(self, topic, text)
            if topic == "stock" and recording[0]:
                deliveries.append([began, time.monotonic(), written])
                del deliveries[:-500]
            return written

        module.LocalFanout.deliver = timed

    sys.meta_path.insert(0, _PatchOnImport({"shop.fanout": patch_fanout}))

    def write() -> None:
        text = json.dumps(stats)
        tmp = f"{path}.{threading.get_ident()}.tmp"  # the signal handler writes too
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

    def garbage_pass() -> dict:
        gc.set_debug(gc.DEBUG_SAVEALL)
        took = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - took
        kinds = collections.Counter(
            f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
        )
        gc.garbage.clear()
        gc.set_debug(0)
        gc.collect()  # frees what was kept for counting
        return {"objects": found, "seconds": took, "types": kinds.most_common(12)}

    def check_garbage(signum, frame) -> None:
        recording[0] = False
        # The site's policy (a callback) would freeze the garbage kept for counting.
        gc.callbacks.clear()
        frozen = gc.get_freeze_count()
        garbage = {"collected": garbage_pass(), "frozen_objects": frozen}
        gc.unfreeze()
        garbage["frozen"] = garbage_pass()
        garbage["live"] = collections.Counter(
            f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
        ).most_common(15)
        stats["garbage"] = garbage
        write()

    signal.signal(signal.SIGUSR2, check_garbage)
    threading.Thread(target=watch, name="load-bench-diag", daemon=True).start()


if _GC_THRESHOLD:  # an experiment: what the cyclic GC costs a loaded server
    gc.set_threshold(*(int(part) for part in _GC_THRESHOLD.split(",")))
if _PATH:
    _install(_PATH)
