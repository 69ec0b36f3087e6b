"""The site's root URLconf (settings.ROOT_URLCONF): each app's pages under its prefix and
namespace, the account pages, and /healthz and /metrics for load balancers and Prometheus.
Static files never get here: WhiteNoise's middleware answers them (settings, STORAGES)."""

from django.contrib import admin
from django.urls import include, path

from shop import observability

urlpatterns = [
    path("", include("shop.urls")),
    path("admin/", admin.site.urls),
    path("accounts/", include("shop.accounts")),
    path("dashboard/", include("dashboard.urls")),
    path("healthz", observability.healthz, name="healthz"),
    path("metrics", observability.metrics, name="metrics"),
]
