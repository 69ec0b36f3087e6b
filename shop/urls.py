"""The storefront's pages, in the "shop" namespace ({% url 'shop:checkout' %})."""

from django.urls import path

from shop import views

app_name = "shop"
urlpatterns = [
    path("", views.index, name="index"),
    path("products/<slug:slug>/", views.product_detail, name="product"),
    path("checkout/", views.checkout, name="checkout"),
]
