"""Channel-layer groups of the storefront and the events sent to them.

Every tab of a cart is in that cart's group and receives `cart.changed` with the cart's
snapshot; every storefront page is in the stock group and receives `stock.changed`.
"""

from collections.abc import Iterable

from channels.layers import get_channel_layer

from shop.carts import CartSnapshot, StockChange

STOCK_GROUP = "shop.stock"


def cart_group(cart_id: str) -> str:
    return f"shop.cart.{cart_id}"


async def publish_cart(cart: CartSnapshot) -> None:
    await get_channel_layer().group_send(
        cart_group(cart["id"]), {"type": "cart.changed", "cart": cart}
    )


async def publish_stock(changes: Iterable[StockChange]) -> None:
    layer = get_channel_layer()
    for change in changes:
        await layer.group_send(
            STOCK_GROUP,
            {"type": "stock.changed", "item_id": change.item_id, "level": change.level},
        )
