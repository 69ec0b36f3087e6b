"""A demo catalogue. Idempotent: creates only what is missing and never resets stock that
staff or shoppers have changed since."""

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from shop.models import Item, Product

SNEAKER_SIZES = ["40", "41", "42", "43", "44", "45"]
APPAREL_SIZES = ["XS", "S", "M", "L", "XL"]

# (slug, name, brand, colour, price, released, {size: stock})
CATALOGUE: list[tuple[str, str, str, str, str, bool, dict[str, int]]] = [
    (
        "trail-runner-forest",
        "Trail Runner",
        "Northpeak",
        "Forest",
        "129.00",
        True,
        dict(zip(SNEAKER_SIZES, [0, 3, 12, 8, 2, 0], strict=True)),
    ),
    (
        "city-sneaker-white",
        "City Sneaker",
        "Lumen",
        "White",
        "89.00",
        True,
        dict(zip(SNEAKER_SIZES, [15, 20, 25, 18, 6, 1], strict=True)),
    ),
    (
        "canvas-low-navy",
        "Canvas Low",
        "Harbor & Co",
        "Navy",
        "59.00",
        True,
        dict(zip(SNEAKER_SIZES, [4, 0, 9, 11, 3, 5], strict=True)),
    ),
    (
        "rain-shell-mustard",
        "Rain Shell",
        "Northpeak",
        "Mustard",
        "149.00",
        True,
        dict(zip(APPAREL_SIZES, [2, 7, 14, 9, 0], strict=True)),
    ),
    (
        "merino-crew-grey",
        "Merino Crew",
        "Fellside",
        "Grey",
        "79.00",
        True,
        dict(zip(APPAREL_SIZES, [0, 12, 30, 22, 4], strict=True)),
    ),
    (
        "overshirt-rust",
        "Cord Overshirt",
        "Harbor & Co",
        "Rust",
        "95.00",
        True,
        dict(zip(APPAREL_SIZES, [1, 5, 3, 0, 2], strict=True)),
    ),
    (
        "everyday-tee-sky",
        "Everyday Tee",
        "Lumen",
        "Sky",
        "25.00",
        True,
        dict(zip(APPAREL_SIZES, [40, 35, 50, 28, 16], strict=True)),
    ),
    (
        "down-parka-black",
        "Down Parka",
        "Fellside",
        "Black",
        "289.00",
        True,
        dict(zip(APPAREL_SIZES, [0, 2, 6, 1, 0], strict=True)),
    ),
    # Not for sale yet: hidden from the shop, refused by the cart.
    (
        "summit-boot-burgundy",
        "Summit Boot",
        "Northpeak",
        "Burgundy",
        "219.00",
        False,
        dict(zip(SNEAKER_SIZES, [5, 5, 5, 5, 5, 5], strict=True)),
    ),
]


class Command(BaseCommand):
    help = "Create the demo catalogue (idempotent; existing products and stock are kept)."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        products = items = 0
        for slug, name, brand, colour, price, released, sizes in CATALOGUE:
            product, created = Product.objects.get_or_create(
                slug=slug,
                defaults={
                    "name": name,
                    "brand": brand,
                    "colour": colour,
                    "price": Decimal(price),
                    "released": released,
                },
            )
            products += created
            for position, (size, stock) in enumerate(sizes.items()):
                _, created = Item.objects.get_or_create(
                    product=product, size=size, defaults={"stock": stock, "position": position}
                )
                items += created
        self.stdout.write(f"Catalogue ready: {products} products and {items} sizes created.")
