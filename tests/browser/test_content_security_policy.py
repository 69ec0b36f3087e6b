"""Chromium enforces the site's Content-Security-Policy and reports no violation on any
page, while the shopper and staff sockets still connect (connect-src 'self' covers ws:)."""

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.daphne_server import DaphneServer, create_staff_user

STAFF_USER, STAFF_PASSWORD = "csp-staff", "csp-staff-pw-1"
# Collects every violation the page's document reports, from before any script runs.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def violations(page: Page) -> list[str]:
    return page.evaluate("window.__violations")


@pytest.mark.browser
def test_every_page_satisfies_the_policy(shop_server: DaphneServer, browser: Browser) -> None:
    create_staff_user(shop_server.env, STAFF_USER, STAFF_PASSWORD)
    context = browser.new_context()
    context.add_init_script(RECORD_VIOLATIONS)
    try:
        page = context.new_page()
        response = page.goto(f"{shop_server.url}/")
        assert "default-src 'none'" in response.headers["content-security-policy"]
        for path in ["/", "/products/city-sneaker-white/", "/checkout/"]:
            page.goto(f"{shop_server.url}{path}")
            expect(page.locator("#cart-widget")).to_have_attribute("data-connected", "true")
            page.locator("#cart-toggle").click()  # the panel, its styles
            assert violations(page) == [], path
        page.goto(f"{shop_server.url}/accounts/login/?next=/dashboard/")
        assert violations(page) == []
        page.get_by_label("Username").fill(STAFF_USER)
        page.get_by_label("Password").fill(STAFF_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#dashboard")).to_have_attribute("data-state", "live")
        assert violations(page) == []
        page.goto(f"{shop_server.url}/admin/")
        expect(page.locator("#site-name")).to_be_visible()
        assert violations(page) == []
    finally:
        context.close()
