from django.contrib import admin
from django.http import HttpRequest

from shop.models import Cart, CartItem, Item, Product


class ItemInline(admin.TabularInline):
    model = Item
    extra = 1
    fields = ["size", "stock", "position"]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "brand", "colour", "price", "released"]
    list_editable = ["released"]
    list_filter = ["released", "brand"]
    search_fields = ["name", "brand", "colour", "slug"]
    prepopulated_fields = {"slug": ["brand", "name", "colour"]}
    inlines = [ItemInline]


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["__str__", "size", "stock", "level"]
    list_editable = ["stock"]
    list_filter = ["product__released", "product__brand"]
    list_select_related = ["product"]
    search_fields = ["product__name", "product__brand", "size"]

    @admin.display(description="Stock level")
    def level(self, item: Item) -> str:
        return item.level.value


class CartItemInline(admin.TabularInline):
    model = CartItem
    extra = 0
    fields = readonly_fields = ("item", "quantity")


@admin.register(Cart)
class CartAdmin(admin.ModelAdmin):
    """Read-only: cart contents change only through the shopper socket, which bumps the
    revision and tells every open tab."""

    list_display = ["id", "user", "revision", "updated_at"]
    list_select_related = ["user"]
    readonly_fields = ["id", "user", "revision", "created_at", "updated_at"]
    inlines = [CartItemInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Cart | None = None) -> bool:
        return False
