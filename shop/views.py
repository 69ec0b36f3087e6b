"""Storefront pages. Every page view names the shopper's cart (shop.identity) and writes
nothing for a visitor without cookies."""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import messages
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from shop import carts, identity, routing
from shop.broadcast import publish_cart, publish_stock
from shop.models import Cart, CartItem, Item, Product


def _render(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    cart: tuple[str, Cart | None] | None = None,
    status: int = 200,
) -> HttpResponse:
    """Render a storefront page with the shopper's cart for the header widget, which also
    tells the page's script where the shopper socket is."""
    cart_id, row = cart or identity.page_cart(request)
    snapshot = carts.snapshot(row) if row is not None else carts.empty_snapshot(cart_id)
    context = {**context, "cart": snapshot, "socket_path": routing.SOCKET_PATH}
    response = render(request, template, context, status=status)
    identity.remember_cart(request, response)
    return response


def _released_products() -> QuerySet[Product]:
    return Product.objects.filter(released=True).prefetch_related(
        Prefetch("items", queryset=Item.objects.order_by("position", "id"))
    )


def index(request: HttpRequest) -> HttpResponse:
    return _render(request, "shop/index.html", {"products": _released_products()})


def product_detail(request: HttpRequest, slug: str) -> HttpResponse:
    product = get_object_or_404(_released_products(), slug=slug)
    return _render(request, "shop/product.html", {"product": product})


@dataclass(frozen=True)
class CheckoutLine:
    line: CartItem
    available: bool

    @property
    def subtotal(self) -> Decimal:
        return self.line.item.product.price * self.line.quantity


@require_http_methods(["GET", "POST"])
def checkout(request: HttpRequest) -> HttpResponse:
    cart_id, cart = identity.page_cart(request)
    status = 200
    if request.method == "POST":
        try:
            purchase = carts.checkout(cart_id, request.user.pk)
        except carts.CartError as error:
            messages.error(request, error.message)
            status = 409
        else:
            # Every open tab of this cart empties; every storefront page sees the new levels.
            async_to_sync(publish_cart)(purchase.cart)
            publish_stock(purchase.stock_changes)
            units = "item" if purchase.quantity == 1 else "items"
            messages.success(
                request, f"Thank you! Your order of {purchase.quantity} {units} is placed."
            )
            return redirect("shop:checkout")
    lines = [
        CheckoutLine(line, carts.line_available(line))
        for line in (carts.cart_lines(cart) if cart is not None else [])
    ]
    context = {
        "lines": lines,
        "total": sum((line.subtotal for line in lines), Decimal("0.00")),
        "signature": ",".join(f"{x.line.item_id}:{x.line.quantity}" for x in lines),
    }
    return _render(request, "shop/checkout.html", context, cart=(cart_id, cart), status=status)


def login_locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """What django-axes answers a login attempt of a locked-out username and address."""
    context = {
        "failure_limit": settings.LOGIN_FAILURE_LIMIT,
        "minutes": settings.LOGIN_LOCKOUT_MINUTES,
    }
    return render(request, "registration/locked_out.html", context, status=429)
