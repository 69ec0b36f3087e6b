from django.apps import AppConfig
from django.core import checks


class ShopConfig(AppConfig):
    name = "shop"
    verbose_name = "Shop"

    def ready(self) -> None:
        from shop import signals  # noqa: F401  (connects the receivers)
        from shop.checks import check_static_files

        # Untagged: collectstatic runs only the staticfiles-tagged checks, and need not be
        # told to run itself.
        checks.register(check_static_files)
