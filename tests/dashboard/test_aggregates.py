"""The pure aggregator: definitions of docs/protocol.md, coalesced diffs, and a property test
against a from-scratch recomputation."""

import copy
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.aggregates import Aggregator

from .support import apply_stats_diff, recompute, row

EMPTY = {"shoppers": 0, "pages": 0, "items": {}, "pages_by_path": {}, "carts": {}}


def test_empty_aggregator_has_nothing_to_say():
    agg = Aggregator()
    assert agg.snapshot() == EMPTY
    assert agg.take_diff() is None
    assert not agg.pending


def test_first_shopper_appears_in_every_aggregate():
    agg = Aggregator()
    agg.apply([row("r1", "cart-a", page="/p/1/", items={7: 2}, user="ann", joined_at=50.0)], [])
    assert agg.take_diff() == {
        "shoppers": 1,
        "pages": 1,
        "items": {"7": 2},
        "pages_by_path": {"/p/1/": 1},
        "carts": {"cart-a": {"user": "ann", "pages": 1, "items": 2, "since": 50.0}},
    }
    assert agg.take_diff() is None


def test_a_cart_open_in_three_tabs_counts_once():
    agg = Aggregator()
    tabs = [row(f"r{i}", "cart-a", page=f"/{i % 2}", items={"7": 2, "9": 1}) for i in range(3)]
    agg.apply(tabs, [])
    agg.apply([row("r9", "cart-b", items={"7": 1})], [])
    snapshot = agg.snapshot()
    assert snapshot["shoppers"] == 2
    assert snapshot["pages"] == 4
    assert snapshot["items"] == {"7": 3, "9": 1}
    assert snapshot["pages_by_path"] == {"/0": 2, "/1": 1, "/": 1}
    assert snapshot["carts"]["cart-a"]["pages"] == 3
    assert snapshot["carts"]["cart-a"]["items"] == 3


def test_the_newest_cart_revision_wins_whichever_tab_carries_it():
    agg = Aggregator()
    old_1 = row("r1", "cart-a", conn="c1", items={"7": 1}, rev=1)
    old_2 = row("r2", "cart-a", conn="c2", items={"7": 1}, rev=1)
    agg.apply([old_1, old_2], [])
    agg.take_diff()
    # Tab 2 learns of the change first (an update is a leave of the old ref and a new join).
    new_2 = row("r3", "cart-a", conn="c2", items={"7": 3}, rev=2)
    agg.apply([new_2], [old_2])
    assert agg.take_diff() == {
        "items": {"7": 3},
        "carts": {"cart-a": {"user": None, "pages": 2, "items": 3, "since": 1000.0}},
    }
    # Tab 1 catching up changes nothing.
    agg.apply([row("r4", "cart-a", conn="c1", items={"7": 3}, rev=2)], [old_1])
    assert agg.take_diff() is None
    assert agg.snapshot()["items"] == {"7": 3}


def test_without_revisions_the_most_recently_joined_tab_wins():
    agg = Aggregator()
    agg.apply([row("r1", "cart-a", items={"7": 1})], [])
    agg.apply([row("r2", "cart-a", items={"7": 2})], [])
    assert agg.snapshot()["items"] == {"7": 2}


def test_an_older_revision_counts_again_when_the_newer_tab_closes_first():
    agg = Aggregator()
    stale = row("r1", "cart-a", items={"7": 1}, rev=1)
    fresh = row("r2", "cart-a", items={"7": 1, "8": 4}, rev=2)
    agg.apply([stale, fresh], [])
    agg.take_diff()
    agg.apply([], [fresh])
    assert agg.take_diff() == {
        "pages": 1,
        "items": {"8": 0},
        "pages_by_path": {"/": 1},
        "carts": {"cart-a": {"user": None, "pages": 1, "items": 1, "since": 1000.0}},
    }


def test_everything_gone_is_reported_with_zeros_and_nulls():
    agg = Aggregator()
    presence = row("r1", "cart-a", page="/x/", items={"7": 2})
    agg.apply([presence], [])
    agg.take_diff()
    agg.apply([], [presence])
    assert agg.take_diff() == {
        "shoppers": 0,
        "pages": 0,
        "items": {"7": 0},
        "pages_by_path": {"/x/": 0},
        "carts": {"cart-a": None},
    }
    assert agg.snapshot() == EMPTY


def test_a_change_undone_before_the_take_is_not_reported():
    agg = Aggregator()
    first = row("r1", "cart-a", items={"7": 1})
    agg.apply([first], [])
    agg.take_diff()
    second = row("r2", "cart-a", items={"7": 1})
    agg.apply([second], [])
    agg.apply([], [second])
    assert agg.pending
    assert agg.take_diff() is None
    assert not agg.pending


def test_only_changed_keys_are_sent():
    agg = Aggregator()
    agg.apply([row("r1", "cart-a", page="/a", items={"1": 1}), row("r2", "cart-b", page="/b")], [])
    agg.take_diff()
    agg.apply([row("r3", "cart-b", page="/c")], [])
    assert agg.take_diff() == {
        "pages": 3,
        "pages_by_path": {"/c": 1},
        "carts": {"cart-b": {"user": None, "pages": 2, "items": 0, "since": 1000.0}},
    }


def test_cart_line_shows_the_earliest_tab_and_the_newest_user():
    agg = Aggregator()
    agg.apply([row("r1", "cart-a", joined_at=30.0, rev=1)], [])
    agg.apply([row("r2", "cart-a", joined_at=10.0, rev=1)], [])
    agg.apply([row("r3", "cart-a", joined_at=20.0, rev=2, user="ann")], [])
    assert agg.snapshot()["carts"]["cart-a"] == {
        "user": "ann",
        "pages": 3,
        "items": 0,
        "since": 10.0,
    }


def test_unknown_leaves_duplicate_joins_and_empty_lines_change_nothing():
    agg = Aggregator()
    presence = row("r1", "cart-a", items={7: 2, 8: 0})
    agg.apply([presence], [])
    agg.take_diff()
    agg.apply([presence], [row("nope", "cart-z")])
    assert agg.take_diff() is None
    assert agg.snapshot()["items"] == {"7": 2}


# --- property test -----------------------------------------------------------------------

CARTS = [f"cart-{i}" for i in range(6)]
PAGES = ["/", "/p/1/", "/p/2/", "/checkout/"]

ops = st.one_of(
    st.tuples(st.just("join"), st.sampled_from(CARTS), st.sampled_from(PAGES)),
    st.tuples(st.just("leave"), st.integers(0, 1000)),
    st.tuples(
        st.just("change"),
        st.sampled_from(CARTS),
        st.dictionaries(st.integers(1, 5), st.integers(0, 3), max_size=4),
        st.sampled_from([None, "ann", "bob"]),
    ),
    st.tuples(st.just("update"), st.integers(0, 1000), st.none() | st.sampled_from(PAGES)),
)
batches = st.lists(
    st.tuples(st.lists(ops, max_size=8), st.booleans(), st.booleans()), min_size=1, max_size=25
)


class Shop:
    """The truth: open tabs and carts, emitting net tracker diffs per batch."""

    def __init__(self) -> None:
        self.carts = {cart_id: {"rev": 0, "items": {}, "user": None} for cart_id in CARTS}
        self.tabs: dict[str, object] = {}  # conn -> current row
        self.counter = itertools.count()

    def _row(self, conn: str, cart_id: str, page: str, joined_at: float):
        cart = self.carts[cart_id]
        return row(
            f"ref-{next(self.counter)}",
            cart_id,
            conn=conn,
            page=page,
            items=dict(cart["items"]),
            user=cart["user"],
            joined_at=joined_at,
            rev=cart["rev"],
        )

    def run(self, batch) -> tuple[list, list]:
        before = {p.ref: p for p in self.tabs.values()}
        for op in batch:
            conns = sorted(self.tabs)
            if op[0] == "join":
                conn = f"conn-{next(self.counter)}"
                self.tabs[conn] = self._row(conn, op[1], op[2], float(next(self.counter)))
            elif op[0] == "leave" and conns:
                del self.tabs[conns[op[1] % len(conns)]]
            elif op[0] == "change":
                cart = self.carts[op[1]]
                cart.update(rev=cart["rev"] + 1, items=op[2], user=op[3])
            elif op[0] == "update" and conns:
                old = self.tabs[conns[op[1] % len(conns)]]
                page = op[2] or old.meta["page"]
                self.tabs[old.conn] = self._row(old.conn, old.key, page, old.meta["joined_at"])
        after = {p.ref: p for p in self.tabs.values()}
        joins = [p for ref, p in after.items() if ref not in before]
        leaves = [p for ref, p in before.items() if ref not in after]
        return joins, leaves


def _assert_only_changes(client: dict, diff: dict) -> None:
    for name in ("shoppers", "pages"):
        if name in diff:
            assert diff[name] != client[name]
    for name in ("items", "pages_by_path", "carts"):
        for key, value in diff.get(name, {}).items():
            assert value != client[name].get(key, 0 if name != "carts" else None)


@settings(max_examples=300, deadline=None)
@given(batches=batches, data=st.data())
def test_snapshot_plus_diffs_equals_recomputation(batches, data):
    shop, agg = Shop(), Aggregator()
    clients = [agg.snapshot()]  # staff sockets, each from its own snapshot
    for batch, take, late_client in batches:
        joins, leaves = shop.run(batch)
        agg.apply(data.draw(st.permutations(joins)), data.draw(st.permutations(leaves)))
        truth = recompute(list(shop.tabs.values()))
        assert agg.snapshot() == truth
        if take:
            diff = agg.take_diff()
            assert diff != {}
            for client in clients:
                if diff is not None:
                    _assert_only_changes(client, diff)
                    apply_stats_diff(client, copy.deepcopy(diff))
                assert client == truth
            if late_client:
                clients.append(agg.snapshot())
    diff = agg.take_diff()
    for client in clients:
        apply_stats_diff(client, diff or {})
        assert client == recompute(list(shop.tabs.values()))
