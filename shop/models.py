import uuid

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.urls import reverse

from shop.stock import StockLevel, stock_level

# Flat colour plates stand in for product photos: the stylesheet has a class per colour
# (`swatch--<colour>`, no inline style: the Content-Security-Policy allows none); unknown
# colours fall back to grey (`swatch--default`).
SWATCHES = {
    "black",
    "white",
    "navy",
    "grey",
    "olive",
    "sand",
    "rust",
    "forest",
    "burgundy",
    "sky",
    "mustard",
    "cream",
}


class Product(models.Model):
    name = models.CharField(max_length=120)
    brand = models.CharField(max_length=80)
    colour = models.CharField(max_length=40)
    price = models.DecimalField(max_digits=10, decimal_places=2, validators=[MinValueValidator(0)])
    slug = models.SlugField(max_length=140, unique=True)
    released = models.BooleanField(
        default=False, help_text="Only released products are shown and sold."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.brand} {self.name}"

    def get_absolute_url(self) -> str:
        return reverse("shop:product", kwargs={"slug": self.slug})

    @property
    def swatch(self) -> str:
        """The colour plate's CSS class."""
        colour = self.colour.lower()
        return f"swatch--{colour if colour in SWATCHES else 'default'}"


class Item(models.Model):
    """One size of a product, with the stock available to sell."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="items")
    size = models.CharField(max_length=20)
    stock = models.PositiveIntegerField(default=0)
    position = models.PositiveSmallIntegerField(
        default=0, help_text="Sizes are listed in ascending position."
    )

    class Meta:
        ordering = ["product", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["product", "size"], name="item_unique_size"),
            models.CheckConstraint(condition=models.Q(stock__gte=0), name="item_stock_gte_0"),
        ]

    def __str__(self) -> str:
        return f"{self.product} – {self.size}"

    @property
    def level(self) -> StockLevel:
        return stock_level(self.stock)


class Cart(models.Model):
    """A shopper's cart; str(id) is the cart id on the wire and in the session."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="carts",
    )
    # Bumped in the same transaction as every change of the contents, so that whoever sees
    # two states of one cart (tabs, tracker metas) can tell which is newer.
    revision = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return str(self.id)


class CartItem(models.Model):
    cart = models.ForeignKey(Cart, on_delete=models.CASCADE, related_name="lines")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="cart_lines")
    quantity = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["cart", "item"], name="cartitem_unique_item"),
            models.CheckConstraint(
                condition=models.Q(quantity__gt=0), name="cartitem_quantity_gt_0"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.item}"
