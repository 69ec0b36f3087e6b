"""The site's root URLconf (settings.ROOT_URLCONF): each app's pages under its prefix and
namespace, the account pages, and /healthz and /metrics for load balancers and Prometheus."""

import re

from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles import views as staticfiles_views
from django.urls import include, path, re_path

from shop import observability

urlpatterns = [
    path("", include("shop.urls")),
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
