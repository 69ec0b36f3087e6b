"""A tracker replica in its own OS process, for the Redis tests.

    python -m tests.tracker.replica_process REDIS_URL NODE_NAME ROWS OPTIONS_JSON

Starts a Tracker named "procs" on REDIS_URL, tracks ROWS rows on topic "room" (conn
"NODE_NAME-c<i>", key "NODE_NAME-k<i>", meta {"node": NODE_NAME, "i": i}), prints
{"replica": <id>} as one JSON line, then answers each line read from stdin with one JSON
line: "list" -> its view of "room" as [[key, meta], ...]; "replicas" -> replicas().
At the end of stdin it stops gracefully and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys

from tracker import Tracker


async def main(url: str, node: str, rows: int, options: dict) -> None:
    tracker = Tracker("procs", redis_url=url, node_name=node, **options)
    await tracker.start()
    for i in range(rows):
        await tracker.track(f"{node}-c{i}", "room", f"{node}-k{i}", {"node": node, "i": i})
    print(json.dumps({"replica": tracker.replica_id}), flush=True)
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command = line.strip()
            if command == "list":
                answer = sorted(tracker.list("room"), key=repr)
            elif command == "replicas":
                answer = tracker.replicas()
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        await tracker.stop(graceful=True)


if __name__ == "__main__":
    url, node, rows, options = sys.argv[1:5]
    asyncio.run(main(url, node, int(rows), json.loads(options)))
