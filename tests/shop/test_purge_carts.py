"""manage.py purge_carts: which carts go, which stay (the online ones: tests/cluster)."""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

from shop.models import Cart, CartItem

pytestmark = pytest.mark.django_db


def aged(days: float, **fields) -> Cart:
    cart = Cart.objects.create(**fields)
    Cart.objects.filter(pk=cart.pk).update(updated_at=timezone.now() - timedelta(days=days))
    return cart


def purge(*args: str) -> str:
    out = StringIO()
    call_command("purge_carts", *args, stdout=out)
    return out.getvalue()


def test_only_old_anonymous_carts_go(catalogue):
    user = get_user_model().objects.create_user("ann")
    old = aged(31)
    old_with_items = aged(40)
    CartItem.objects.create(cart=old_with_items, item=catalogue["plenty"], quantity=2)
    recent = aged(29)
    users = aged(400, user=user)
    assert "would purge 2 abandoned cart(s)" in purge(
        "--older-than", "30", "--offline", "--dry-run"
    )
    assert Cart.objects.count() == 4
    assert "purged 2 abandoned cart(s) older than 30 day(s)" in purge(
        "--older-than", "30", "--offline"
    )
    assert set(Cart.objects.values_list("pk", flat=True)) == {recent.pk, users.pk}
    assert not CartItem.objects.filter(cart_id=old_with_items.pk).exists()
    assert not Cart.objects.filter(pk=old.pk).exists()


def test_without_the_servers_tracker_nothing_is_purged(catalogue):
    """Without REDIS_URL no other process can see which carts are open: it refuses."""
    aged(31)
    with pytest.raises(CommandError, match="REDIS_URL is not set"):
        purge("--older-than", "30")
    assert Cart.objects.count() == 1


@pytest.mark.parametrize("days", ["0", "-3"])
def test_the_age_must_be_at_least_a_day(days):
    with pytest.raises(CommandError, match="at least 1 day"):
        purge("--older-than", days, "--offline")
