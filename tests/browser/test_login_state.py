"""A tab opened before a login follows it: its socket is closed (4002), it reloads, and it
comes back logged in, with the cart the login kept."""

import pytest
from playwright.sync_api import Browser, expect

from tests.daphne_server import DaphneServer, create_staff_user

USER, PASSWORD = "tab-user", "tab-user-pw-1"


@pytest.mark.browser
def test_a_tab_reloads_into_the_new_login(shop_server: DaphneServer, browser: Browser) -> None:
    create_staff_user(shop_server.env, USER, PASSWORD)
    context = browser.new_context()
    try:
        shopping, login = context.new_page(), context.new_page()
        shopping.goto(f"{shop_server.url}/")
        expect(shopping.locator("#cart-widget")).to_have_attribute("data-connected", "true")
        shopping.locator(".size:not([disabled])").first.click()
        expect(shopping.locator("#cart-count")).to_have_text("1")
        expect(shopping.locator(".site-nav__user")).to_have_count(0)

        login.goto(f"{shop_server.url}/accounts/login/")
        login.get_by_label("Username").fill(USER)
        login.get_by_label("Password").fill(PASSWORD)
        login.get_by_role("button", name="Log in").click()
        expect(login.locator(".site-nav__user")).to_have_text(USER)

        # The other tab reloads by itself: logged in, the same cart, connected again.
        expect(shopping.locator(".site-nav__user")).to_have_text(USER)
        expect(shopping.locator("#cart-widget")).to_have_attribute("data-connected", "true")
        expect(shopping.locator("#cart-count")).to_have_text("1")
        shopping.locator(".size:not([disabled])").first.click()
        expect(login.locator("#cart-count")).to_have_text("2")
    finally:
        context.close()
