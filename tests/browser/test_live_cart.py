"""Two tabs of one browser share a cart: a change in one shows in the other."""

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.daphne_server import DaphneServer, manage


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


@pytest.mark.browser
def test_a_page_whose_socket_was_down_shows_the_stock_levels_it_missed(browser: Browser) -> None:
    """The server goes away, a size sells out meanwhile (nobody is told), the server comes
    back: the page's script reconnects, asks for the current levels, and shows it sold out."""
    with DaphneServer() as server:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{server.url}/")
            wait_connected(page)
            size = page.locator(".size:not([disabled])").first
            item_id = size.get_attribute("data-item-id")
            button = page.locator(f'.size[data-item-id="{item_id}"]').first
            assert button.get_attribute("data-level") != "out"

            server.stop()
            expect(page.locator("#cart-widget")).to_have_attribute("data-connected", "false")
            manage(
                "shell",
                "-c",
                f"from shop.models import Item; Item.objects.filter(pk={item_id}).update(stock=0)",
                env=server.env,
            )
            server.start()
            # The script retries with a backoff that has grown to several seconds by now.
            expect(page.locator("#cart-widget")).to_have_attribute(
                "data-connected", "true", timeout=30_000
            )
            expect(button).to_have_attribute("data-level", "out")
            expect(button).to_be_disabled()
        finally:
            context.close()
