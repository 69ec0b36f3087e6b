"""purge_carts never removes a cart that a page has open on any node: it asks the running
servers' trackers, joining the cluster as a short-lived observer."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.cluster.faults import Cluster, open_staff
from tests.daphne_server import manage
from tests.live_clients import Visitor

pytestmark = pytest.mark.cluster

SETUP = """
import json
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from shop.models import Cart
old = timezone.now() - timedelta(days=60)
Cart.objects.filter(pk={online!r}).update(updated_at=old)
offline = Cart.objects.create()
users = Cart.objects.create(user=get_user_model().objects.create_user("ann"))
Cart.objects.filter(pk__in=[offline.pk, users.pk]).update(updated_at=old)
print(json.dumps([str(offline.pk), str(users.pk)]))
"""
CARTS = (
    "import json; from shop.models import Cart; "
    "print(json.dumps(sorted(str(pk) for pk in Cart.objects.values_list('pk', flat=True))))"
)


async def test_an_online_cart_is_kept_however_old(fault_cluster: Cluster):
    a, b = fault_cluster.node("a"), fault_cluster.node("b")
    env = a.env
    shopper = Visitor(a.url)
    await asyncio.to_thread(shopper.get, "/")
    item = (await asyncio.to_thread(shopper.item_ids))[0]
    tab = await shopper.open_tab(b, "/")  # open on B; the command may ask either
    await tab.request({"type": "add_item", "item_id": item})
    online = tab.cart_id
    result = await asyncio.to_thread(manage, "shell", "-c", SETUP.format(online=online), env=env)
    offline, users = json.loads(result.stdout.splitlines()[-1])

    async def purge() -> str:
        result = await asyncio.to_thread(manage, "purge_carts", "--older-than", "30", env=env)
        return result.stdout

    async def carts() -> list[str]:
        result = await asyncio.to_thread(manage, "shell", "-c", CARTS, env=env)
        return json.loads(result.stdout.splitlines()[-1])

    assert "purged 1 abandoned cart(s)" in await purge()
    assert await carts() == sorted([online, users])

    # Once its page is closed (the staff view shows nobody), it is abandoned too.
    _, view = await open_staff(a)
    await view.until(lambda v: v.stats["shoppers"] == 1, 10, "the shopper")
    await tab.close()
    await view.until(lambda v: v.stats["shoppers"] == 0, 10, "nobody")
    assert "purged 1 abandoned cart(s)" in await purge()
    assert await carts() == [users]
    assert offline not in await carts()
    await view.close()
