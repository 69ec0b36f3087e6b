"""shop.carts' add_item and remove_item (written in SQL) against what the ORM reads back,
and against each other from two threads at once."""

import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connection

from shop import carts
from shop.models import Cart, Item, Product
from tests.shop.conftest import cart_state

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("django_database")]

# Bounded waits for the other thread; never reached when the code is right.
WAIT_SECONDS = 10


@pytest.fixture
def priced(catalogue) -> dict[str, Item]:
    """The catalogue plus released items whose prices have fewer places than the field's."""
    for price, slug in [(Decimal("99.50"), "half"), (Decimal("7"), "whole")]:
        product = Product.objects.create(
            name=f"Boot {slug}", brand="Acme", colour="Red", price=price, slug=slug, released=True
        )
        catalogue[slug] = Item.objects.create(product=product, size="44", stock=3)
    return catalogue


def test_every_snapshot_is_what_the_database_then_holds(priced):
    """After each action, its snapshot equals the cart read afresh through the ORM: lines in
    order, prices with two places, availability, revision, total."""
    cart_id = str(uuid.uuid4())  # no row yet: the first add makes it
    steps = [
        (carts.add_item, "half"),
        (carts.add_item, "whole"),
        (carts.add_item, "half"),
        (carts.add_item, "two_left"),
        (carts.remove_item, "half"),
        (carts.add_item, "plenty"),
        (carts.remove_item, "whole"),
        (carts.remove_item, "two_left"),
    ]
    for revision, (action, name) in enumerate(steps, start=1):
        snapshot = action(cart_id, priced[name].pk)
        assert snapshot == carts.snapshot(Cart.objects.get(pk=cart_id))
        assert snapshot["revision"] == revision
    assert [line["price"] for line in snapshot["items"]] == ["99.50", "120.00"]
    Item.objects.filter(pk=priced["plenty"].pk).update(stock=0)
    snapshot = carts.add_item(cart_id, priced["half"].pk)
    assert [line["available"] for line in snapshot["items"]] == [True, False]


def test_refusals_change_nothing(priced, cart):
    carts.add_item(str(cart.id), priced["two_left"].pk)
    carts.add_item(str(cart.id), priced["two_left"].pk)
    with pytest.raises(carts.CartError) as refused:
        carts.add_item(str(cart.id), priced["two_left"].pk)
    assert refused.value.code == "out_of_stock"
    assert "Only 2 of Acme Test Boot in size 41 left" in refused.value.message
    with pytest.raises(carts.CartError) as refused:
        carts.add_item(str(cart.id), priced["sold_out"].pk)
    assert refused.value.message == "Acme Test Boot in size 40 is sold out."
    for action, item_id in [
        (carts.add_item, priced["unreleased"].pk),
        (carts.add_item, 987654),
        (carts.remove_item, priced["plenty"].pk),
    ]:
        with pytest.raises(carts.CartError) as refused:
            action(str(cart.id), item_id)
        assert refused.value.code == "not_found"
    with pytest.raises(carts.NotYourCart):
        carts.add_item(str(cart.id), priced["plenty"].pk, owner=12345)
    assert cart_state(cart) == (2, [(priced["two_left"].pk, 2)])
    with pytest.raises(carts.CartError) as refused:
        carts.remove_item(str(uuid.uuid4()), priced["plenty"].pk)
    assert refused.value.code == "not_found"
    assert not Cart.objects.exclude(pk=cart.pk).exists()  # no row made by a removal


def at_once(*actions) -> list[str]:
    """Run each action in a thread of its own (a connection each), started together:
    "ok" or the error code of each, in order."""
    start = threading.Barrier(len(actions))
    outcomes = ["unfinished"] * len(actions)

    def run(index: int) -> None:
        try:
            start.wait(WAIT_SECONDS)
            actions[index]()
            outcomes[index] = "ok"
        except carts.CartError as error:
            outcomes[index] = error.code
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    return outcomes


@pytest.mark.parametrize("round_", range(3))
def test_two_first_changes_of_one_cart_at_once_both_count(priced, round_):
    cart_id = str(uuid.uuid4())
    item = priced["plenty"]
    assert at_once(*[lambda: carts.add_item(cart_id, item.pk)] * 2) == ["ok", "ok"]
    assert cart_state(Cart.objects.get(pk=cart_id)) == (2, [(item.pk, 2)])


@pytest.mark.parametrize("round_", range(3))
def test_two_tabs_adding_the_last_unit_at_once_get_one(priced, cart, round_):
    """Changes of one cart serialise on its lock: of two adds of an item with one unit
    left, one is refused, whichever comes second."""
    item = priced["plenty"]
    Item.objects.filter(pk=item.pk).update(stock=1)
    outcomes = at_once(*[lambda: carts.add_item(str(cart.id), item.pk)] * 2)
    assert sorted(outcomes) == ["ok", "out_of_stock"]
    assert cart_state(cart) == (1, [(item.pk, 1)])
