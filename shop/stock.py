"""Stock levels: the one place that turns a stock count into what shoppers and staff see."""

from enum import StrEnum


class StockLevel(StrEnum):
    OUT = "out"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


LOW_MAX = 3
MEDIUM_MAX = 10


def stock_level(stock: int) -> StockLevel:
    """out (0), low (1-3), medium (4-10), high (more than 10)."""
    if stock <= 0:
        return StockLevel.OUT
    if stock <= LOW_MAX:
        return StockLevel.LOW
    if stock <= MEDIUM_MAX:
        return StockLevel.MEDIUM
    return StockLevel.HIGH
