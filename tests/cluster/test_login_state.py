"""The planted-cookie attack on two real nodes: sockets follow the login state of their
session on every node (shop.login_state), for shoppers and staff.

An attacker visits the shop and plants its cookies in the victim's browser (a sibling host,
another port of the host, plain HTTP). The victim shops with them and logs in on node A;
the attacker's socket on node B must close, and no new socket of the attacker may open the
victim's cart. Likewise a logout on A closes the session's shopper and staff sockets on B,
and a staff token fetched before the logout opens nothing after it.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.exceptions import InvalidStatus

from tests.cluster.faults import STAFF_PASSWORD, STAFF_USER, Cluster
from tests.live_clients import Tab, Visitor, _Reader

pytestmark = pytest.mark.cluster

LOGIN_CHANGED_CLOSE_CODE = 4002  # shop.login_state (not imported: the contract is the number)
# A login or logout on A reaches a socket on B through Redis at once; generous for a loaded
# machine, and the wait ends as soon as the socket closes.
CLOSE_WITHIN = 10.0


async def closed_with(socket: _Reader, within: float = CLOSE_WITHIN) -> int | None:
    """Take messages until the server closes the socket; its close code."""
    deadline = time.monotonic() + within
    while True:
        try:
            await socket.next(max(0.0, deadline - time.monotonic()))
        except ConnectionError:
            return socket.ws.close_code
        except TimeoutError:
            raise AssertionError(f"the socket is still open after {within} s") from None


async def opens_nothing(visitor: Visitor, node, page: str = "/") -> None:
    """A new shopper socket with the visitor's cookies gets no cart."""
    try:
        tab = await visitor.open_tab(node, page, within=5)
    except (AssertionError, ConnectionError):
        return  # refused: closed before (or instead of) any cart
    await tab.close()
    raise AssertionError(f"the socket opened cart {tab.cart_id}")


async def test_a_planted_cookie_loses_its_socket_on_another_node_when_the_victim_logs_in(
    fault_cluster: Cluster,
):
    a, b = fault_cluster.node("a"), fault_cluster.node("b")
    attacker = Visitor(a.url)
    await asyncio.to_thread(attacker.get, "/")
    item = (await asyncio.to_thread(attacker.item_ids))[0]
    victim = Visitor(a.url)
    for cookie in attacker.jar:  # planted
        victim.jar.set_cookie(cookie)

    spy = await attacker.open_tab(b, "/")
    victims_tab = await victim.open_tab(a, "/checkout/")
    await victims_tab.request({"type": "add_item", "item_id": item})
    await spy.until_items({str(item): 1})  # anonymous: the planted cart is shared

    await asyncio.to_thread(victim.login, STAFF_USER, STAFF_PASSWORD)
    assert await closed_with(spy) == LOGIN_CHANGED_CLOSE_CODE
    assert await closed_with(victims_tab) == LOGIN_CHANGED_CLOSE_CODE  # its page reloads

    await opens_nothing(attacker, b)
    await opens_nothing(attacker, a)
    # The victim's cart is kept through the login, and theirs alone.
    mine = await victim.open_tab(b, "/")
    assert mine.items == {str(item): 1}
    await mine.request({"type": "add_item", "item_id": item})
    assert mine.items == {str(item): 2}
    await mine.close()


async def test_logout_on_one_node_closes_the_sessions_sockets_on_the_other(
    fault_cluster: Cluster,
):
    a, b = fault_cluster.node("a"), fault_cluster.node("b")
    user = Visitor(a.url)
    await asyncio.to_thread(user.login, STAFF_USER, STAFF_PASSWORD)
    await asyncio.to_thread(user.get, "/")
    tab: Tab = await user.open_tab(b, "/")
    view = await user.open_dashboard(b)
    stale_token = await asyncio.to_thread(user.token, a)  # fetched before the logout
    cookies = list(user.jar)

    await asyncio.to_thread(user.logout)
    assert await closed_with(tab) == LOGIN_CHANGED_CLOSE_CODE
    assert await closed_with(view) == LOGIN_CHANGED_CLOSE_CODE

    # The token and the old session cookie together (a copy of the browser) open nothing.
    copy = Visitor(a.url)
    for cookie in cookies:
        copy.jar.set_cookie(cookie)
    copy.token = lambda node: stale_token  # type: ignore[method-assign]
    with pytest.raises(InvalidStatus) as refused:
        await copy.open_dashboard(b)
    assert refused.value.response.status_code == 403
    await opens_nothing(copy, b)
