#!/usr/bin/env python
"""Every figure of issue 12 (cost per socket), before and now, with one command:

    .venv/bin/python bench/issue12_bench.py --before cf173ec          # ~40 minutes
    .venv/bin/python bench/issue12_bench.py --before cf173ec --only push,cart

Runs, one after the other (each alone on the machine), and prints their tables:

- push: bench/stock_push_bench.py --before REV (stock push at 2,000 and 10,000 sockets per
  node: commit -> last socket, node CPU per push);
- cart: bench/cart_actions_bench.py --before REV (cart actions per second on one node, the
  saturation curve, SQLite and PostgreSQL);
- connect: bench/load_bench.py at 1k / 5k / 10k sockets per node (CPU per connect, KiB per
  socket): REV's own load_bench.py on REV's site (exported by bench/revision.py; its
  sockets carry session cookies, as every load_bench.py before `--shoppers` did), then this
  checkout's with session cookies (like for like), then with cart cookies (the default:
  anonymous shoppers after their first page view). For cart cookies on a revision that
  reads them: `load_bench.py --site REV`.

The presence memory figures of the issue are bench/tracker_bench.py's (`--only memory`).
Figures and how to read them: bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.revision import exported  # noqa: E402

CONNECT_STEPS = "2000,10000,20000"  # cumulative over two nodes: 1k / 5k / 10k per node


def run(command: list[str], cwd: Path = ROOT) -> None:
    print(f"\n$ {' '.join(command)}  (in {cwd}; load average {os.getloadavg()[0]:.2f})", flush=True)
    started = time.monotonic()
    subprocess.run(command, cwd=cwd, check=False)
    print(f"({time.monotonic() - started:.0f} s)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, metavar="REV", help="the revision before")
    parser.add_argument("--only", default="push,cart,connect", help="some of push,cart,connect")
    args = parser.parse_args()
    python = sys.executable
    parts = set(args.only.split(","))
    if "push" in parts:
        run([python, "bench/stock_push_bench.py", "--before", args.before])
    if "cart" in parts:
        run([python, "bench/cart_actions_bench.py", "--before", args.before])
    if "connect" in parts:
        steps = ["--steps", CONNECT_STEPS, "--hold", "10"]
        with exported(args.before) as before:
            # Its own script and its own tests/ helpers: they serve the site beside them.
            run([python, "bench/load_bench.py", *steps], cwd=before)
        run([python, "bench/load_bench.py", *steps, "--shoppers", "session"])
        run([python, "bench/load_bench.py", *steps, "--shoppers", "cart"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
