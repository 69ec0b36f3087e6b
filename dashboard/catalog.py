"""What the dashboard shows about an item id: read-only lookups in the shop's catalogue."""

from collections.abc import Iterable
from typing import Any

from shop.models import Item

MAX_ITEM_ID = 2**63 - 1  # larger ids cannot exist (and would overflow SQLite's integers)


def describe_items(item_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`{"<item_id>": {"product", "size", "stock", "level"}}` for the ids that exist."""
    ids = {int(i) for i in item_ids if i.isdigit() and 0 < int(i) <= MAX_ITEM_ID}
    if not ids:
        return {}
    return {
        str(item.pk): {
            "product": str(item.product),
            "size": item.size,
            "stock": item.stock,
            "level": item.level.value,
        }
        for item in Item.objects.select_related("product").filter(pk__in=ids)
    }
