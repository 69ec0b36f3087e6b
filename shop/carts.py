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
from decimal import Decimal
from typing import Any, TypedDict

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from shop.models import Cart, CartItem, Item, Product
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


def _bump_revision(cart: Cart) -> None:
    """Count one more change of a cart locked by this transaction (so `cart.revision`, read
    under the lock, stays right without reading it back)."""
    now = timezone.now()
    Cart.objects.filter(pk=cart.pk).update(revision=F("revision") + 1, updated_at=now)
    cart.revision += 1
    cart.updated_at = now


# -- add_item and remove_item, in SQL -------------------------------------------------------
#
# Every add_item and remove_item of every shopper socket runs these statements, so they are
# written once as SQL (through Django's connection, for SQLite and PostgreSQL alike) rather
# than compiled from querysets on every call: the compilation cost several times more CPU
# than the database's own work (bench/README.md, issue 12). The cart's lock is taken as
# before: SQLite's write lock at BEGIN (transaction_mode IMMEDIATE, shop/settings.py), on
# PostgreSQL the row lock of the first statement, an UPDATE of the cart's row, under which
# every change of one cart (and its checkout, select_for_update) serialises.

_TABLES = {
    "cart": Cart._meta.db_table,
    "line": CartItem._meta.db_table,
    "item": Item._meta.db_table,
    "product": Product._meta.db_table,
}
# The cart's row: its revision counts one more change and the row is locked until the end
# of the transaction; its owner comes back to be checked.
_BUMP_SQL = (
    'UPDATE "{cart}" SET "revision" = "revision" + 1, "updated_at" = %s WHERE "id" = %s '
    'RETURNING "revision", "user_id"'
).format(**_TABLES)
# A cart's first change makes its row; a concurrent first change may have made it already.
_CREATE_SQL = (
    'INSERT INTO "{cart}" ("id", "user_id", "revision", "created_at", "updated_at") '
    'VALUES (%s, %s, 0, %s, %s) ON CONFLICT ("id") DO NOTHING'
).format(**_TABLES)
_LINE_COLUMNS = (
    'i."id", i."size", i."stock", p."brand", p."name", p."price", p."released" '
    'FROM "{item}" i JOIN "{product}" p ON p."id" = i."product_id"'
).format(**_TABLES)
_LINES_SQL = (
    'SELECT l."id", l."quantity", {columns} JOIN "{line}" l ON l."item_id" = i."id" '
    'WHERE l."cart_id" = %s ORDER BY l."id"'
).format(columns=_LINE_COLUMNS, **_TABLES)
_ITEM_SQL = f'SELECT NULL, 0, {_LINE_COLUMNS} WHERE i."id" = %s'
_ADD_LINE_SQL = 'INSERT INTO "{line}" ("cart_id", "item_id", "quantity") VALUES (%s, %s, 1)'.format(
    **_TABLES
)
_MORE_SQL = 'UPDATE "{line}" SET "quantity" = "quantity" + 1 WHERE "id" = %s'.format(**_TABLES)
_LESS_SQL = 'UPDATE "{line}" SET "quantity" = "quantity" - 1 WHERE "id" = %s'.format(**_TABLES)
_DELETE_LINE_SQL = 'DELETE FROM "{line}" WHERE "id" = %s'.format(**_TABLES)

_CART_ID = Cart._meta.get_field("id")
_UPDATED_AT = Cart._meta.get_field("updated_at")
_CENTS = Decimal(1).scaleb(-Product._meta.get_field("price").decimal_places)


def _price(value: Any) -> str:
    """A price as read by SQL, as Django would show it: a Decimal with the field's places
    (SQLite hands back an int or a float, PostgreSQL a Decimal)."""
    return str(Decimal(str(value)).quantize(_CENTS))


@dataclass(slots=True)
class _Line:
    """A cart line as an action reads it (id None: not in the cart yet)."""

    id: int | None
    quantity: int
    item_id: int
    size: str
    stock: int
    brand: str
    product: str
    price: Any
    released: bool

    @property
    def label(self) -> str:
        return f"{self.brand} {self.product}"  # (str of the Product)

    def wire(self) -> CartLine:
        return {
            "item_id": self.item_id,
            "product": self.product,
            "size": self.size,
            "quantity": self.quantity,
            "price": _price(self.price),
            "available": bool(self.released) and self.stock >= self.quantity,
        }


def _cart_key(cart_id: str) -> tuple[uuid.UUID, Any]:
    """The cart's id and its database value; CartError if it is not a cart id."""
    pk = parse_cart_id(cart_id)
    if pk is None:
        raise CartError("no_cart", "This is not a cart id.")
    return pk, _CART_ID.get_db_prep_value(pk, connection)


def _change_cart(cursor: Any, key: Any, owner: int | None, *, create: bool) -> int | None:
    """Lock the cart's row and count one more change; its new revision, or None if it has
    no row (with `create`, it gets one now, owned by `owner`). NotYourCart if the row
    belongs to another owner (the transaction then rolls back, revision included)."""
    now = _UPDATED_AT.get_db_prep_value(timezone.now(), connection)
    cursor.execute(_BUMP_SQL, [now, key])
    row = cursor.fetchone()
    if row is None and create:
        cursor.execute(_CREATE_SQL, [key, owner, now, now])
        cursor.execute(_BUMP_SQL, [now, key])
        row = cursor.fetchone()
    if row is None:
        return None
    revision, user_id = row
    if user_id != owner:
        raise NotYourCart()
    return int(revision)


def _lines(cursor: Any, key: Any) -> list[_Line]:
    """The cart's lines with their items and products, in line order."""
    cursor.execute(_LINES_SQL, [key])
    return [_Line(*row) for row in cursor.fetchall()]


def _new_line(cursor: Any, item_id: int) -> _Line | None:
    """A line of quantity 0 for the item, if it exists."""
    if not 0 < item_id <= MAX_ITEM_ID:
        return None
    cursor.execute(_ITEM_SQL, [item_id])
    row = cursor.fetchone()
    return _Line(*row) if row is not None else None


def _line_snapshot(pk: uuid.UUID, revision: int, lines: list[_Line]) -> CartSnapshot:
    return {
        "id": str(pk),
        "revision": revision,
        "items": [line.wire() for line in lines],
        "total_quantity": sum(line.quantity for line in lines),
    }


def _out_of_stock(line: _Line) -> CartError:
    if line.stock == 0:
        return CartError("out_of_stock", f"{line.label} in size {line.size} is sold out.")
    return CartError(
        "out_of_stock",
        f"Only {line.stock} of {line.label} in size {line.size} left, "
        f"and your cart already holds {line.quantity}.",
    )


def add_item(cart_id: str, item_id: int, owner: int | None = None) -> CartSnapshot:
    """Add one unit of a released item, never more than its stock. The first change of a
    cart creates its row, owned by `owner`.

    Three or four statements: lock the cart and bump its revision, read its lines (with
    their items), the item only if it is not among them, and write the line; the snapshot
    is built from what was read."""
    pk, key = _cart_key(cart_id)
    with transaction.atomic(), connection.cursor() as cursor:
        revision = _change_cart(cursor, key, owner, create=True)
        assert revision is not None  # (created if missing)
        lines = _lines(cursor, key)
        line = next((line for line in lines if line.item_id == item_id), None)
        new = line is None
        if line is None:
            line = _new_line(cursor, item_id)
        if line is None or not line.released:
            raise CartError("not_found", f"There is no item {item_id} for sale.")
        if line.quantity + 1 > line.stock:
            raise _out_of_stock(line)
        if new:
            cursor.execute(_ADD_LINE_SQL, [key, item_id])
            lines.append(line)
        else:
            cursor.execute(_MORE_SQL, [line.id])
        line.quantity += 1
        return _line_snapshot(pk, revision, lines)


def remove_item(cart_id: str, item_id: int, owner: int | None = None) -> CartSnapshot:
    """Remove one unit; the line goes when its quantity reaches zero. Three statements."""
    pk, key = _cart_key(cart_id)
    with transaction.atomic(), connection.cursor() as cursor:
        revision = _change_cart(cursor, key, owner, create=False)
        lines = _lines(cursor, key) if revision is not None else []
        line = next((line for line in lines if line.item_id == item_id), None)
        if revision is None or line is None:
            raise CartError("not_found", f"Item {item_id} is not in your cart.")
        if line.quantity <= 1:
            cursor.execute(_DELETE_LINE_SQL, [line.id])
            lines.remove(line)
        else:
            cursor.execute(_LESS_SQL, [line.id])
            line.quantity -= 1
        return _line_snapshot(pk, revision, lines)


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
