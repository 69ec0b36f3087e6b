"""Stock levels and the demo catalogue."""

import pytest
from django.core.management import call_command

from shop.models import Item, Product
from shop.stock import stock_level


@pytest.mark.parametrize(
    ("stock", "level"),
    [
        (0, "out"),
        (1, "low"),
        (3, "low"),
        (4, "medium"),
        (10, "medium"),
        (11, "high"),
        (500, "high"),
    ],
)
def test_stock_levels(stock, level):
    assert stock_level(stock) == level


def catalogue_rows():
    return sorted(Item.objects.values_list("product__slug", "size", "stock", "product__released"))


@pytest.mark.django_db
@pytest.mark.usefixtures("django_database")  # on SQLite and on PostgreSQL
def test_seed_catalog_is_idempotent_and_keeps_changed_stock():
    call_command("seed_catalog")
    first = catalogue_rows()
    assert 7 <= Product.objects.count() <= 10
    assert Product.objects.filter(released=False).count() == 1
    levels = {stock_level(stock) for _, _, stock, _ in first}
    assert levels == {"out", "low", "medium", "high"}
    assert all(Item.objects.filter(product=p).count() >= 3 for p in Product.objects.all())
    call_command("seed_catalog")
    assert catalogue_rows() == first
    item = Item.objects.filter(stock__gt=0).first()
    Item.objects.filter(pk=item.pk).update(stock=item.stock - 1)
    call_command("seed_catalog")
    assert Item.objects.get(pk=item.pk).stock == item.stock - 1
