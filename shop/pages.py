"""The page a shopper socket reports: one of the site's own routes, never a path a client
made up, so that the staff "Pages by path" table (and every tracker meta) is bounded by the
catalogue: the home page, each released product's page, the checkout, and one bucket for
everything else."""

from django.urls import Resolver404, resolve, reverse

from shop.models import Product

OTHER_PAGES = "other"  # not a path (paths start with "/"), so it names no real page


def page_bucket(path: str) -> str:
    """`path` if it is "/", "/checkout/" or a released product's page, else OTHER_PAGES.
    Blocking: it looks the product up."""
    try:
        match = resolve(path)
    except Resolver404:
        return OTHER_PAGES
    if match.view_name in {"shop:index", "shop:checkout"}:
        return reverse(match.view_name)
    if match.view_name == "shop:product":
        slug = match.kwargs["slug"]
        if Product.objects.filter(slug=slug, released=True).exists():
            return reverse("shop:product", kwargs={"slug": slug})
    return OTHER_PAGES
