"""The page a shopper socket reports is one of the site's own routes (shop.pages)."""

import pytest

from shop.consumers import clean_page
from shop.pages import OTHER_PAGES, page_bucket

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("page", "bucket"),
    [
        ("/", "/"),
        ("/checkout/", "/checkout/"),
        ("/products/test-boot/", "/products/test-boot/"),
        ("/products/secret-boot/", OTHER_PAGES),  # not released
        ("/products/no-such-boot/", OTHER_PAGES),
        ("/products/test-boot", OTHER_PAGES),
        ("/products/test-boot/?colour=red", OTHER_PAGES),
        ("/x/", OTHER_PAGES),
        ("/p1234/", OTHER_PAGES),
        ("/admin/", OTHER_PAGES),
        ("/dashboard/", OTHER_PAGES),
        ("/static/shop/cart.js", OTHER_PAGES),
        ("/" + "a" * 199, OTHER_PAGES),
        ("/<script>alert(1)</script>/", OTHER_PAGES),
    ],
)
def test_a_page_is_a_route_of_the_site_or_other(catalogue, page, bucket):
    assert page_bucket(clean_page(f"page={page}".encode())) == bucket
