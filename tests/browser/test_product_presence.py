"""A product page shows, live, how many other shoppers look at it and how many other carts
hold each size: a second browser opens the page, and the first one's counter moves."""

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.test_live_cart import wait_connected
from tests.daphne_server import DaphneServer

PAGE = "/products/city-sneaker-white/"


@pytest.mark.browser
def test_a_second_shopper_shows_on_the_first_ones_product_page(
    shop_server: DaphneServer, browser: Browser
) -> None:
    mine, theirs = browser.new_context(), browser.new_context()
    try:
        first = mine.new_page()
        first.goto(f"{shop_server.url}{PAGE}")
        wait_connected(first)
        presence = first.locator("#product-presence")
        expect(presence).to_be_hidden()  # nobody else: nothing said about yourself

        second = theirs.new_page()
        second.goto(f"{shop_server.url}{PAGE}")
        wait_connected(second)
        expect(presence).to_be_visible()
        expect(presence).to_have_text("1 other shopper is looking at this")
        expect(presence).to_have_attribute("aria-live", "polite")

        size = second.locator(".size:not([disabled])").first
        item_id = size.get_attribute("data-item-id")
        size.click()
        expect(second.locator("#cart-count")).to_have_text("1")
        mine_size = first.locator(f'.size[data-item-id="{item_id}"] .size__carts')
        expect(mine_size).to_have_text("in 1 other cart")
        expect(second.locator(f'.size[data-item-id="{item_id}"] .size__carts')).to_have_text("")

        second.close()
        expect(presence).to_be_hidden()
        expect(mine_size).to_have_text("")
    finally:
        mine.close()
        theirs.close()
