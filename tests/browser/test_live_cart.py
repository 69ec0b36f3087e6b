"""Two tabs of one browser share a cart: a change in one shows in the other."""

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.daphne_server import DaphneServer


def wait_connected(page: Page) -> None:
    expect(page.locator("#cart-widget")).to_have_attribute("data-connected", "true")


@pytest.mark.browser
def test_adding_in_one_tab_updates_the_cart_count_in_the_other(
    shop_server: DaphneServer, browser: Browser
) -> None:
    context = browser.new_context()
    try:
        first, second = context.new_page(), context.new_page()
        first.goto(f"{shop_server.url}/")  # creates the cart and the session cookie
        second.goto(f"{shop_server.url}/products/city-sneaker-white/")
        wait_connected(first)
        wait_connected(second)
        expect(second.locator("#cart-count")).to_have_text("0")

        first.locator(".size:not([disabled])").first.click()
        expect(first.locator("#cart-count")).to_have_text("1")
        expect(second.locator("#cart-count")).to_have_text("1")

        second.locator("#cart-toggle").click()
        expect(second.locator(".cart-line")).to_have_count(1)
        second.locator("[data-remove]").first.click()
        expect(first.locator("#cart-count")).to_have_text("0")
        expect(second.locator("#cart-empty")).to_be_visible()

        # Buying in one tab empties the cart in the other.
        first.locator(".size:not([disabled])").first.click()
        expect(first.locator("#cart-count")).to_have_text("1")
        second.goto(f"{shop_server.url}/checkout/")
        wait_connected(second)
        second.get_by_role("button", name="Buy now").click()
        expect(second.locator(".message--success")).to_contain_text("Thank you!")
        expect(first.locator("#cart-count")).to_have_text("0")
    finally:
        context.close()
