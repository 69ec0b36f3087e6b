import re

from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles import views as staticfiles_views
from django.urls import include, path, re_path

from shop import observability, views

urlpatterns = [
    path("", views.index, name="index"),
    path("products/<slug:slug>/", views.product_detail, name="product"),
    path("checkout/", views.checkout, name="checkout"),
    path("admin/", admin.site.urls),
    path("accounts/", include("shop.accounts")),
    path("dashboard/", include("dashboard.urls")),
    path("healthz", observability.healthz, name="healthz"),
    path("metrics", observability.metrics, name="metrics"),
    # Daphne has no static file handler, so every node serves the site's few static files
    # itself (runserver does the same in DEBUG). Behind a web server, run collectstatic and
    # let it serve STATIC_URL instead.
    re_path(
        rf"^{re.escape(settings.STATIC_URL.lstrip('/'))}(?P<path>.*)$",
        staticfiles_views.serve,
        {"insecure": True},
    ),
]
