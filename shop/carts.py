"""Cart operations: synchronous, one transaction each. Consumers call them through
database_sync_to_async; views call them directly.

A cart *snapshot* is the wire cart of docs/protocol.md plus the cart's `revision`:
{"id", "revision", "items": [{"item_id", "product", "size", "quantity", "price", "available"}],
"total_quantity"}. It is what travels through the channel layer to every tab of the cart.

A cart id names a cart before its row exists (see shop.identity): a cart without a row is
empty, at revision 0, and its row is created by the first change (`add_item`). Every change
names the cart's owner (a user id, or None for an anonymous shopper) and is refused with
`NotYourCart` when the row belongs to someone else, so a socket opened before a login can
never change the cart that login took over.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, TypedDict

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from shop.models import Cart, CartItem, Item
from shop.stock import stock_level

CART_SESSION_KEY = "cart_id"
# Larger ids cannot exist in the database (and would overflow SQLite's integer binding).
MAX_ITEM_ID = 2**63 - 1


class CartLine(TypedDict):
    item_id: int
    product: str
    size: str
    quantity: int
    price: str
    available: bool


class CartSnapshot(TypedDict):
    id: str
    revision: int
    items: list[CartLine]
    total_quantity: int


class CartError(Exception):
    """A refused cart operation; `code` is the error code of the shopper socket."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SoldOut(CartError):
    def __init__(self, line: CartItem) -> None:
        item = line.item
        left = item.stock if item.product.released else 0
        detail = f": only {left} left and your cart holds {line.quantity}" if left else ""
        super().__init__(
            "out_of_stock",
            f"Sorry, {item.product} in size {item.size} is sold out{detail}. "
            "Nothing was bought; remove it from your cart and try again.",
        )
        self.item_id = item.pk


class NotYourCart(CartError):
    """The cart's row belongs to another owner: the shopper's login state has changed."""

    def __init__(self) -> None:
        super().__init__("no_cart", "This cart belongs to another login. Reload the page.")


@dataclass(frozen=True)
class StockChange:
    item_id: int
    level: str


@dataclass(frozen=True)
class Purchase:
    cart: CartSnapshot
    quantity: int
    stock_changes: list[StockChange]


def wire_cart(snapshot: CartSnapshot) -> dict[str, Any]:
    """The `cart` object of the shopper socket's cart message (docs/protocol.md)."""
    return {
        "id": snapshot["id"],
        "items": snapshot["items"],
        "total_quantity": snapshot["total_quantity"],
    }


def parse_cart_id(value: object) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def cart_lines(cart: Cart) -> list[CartItem]:
    return list(_lines_of(cart.pk))


def _lines_of(cart_pk: Any) -> Any:
    """The cart's lines with their items and products, in one query, in line order."""
    return CartItem.objects.filter(cart_id=cart_pk).select_related("item__product").order_by("id")


def line_available(line: CartItem) -> bool:
    return line.item.product.released and line.item.stock >= line.quantity


def _snapshot(cart: Cart, lines: list[CartItem]) -> CartSnapshot:
    """The snapshot of `cart` holding `lines` (current, as read in this transaction)."""
    return {
        "id": str(cart.id),
        "revision": cart.revision,
        "items": [
            {
                "item_id": line.item_id,
                "product": line.item.product.name,
                "size": line.item.size,
                "quantity": line.quantity,
                "price": str(line.item.product.price),
                "available": line_available(line),
            }
            for line in lines
        ],
        "total_quantity": sum(line.quantity for line in lines),
    }


def snapshot(cart: Cart) -> CartSnapshot:
    return _snapshot(cart, cart_lines(cart))


def empty_snapshot(cart_id: str) -> CartSnapshot:
    """The state of a cart that has no row yet."""
    return {"id": cart_id, "revision": 0, "items": [], "total_quantity": 0}


_CONNECT_FIELDS = (
    "cart__revision",
    "cart__user_id",
    "item_id",
    "item__product__name",
    "item__size",
    "quantity",
    "item__product__price",
    "item__product__released",
    "item__stock",
)


def load_snapshot(cart_id: str, owner: int | None) -> CartSnapshot | None:
    """The cart's current state (empty while it has no row), or None if its row belongs
    to another owner than `owner` (a user id, None for anonymous). Every socket's connect
    reads it: one query of plain values when the cart has lines (each carries its cart's
    revision and owner), two when it has none."""
    pk = parse_cart_id(cart_id)
    if pk is None:
        return empty_snapshot(cart_id)
    rows = list(CartItem.objects.filter(cart_id=pk).order_by("id").values_list(*_CONNECT_FIELDS))
    if rows:
        revision, user_id = rows[0][:2]
    else:
        cart = Cart.objects.filter(pk=pk).values_list("revision", "user_id").first()
        if cart is None:
            return empty_snapshot(cart_id)
        revision, user_id = cart
    if user_id != owner:
        return None
    items: list[CartLine] = [
        {
            "item_id": item_id,
            "product": product,
            "size": size,
            "quantity": quantity,
            "price": str(price),
            "available": released and stock >= quantity,
        }
        for _, _, item_id, product, size, quantity, price, released, stock in rows
    ]
    return {
        "id": str(pk),
        "revision": revision,
        "items": items,
        "total_quantity": sum(line["quantity"] for line in items),
    }


def session_cart_id(session: Any) -> str | None:
    """The cart id stored in a Django session (does not check that the cart exists)."""
    value = session.get(CART_SESSION_KEY) if session is not None else None
    return str(parse_cart_id(value)) if parse_cart_id(value) else None


def claim_cart(cart_id: str, user: Any) -> bool:
    """Link the cart to `user` if its row is anonymous or already theirs; False if it has no
    row or belongs to someone else."""
    mine = Cart.objects.filter(Q(user__isnull=True) | Q(user=user), pk=cart_id)
    return mine.update(user=user) == 1


def latest_cart_id(user: Any) -> str | None:
    """The id of the user's most recently changed cart, if they have one."""
    pk = Cart.objects.filter(user=user).order_by("-updated_at").values_list("pk", flat=True)
    return str(pk[0]) if pk else None


def _locked_cart(cart_id: str, owner: int | None) -> Cart | None:
    """The cart, locked for the rest of the transaction so changes of one cart serialise;
    None if it has no row. NotYourCart if its row belongs to another owner."""
    pk = parse_cart_id(cart_id)
    if pk is None:
        raise CartError("no_cart", "This is not a cart id.")
    try:  # (get(), not first(): no ORDER BY by Cart's default ordering to compile and run)
        cart = Cart.objects.select_for_update().get(pk=pk)
    except Cart.DoesNotExist:
        return None
    if cart.user_id != owner:
        raise NotYourCart()
    return cart


def _locked_or_new_cart(cart_id: str, owner: int | None) -> Cart:
    """As `_locked_cart`, but a cart without a row gets one now, owned by `owner`."""
    cart = _locked_cart(cart_id, owner)
    if cart is not None:
        return cart
    try:
        with transaction.atomic():  # a savepoint: a concurrent first change may win
            return Cart.objects.create(pk=parse_cart_id(cart_id), user_id=owner)
    except IntegrityError:
        cart = _locked_cart(cart_id, owner)
        assert cart is not None  # the one that won made it
        return cart


def _bump_revision(cart: Cart) -> None:
    """Count one more change of a cart locked by this transaction (so `cart.revision`, read
    under the lock, stays right without reading it back)."""
    now = timezone.now()
    Cart.objects.filter(pk=cart.pk).update(revision=F("revision") + 1, updated_at=now)
    cart.revision += 1
    cart.updated_at = now


def _item(item_id: int) -> Item | None:
    """The item with its product, if it exists."""
    if not 0 < item_id <= MAX_ITEM_ID:
        return None
    try:
        return Item.objects.select_related("product").get(pk=item_id)
    except Item.DoesNotExist:
        return None


def _out_of_stock(item: Item, in_cart: int) -> CartError:
    if item.stock == 0:
        return CartError("out_of_stock", f"{item.product} in size {item.size} is sold out.")
    return CartError(
        "out_of_stock",
        f"Only {item.stock} of {item.product} in size {item.size} left, "
        f"and your cart already holds {in_cart}.",
    )


def add_item(cart_id: str, item_id: int, owner: int | None = None) -> CartSnapshot:
    """Add one unit of a released item, never more than its stock. The first change of a
    cart creates its row, owned by `owner`.

    Under the cart's lock it reads the cart's lines once (with their items), the item only
    if it is not among them, writes the line and the revision, and builds the snapshot from
    what it read: four or five statements, nothing read twice."""
    with transaction.atomic():
        cart = _locked_or_new_cart(cart_id, owner)
        lines = cart_lines(cart)
        line = next((line for line in lines if line.item_id == item_id), None)
        item = line.item if line is not None else _item(item_id)
        if item is None or not item.product.released:
            raise CartError("not_found", f"There is no item {item_id} for sale.")
        in_cart = line.quantity if line else 0
        if in_cart + 1 > item.stock:
            raise _out_of_stock(item, in_cart)
        if line is None:
            lines.append(CartItem.objects.create(cart=cart, item=item, quantity=1))
        else:
            CartItem.objects.filter(pk=line.pk).update(quantity=F("quantity") + 1)
            line.quantity += 1
        _bump_revision(cart)
        return _snapshot(cart, lines)


def remove_item(cart_id: str, item_id: int, owner: int | None = None) -> CartSnapshot:
    """Remove one unit; the line goes when its quantity reaches zero."""
    with transaction.atomic():
        cart = _locked_cart(cart_id, owner)
        lines = cart_lines(cart) if cart is not None else []
        line = next((line for line in lines if line.item_id == item_id), None)
        if cart is None or line is None:
            raise CartError("not_found", f"Item {item_id} is not in your cart.")
        if line.quantity <= 1:
            CartItem.objects.filter(pk=line.pk).delete()
            lines.remove(line)
        else:
            CartItem.objects.filter(pk=line.pk).update(quantity=F("quantity") - 1)
            line.quantity -= 1
        _bump_revision(cart)
        return _snapshot(cart, lines)


def checkout(cart_id: str, owner: int | None = None) -> Purchase:
    """Buy the whole cart in one transaction, or nothing at all.

    Each line takes its stock with a guarded UPDATE (stock >= quantity), so concurrent buyers
    can never drive stock negative; the first line that cannot be served raises SoldOut and
    rolls back every line before it.
    """
    with transaction.atomic():
        cart = _locked_cart(cart_id, owner)
        lines = cart_lines(cart) if cart is not None else []
        if cart is None or not lines:
            raise CartError("empty_cart", "Your cart is empty.")
        changes = []
        for line in sorted(lines, key=lambda line: line.item_id):  # one lock order for all
            taken = line.item.product.released and Item.objects.filter(
                pk=line.item_id, stock__gte=line.quantity
            ).update(stock=F("stock") - line.quantity)
            if not taken:
                line.item.refresh_from_db(fields=["stock"])
                raise SoldOut(line)
            left = Item.objects.values_list("stock", flat=True).get(pk=line.item_id)
            if stock_level(left) != stock_level(left + line.quantity):
                changes.append(StockChange(line.item_id, stock_level(left).value))
        CartItem.objects.filter(cart=cart).delete()
        _bump_revision(cart)
        return Purchase(
            cart=_snapshot(cart, []),
            quantity=sum(line.quantity for line in lines),
            stock_changes=changes,
        )
