"""The shopper simulator (`manage.py simulate_shoppers`) as a library for tests and benchmarks.

    summary = await run(Config(nodes=(Node.parse("ws://127.0.0.1:8001"),), shoppers=20))

See `shoppers` for the behaviour, `report` for what is measured and `staff` for a staff
client that reads the dashboard's numbers to compare them with the simulator's `Truth`.
"""

from .report import Latency, Summary, Truth
from .shoppers import Config, Live, Simulation, run
from .staff import StaffView
from .web import Node

__all__ = [
    "Config",
    "Latency",
    "Live",
    "Node",
    "Simulation",
    "StaffView",
    "Summary",
    "Truth",
    "run",
]
