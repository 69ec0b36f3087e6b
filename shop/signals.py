"""A page view's database connections closed at its end; stock pushes for any saved Item
(admin edits included); the page buckets' released products forgotten when a product
changes; cart linking on login, and the end of the sockets of a login state on login and
logout."""

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.core.signals import request_finished
from django.db import connections, transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver
from django.http import HttpRequest

from shop.broadcast import publish_stock
from shop.carts import (
    CART_SESSION_KEY,
    StockChange,
    claim_cart,
    latest_cart_id,
    session_cart_id,
)
from shop.identity import cart_id_from_cookie
from shop.login_state import anonymous_cart_group, end_login_state, session_group
from shop.models import Item, Product
from shop.pages import forget_released
from shop.stock import stock_level


@receiver(pre_save, sender=Item)
def remember_stock_level(sender: type[Item], instance: Item, **kwargs: Any) -> None:
    # Read from the database: the instance may be stale or hold an F() expression.
    stock = Item.objects.filter(pk=instance.pk).values_list("stock", flat=True).first()
    level = None if stock is None else stock_level(stock)
    instance._stock_level_before = level  # type: ignore[attr-defined]  # for push_stock_level


@receiver(post_save, sender=Item)
def push_stock_level(sender: type[Item], instance: Item, created: bool, **kwargs: Any) -> None:
    before = getattr(instance, "_stock_level_before", None)
    if created or before is None:
        return  # a new size is not on any open page yet

    def push() -> None:
        stock = Item.objects.filter(pk=instance.pk).values_list("stock", flat=True).first()
        if stock is not None and stock_level(stock) != before:
            publish_stock([StockChange(instance.pk, stock_level(stock).value)])

    transaction.on_commit(push)


@receiver(request_finished)
def close_request_connections(sender: Any, **kwargs: Any) -> None:
    """A page view's database connections end with it. Connections are kept for the sockets'
    one thread (settings: CONN_MAX_AGE), but Django's ASGI handler runs each request in a
    thread of its own, where a kept connection would never be used again and would stay
    open until the garbage collector found it (an open file, or a PostgreSQL backend)."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:  # (a test's transaction wraps its requests)
            connection.close()


@receiver([post_save, post_delete], sender=Product)
def forget_released_products(sender: type[Product], **kwargs: Any) -> None:
    forget_released()  # shop.pages: a socket's page bucket reads them again


@receiver(user_logged_in)
def keep_cart_on_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """Keep the cart the browser had (its session's, else its cart cookie's) and link it to
    the user; without one they may take, reopen the user's most recent cart, so nothing
    added earlier is lost (else a fresh id). Every socket opened before ends (its session's
    and its anonymous cart's: shop.login_state)."""
    if request is None or not hasattr(request, "session"):
        return
    before = [
        cart_id
        for cart_id in (
            session_cart_id(request.session),
            cart_id_from_cookie(request.COOKIES.get(settings.CART_COOKIE_NAME)),
        )
        if cart_id is not None
    ]
    kept = next((cart_id for cart_id in before if claim_cart(cart_id, user)), None)
    request.session[CART_SESSION_KEY] = kept or latest_cart_id(user) or str(uuid.uuid4())
    ended = [anonymous_cart_group(cart_id) for cart_id in before]
    if old_key := request.COOKIES.get(settings.SESSION_COOKIE_NAME):
        ended.append(session_group(old_key))
    end_login_state(request, ended)


@receiver(user_logged_out)
def end_sockets_on_logout(
    sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any
) -> None:
    """Every socket of the session ends (shop.login_state)."""
    if request is not None and (key := request.COOKIES.get(settings.SESSION_COOKIE_NAME)):
        end_login_state(request, [session_group(key)])
