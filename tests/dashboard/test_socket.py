"""The staff socket: the handshake's auth matrix, the feed, and demoted staff."""

import json
import time
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core import signing
from django.test import Client

from dashboard import consumers
from dashboard.tokens import MAX_AGE, SALT, issue_token
from shop.login_state import LOGIN_CHANGED_CLOSE_CODE, session_digest
from shop.models import Item, Product

from .conftest import login_session, session_cookie, staff_login, staff_socket, staff_socket_of
from .support import apply_stats_diff, row, settled

pytestmark = pytest.mark.django_db(transaction=True)


def signed_ago(seconds: int, payload: dict) -> str:
    class PastSigner(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - seconds)

    return PastSigner(salt=SALT).sign_object(payload)


async def assert_refused(communicator) -> None:
    connected, _ = await communicator.connect()
    assert connected is False  # closed before accept: daphne answers the handshake with 403
    await communicator.disconnect()


async def test_refused_without_token(hub):
    await assert_refused(staff_socket(None))


async def test_refused_with_empty_token(hub):
    await assert_refused(staff_socket(""))


async def test_refused_with_garbage_token(hub):
    await assert_refused(staff_socket("garbage"))


async def staff_session(user) -> tuple[str, str]:
    """(session key, its Cookie header) of `user` logged in."""
    key = await database_sync_to_async(login_session)(user)
    return key, session_cookie(key)


async def test_refused_with_tampered_token(hub, staff, shopper):
    key, cookie = await staff_session(staff)
    genuine = issue_token(shopper, key)  # "payload:timestamp:signature"
    payload = json.dumps(
        {"uid": staff.pk, "username": "staffer", "sid": session_digest(key)},
        separators=(",", ":"),
    )
    tampered = signing.b64_encode(payload.encode()).decode() + ":" + genuine.split(":", 1)[1]
    await assert_refused(staff_socket(tampered, cookie=cookie))


async def test_refused_with_token_signed_under_another_salt(hub, staff):
    key, cookie = await staff_session(staff)
    token = signing.dumps({"uid": staff.pk, "username": "staffer", "sid": session_digest(key)})
    await assert_refused(staff_socket(token, cookie=cookie))


async def test_refused_with_expired_token(hub, staff):
    key, cookie = await staff_session(staff)
    payload = {"uid": staff.pk, "username": "staffer", "sid": session_digest(key)}
    await assert_refused(staff_socket(signed_ago(MAX_AGE + 2, payload), cookie=cookie))


async def test_refused_for_anonymous_even_with_a_staff_session_cookie(hub, staff):
    # The cookie alone proves nothing: any page on an allowed origin could send it.
    _, cookie = await staff_session(staff)
    await assert_refused(staff_socket(None, cookie=cookie))


async def test_refused_with_the_token_alone(hub, staff):
    """A token copied out of a URL (a proxy's log, say) opens nothing without the cookie of
    the session it was issued in, not even with another session of the same user."""
    token, _ = await database_sync_to_async(staff_login)(staff)
    await assert_refused(staff_socket(token))
    _, other = await staff_session(staff)
    await assert_refused(staff_socket(token, cookie=other))


async def test_a_token_issued_before_logout_is_refused_after_it(hub, staff):
    key, cookie = await staff_session(staff)
    token = issue_token(staff, key)
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = key
    await database_sync_to_async(client.post)("/accounts/logout/")
    await assert_refused(staff_socket(token, cookie=cookie))


async def test_refused_for_non_staff_user(hub, shopper):
    await assert_refused(await staff_socket_of(shopper))


async def test_refused_for_inactive_staff(hub, django_user_model):
    user = await database_sync_to_async(django_user_model.objects.create_user)(
        "retired", is_staff=True, is_active=False
    )
    await assert_refused(await staff_socket_of(user))


async def test_refused_for_deleted_user(hub, staff):
    communicator = await staff_socket_of(staff)
    await database_sync_to_async(staff.delete)()
    await assert_refused(communicator)


async def test_refused_from_a_disallowed_origin(hub, staff):
    await assert_refused(await staff_socket_of(staff, origin=b"http://evil.example"))


async def test_refused_without_origin(hub, staff):
    await assert_refused(await staff_socket_of(staff, origin=None))


async def test_staff_token_is_accepted_and_gets_a_snapshot(hub, staff):
    hub.set_replicas({"node-a": "up", "node-b": "down"})
    hub.node = "node-a"
    await settled(hub)
    communicator = await staff_socket_of(staff)
    connected, _ = await communicator.connect()
    assert connected
    snapshot = await communicator.receive_json_from()
    assert snapshot["type"] == "snapshot"
    assert snapshot["stats"] == {
        "shoppers": 0,
        "pages": 0,
        "items": {},
        "pages_by_path": {},
        "carts": {},
    }
    assert snapshot["replicas"] == {"node-a": "up", "node-b": "down"}
    assert snapshot["node"] == "node-a"
    assert snapshot["catalog"] == {}
    assert isinstance(snapshot["t"], float)
    assert snapshot["history"]
    await communicator.disconnect()
    assert hub.subscriber_count == 0


async def connected_staff(user):
    communicator = await staff_socket_of(user)
    connected, _ = await communicator.connect()
    assert connected
    snapshot = await communicator.receive_json_from()
    assert snapshot["type"] == "snapshot"
    return communicator, snapshot


def make_item(size: str = "42", stock: int = 7) -> Item:
    product, _ = Product.objects.get_or_create(
        slug="trail-boot",
        defaults={
            "name": "Trail Boot",
            "brand": "Acme",
            "colour": "olive",
            "price": Decimal("120.00"),
            "released": True,
        },
    )
    return Item.objects.create(product=product, size=size, stock=stock)


async def test_diffs_carry_the_catalogue_of_the_items_they_mention(hub, staff):
    item = await database_sync_to_async(make_item)(stock=7)
    communicator, _ = await connected_staff(staff)
    hub.feed({"carts": ([row("r1", "cart-a", items={item.pk: 2}, page="/p/")], [])})
    diff = await communicator.receive_json_from()
    assert diff["type"] == "diff"
    assert diff["stats"]["items"] == {str(item.pk): 2}
    assert diff["stats"]["shoppers"] == 1
    assert diff["catalog"] == {
        str(item.pk): {"product": "Acme Trail Boot", "size": "42", "stock": 7, "level": "medium"}
    }
    # A later snapshot describes what is in carts by then.
    await settled(hub)
    late, snapshot = await connected_staff(staff)
    assert snapshot["stats"]["items"] == {str(item.pk): 2}
    assert snapshot["catalog"][str(item.pk)]["stock"] == 7
    await late.disconnect()
    await communicator.disconnect()


async def test_a_missing_item_is_left_out_of_the_catalogue(hub, staff):
    communicator, _ = await connected_staff(staff)
    hub.feed({"carts": ([row("r1", "cart-a", items={"999999": 1})], [])})
    diff = await communicator.receive_json_from()
    assert diff["stats"]["items"] == {"999999": 1}
    assert diff["catalog"] == {}
    await communicator.disconnect()


async def test_stock_level_changes_are_forwarded_with_the_exact_stock(hub, staff):
    item = await database_sync_to_async(make_item)(stock=7)
    communicator, _ = await connected_staff(staff)

    def sell_five() -> None:  # medium -> low: the shop pushes the new level
        item.stock = 2
        item.save()

    await database_sync_to_async(sell_five)()
    message = await communicator.receive_json_from()
    assert message == {
        "type": "stock",
        "item_id": str(item.pk),
        "product": "Acme Trail Boot",
        "size": "42",
        "stock": 2,
        "level": "low",
    }
    await communicator.disconnect()


async def test_other_topics_and_disconnected_sockets_get_nothing(hub, staff):
    communicator, _ = await connected_staff(staff)
    hub.feed({"rooms": ([row("r1", "x")], [])})
    assert await communicator.receive_nothing(0.1)
    await communicator.disconnect()
    assert hub.subscriber_count == 0


@pytest.mark.parametrize("change", ["demoted", "deactivated", "deleted"])
async def test_open_socket_closes_when_its_user_stops_being_staff(hub, staff, monkeypatch, change):
    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.05)
    communicator, _ = await connected_staff(staff)
    assert await communicator.receive_nothing(0.2)  # re-checked a few times, still staff
    if change == "demoted":
        await database_sync_to_async(type(staff).objects.filter(pk=staff.pk).update)(is_staff=False)
    elif change == "deactivated":
        await database_sync_to_async(type(staff).objects.filter(pk=staff.pk).update)(
            is_active=False
        )
    else:
        await database_sync_to_async(staff.delete)()
    closed = await communicator.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": consumers.NOT_STAFF_CLOSE_CODE}
    await communicator.disconnect()


async def test_a_failing_feed_closes_the_socket_with_a_code_daphne_accepts(hub, staff, monkeypatch):
    """The page must learn that its feed stopped (it then reconnects). Under daphne an
    application close code must be 1000 or 3000-4999 (autobahn raises on others, such as
    1011, and the socket stays open); the communicator here does not check codes."""
    communicator, _ = await connected_staff(staff)

    def broken(ids):
        raise RuntimeError("the catalogue read failed")

    monkeypatch.setattr(consumers, "describe_items", broken)
    hub.feed({"carts": ([row("r1", "cart-a", items={"7": 1})], [])})
    closed = await communicator.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": consumers.FEED_FAILED_CLOSE_CODE}
    assert closed["code"] == 1000 or 3000 <= closed["code"] <= 4999
    await communicator.disconnect()
    assert hub.subscriber_count == 0


async def test_logout_closes_the_sessions_staff_sockets_and_only_those(hub, staff):
    key, cookie = await staff_session(staff)
    communicator = staff_socket(issue_token(staff, key), cookie=cookie)
    assert (await communicator.connect())[0]
    assert (await communicator.receive_json_from())["type"] == "snapshot"
    other, _ = await connected_staff(staff)  # the same user in another browser
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = key
    await database_sync_to_async(client.post)("/accounts/logout/")
    closed = await communicator.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": LOGIN_CHANGED_CLOSE_CODE}
    assert await other.receive_nothing(0.2)
    await communicator.disconnect()
    await other.disconnect()
    assert hub.subscriber_count == 0


async def test_an_open_socket_whose_session_ended_unheard_closes_at_the_recheck(
    hub, staff, monkeypatch
):
    """The logout message may be lost (the channel layer delivers at most once)."""
    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.05)
    key, cookie = await staff_session(staff)
    communicator = staff_socket(issue_token(staff, key), cookie=cookie)
    assert (await communicator.connect())[0]
    assert (await communicator.receive_json_from())["type"] == "snapshot"
    await database_sync_to_async(Session.objects.filter(session_key=key).delete)()
    closed = await communicator.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": consumers.NOT_STAFF_CLOSE_CODE}


def test_recheck_interval_closes_demoted_sockets_within_a_minute():
    assert consumers.RECHECK_SECONDS <= 30


def test_large_messages_are_split_into_frames_that_apply_to_the_same_result():
    stats = {
        "shoppers": 5,
        "pages": 7,
        "items": {"1": 3},
        "pages_by_path": {f"/p{i}/": 1 for i in range(4)},
        "carts": {f"cart-{i}": {"pages": 1} for i in range(5)},
    }
    snapshot = {"type": "snapshot", "stats": stats, "history": [[1, 2, 3]], "t": 9.0}
    parts = consumers.frames(snapshot, size=3)
    assert [p["type"] for p in parts] == ["snapshot", "diff", "diff", "diff"]
    assert all(sum(len(v) for v in p["stats"].values() if isinstance(v, dict)) <= 3 for p in parts)
    assert parts[0]["history"] == [[1, 2, 3]] and parts[0]["stats"]["shoppers"] == 5
    rebuilt = parts[0]["stats"]
    for part in parts[1:]:
        apply_stats_diff(rebuilt, part["stats"])
    assert rebuilt == stats

    diff = {"type": "diff", "stats": {"pages": 2, "carts": {"a": None, "b": {"pages": 1}}}}
    assert consumers.frames(diff, size=3) == [diff]
    parts = consumers.frames(diff, size=1)
    assert parts == [
        {"type": "diff", "stats": {"pages": 2, "carts": {"a": None}}},
        {"type": "diff", "stats": {"carts": {"b": {"pages": 1}}}},
    ]


async def test_a_snapshot_of_many_carts_reaches_the_client_in_frames_under_daphnes_limit(
    hub, staff
):
    carts = 5000  # as one message, about 0.6 MiB of carts alone; 10,000 passed daphne's 1 MiB
    hub.feed(
        {
            "carts": (
                [
                    row(f"r{i}", f"cart-{i:05d}", page=f"/p{i % 300}/", items={7: 1}, rev=1)
                    for i in range(carts)
                ],
                [],
            )
        }
    )
    await settled(hub)
    communicator = await staff_socket_of(staff)
    connected, _ = await communicator.connect()
    assert connected
    first = json.loads(await communicator.receive_from())
    assert first["type"] == "snapshot"
    stats, sizes = first["stats"], []
    while len(stats["carts"]) < carts:
        text = await communicator.receive_from()
        sizes.append(len(text))
        apply_stats_diff(stats, json.loads(text)["stats"])
    assert len(sizes) >= 2 and max(sizes) < 512 * 1024
    assert stats["shoppers"] == stats["pages"] == carts
    assert stats["items"] == {"7": carts}
    assert sum(stats["pages_by_path"].values()) == carts
    await communicator.disconnect()
