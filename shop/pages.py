"""The page a shopper socket reports: one of the site's own routes, never a path a client
made up, so that the staff "Pages by path" table (and every tracker meta) is bounded by the
catalogue: the home page, each released product's page, the checkout, and one bucket for
everything else."""

import time

from django.urls import Resolver404, resolve, reverse

from shop.models import Product

OTHER_PAGES = "other"  # not a path (paths start with "/"), so it names no real page
# Every shopper socket's connect asks for its page's bucket: the released products' slugs
# are read once per process and kept this long (a product saved in this process forgets
# them at once: shop.signals; one released or withdrawn on another node shows within this).
RELEASED_SECONDS = 10.0

_released: tuple[float, frozenset[str]] | None = None  # (monotonic time read, slugs)


def forget_released() -> None:
    global _released
    _released = None


def _released_slugs() -> frozenset[str]:
    global _released
    now = time.monotonic()
    if _released is None or now - _released[0] >= RELEASED_SECONDS:
        slugs = Product.objects.filter(released=True).values_list("slug", flat=True)
        _released = (now, frozenset(slugs))
    return _released[1]


def page_bucket(path: str) -> str:
    """`path` if it is "/", "/checkout/" or a released product's page, else OTHER_PAGES.
    Blocking: it may read the released products' slugs."""
    try:
        match = resolve(path)
    except Resolver404:
        return OTHER_PAGES
    if match.view_name in {"shop:index", "shop:checkout"}:
        return reverse(match.view_name)
    if match.view_name == "shop:product":
        slug = match.kwargs["slug"]
        if slug in _released_slugs():
            return reverse("shop:product", kwargs={"slug": slug})
    return OTHER_PAGES
