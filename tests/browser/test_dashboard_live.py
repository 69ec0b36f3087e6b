"""A staff user watches the live dashboard while a shopper comes, fills a cart and leaves."""

import os

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.daphne_server import DaphneServer, create_staff_user

STAFF_USER, STAFF_PASSWORD = "dash-staff", "dash-staff-pw-1"
# Set to a path to keep a screenshot of the dashboard with a shopper online.
SCREENSHOT = os.environ.get("DASHBOARD_SCREENSHOT")


def stat(dashboard: Page, name: str):
    return dashboard.locator(f'#dashboard [data-stat="{name}"]')


@pytest.fixture(scope="module")
def staff_user(shop_server: DaphneServer) -> None:
    create_staff_user(shop_server.env, STAFF_USER, STAFF_PASSWORD)


@pytest.mark.browser
def test_the_dashboard_follows_a_shopper_live(
    shop_server: DaphneServer, browser: Browser, staff_user: None
) -> None:
    staff, shopper = browser.new_context(), browser.new_context()
    try:
        dashboard = staff.new_page()
        dashboard.goto(f"{shop_server.url}/dashboard/")  # anonymous: to the login page
        expect(dashboard).to_have_url(f"{shop_server.url}/accounts/login/?next=/dashboard/")
        dashboard.get_by_label("Username").fill(STAFF_USER)
        dashboard.get_by_label("Password").fill(STAFF_PASSWORD)
        dashboard.get_by_role("button", name="Log in").click()
        expect(dashboard).to_have_url(f"{shop_server.url}/dashboard/")
        expect(dashboard.locator("#dashboard")).to_have_attribute("data-state", "live")
        expect(stat(dashboard, "shoppers")).to_have_text("0")
        expect(stat(dashboard, "pages")).to_have_text("0")
        expect(dashboard.locator("[data-table=items] tr[data-item]")).to_have_count(0)

        shop = shopper.new_page()
        shop.goto(f"{shop_server.url}/products/city-sneaker-white/")
        expect(shop.locator("#cart-widget")).to_have_attribute("data-connected", "true")
        expect(stat(dashboard, "shoppers")).to_have_text("1")
        expect(stat(dashboard, "pages")).to_have_text("1")
        pages = dashboard.locator("[data-table=pages] tr")
        expect(pages).to_have_count(1)
        expect(pages.locator("td")).to_have_text(["/products/city-sneaker-white/", "1"])

        size = shop.locator(".size:not([disabled])").first
        item_id = size.get_attribute("data-item-id")
        size_label = size.locator(".size__label").inner_text()
        size.click()
        expect(shop.locator("#cart-count")).to_have_text("1")
        rows = dashboard.locator("[data-table=items] tr[data-item]")
        expect(rows).to_have_count(1)
        row = dashboard.locator(f'[data-table=items] tr[data-item="{item_id}"]')
        # Product, size, quantity in carts, available stock (15 of the seeded 40s).
        expect(row.locator("td")).to_have_text(["Lumen City Sneaker", size_label, "1", "15"])
        shoppers = dashboard.locator("[data-table=shoppers] tr")
        expect(shoppers).to_have_count(1)
        expect(shoppers.locator("td").nth(1)).to_have_text("guest")
        expect(shoppers.locator("td").nth(3)).to_have_text("1")  # items
        if SCREENSHOT:
            dashboard.screenshot(path=SCREENSHOT, full_page=True)

        shop.close()
        expect(stat(dashboard, "shoppers")).to_have_text("0")
        expect(stat(dashboard, "pages")).to_have_text("0")
        expect(rows).to_have_count(0)
        expect(dashboard.locator('[data-empty="shoppers"]')).to_be_visible()
        expect(dashboard.locator("#dashboard")).to_have_attribute("data-state", "live")
    finally:
        staff.close()
        shopper.close()
