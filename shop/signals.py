"""Stock pushes for any saved Item (admin edits included) and cart linking on login."""

from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth.signals import user_logged_in
from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from django.http import HttpRequest

from shop.broadcast import publish_stock
from shop.carts import CART_SESSION_KEY, StockChange, link_cart, parse_cart_id
from shop.models import Cart, Item
from shop.stock import stock_level


@receiver(pre_save, sender=Item)
def remember_stock_level(sender: type[Item], instance: Item, **kwargs: Any) -> None:
    # Read from the database: the instance may be stale or hold an F() expression.
    stock = Item.objects.filter(pk=instance.pk).values_list("stock", flat=True).first()
    instance._stock_level_before = None if stock is None else stock_level(stock)


@receiver(post_save, sender=Item)
def push_stock_level(sender: type[Item], instance: Item, created: bool, **kwargs: Any) -> None:
    before = getattr(instance, "_stock_level_before", None)
    if created or before is None:
        return  # a new size is not on any open page yet

    def push() -> None:
        stock = Item.objects.filter(pk=instance.pk).values_list("stock", flat=True).first()
        if stock is not None and stock_level(stock) != before:
            async_to_sync(publish_stock)([StockChange(instance.pk, stock_level(stock).value)])

    transaction.on_commit(push)


@receiver(user_logged_in)
def keep_cart_on_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """Keep the anonymous session's cart and link it to the user; without one, reopen the
    user's most recent cart so nothing added earlier is lost."""
    if request is None or not hasattr(request, "session"):
        return
    pk = parse_cart_id(request.session.get(CART_SESSION_KEY))
    cart = Cart.objects.filter(pk=pk).first() if pk else None
    if cart is not None and cart.user_id in (None, user.pk):
        link_cart(cart, user)
        return
    latest = Cart.objects.filter(user=user).order_by("-updated_at").first()
    if latest is not None:
        request.session[CART_SESSION_KEY] = str(latest.id)
    else:
        request.session.pop(CART_SESSION_KEY, None)
