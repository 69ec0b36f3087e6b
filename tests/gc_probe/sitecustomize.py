"""Test instrument of a daphne server (tests/cluster/test_gc_tuning.py), loaded through
PYTHONPATH (Python imports `sitecustomize` at start). Does nothing unless GC_PROBE names a
file.

On SIGUSR2, a census, with the collector's callbacks (the site's policy among them) off:
a full collection frees the garbage among unfrozen objects, as any would; then every
frozen object is unfrozen, and a second full collection keeps the cyclic garbage it finds
(gc.DEBUG_SAVEALL), which can only be objects that were frozen, so that it can be counted
by type before it is freed; then every survivor is frozen, as the site's GC policy does
after a full collection. The file gets (JSON) {"census": how many so far, "garbage":
{type: count}, "live": {type: count}}, "live" counting the instances of WATCHED types
that survived. A type is "module.qualname", followed for a function by the function's.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import signal

WATCHED = (
    "daphne.ws_protocol.WebSocketProtocol",
    "daphne.http_protocol.WebRequest",
    "twisted.web.http.HTTPChannel",
    "shop.consumers.ShoppingCartConsumer",
    "dashboard.consumers.DashboardConsumer",
)


def _type(o: object) -> str:
    name = f"{type(o).__module__}.{type(o).__qualname__}"
    if callable(getattr(o, "__code__", None)) or hasattr(o, "__code__"):  # a function: which
        name += f" {o.__module__}.{o.__qualname__}"
    return name


def _install(path: str) -> None:
    censuses = [0]

    def census(signum, frame) -> None:
        callbacks = gc.callbacks[:]
        gc.callbacks.clear()  # the site's policy would freeze the garbage kept for counting
        try:
            gc.collect()  # garbage among unfrozen objects: freed, as by any collection
            gc.unfreeze()
            listed = collections.Counter(t for t in map(_type, gc.get_objects()) if t in WATCHED)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            garbage = collections.Counter(map(_type, gc.garbage))
            gc.garbage.clear()
            gc.set_debug(0)
            gc.collect()
            gc.freeze()  # as the site's policy does after a full collection
        finally:
            gc.callbacks[:] = callbacks
        censuses[0] += 1
        report = {
            "census": censuses[0],
            "garbage": dict(garbage),
            "live": {t: listed[t] - garbage[t] for t in WATCHED},
        }
        with open(f"{path}.tmp", "w") as f:
            json.dump(report, f)
        os.replace(f"{path}.tmp", path)

    signal.signal(signal.SIGUSR2, census)


if os.environ.get("GC_PROBE"):
    _install(os.environ["GC_PROBE"])
