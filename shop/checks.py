"""System checks of the site (registered by `ShopConfig.ready()`)."""

from typing import Any

from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.core.checks import CheckMessage, Warning

STATIC_FILES_NOT_COLLECTED = "shop.W001"


def static_files_must_be_collected() -> bool:
    """Whether pages link the hashed names that only `collectstatic` makes: the manifest
    storage with DEBUG off (in DEBUG pages link the plain names, served from the apps)."""
    return not settings.DEBUG and isinstance(staticfiles_storage, ManifestFilesMixin)


def check_static_files(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """shop.W001 when pages need collected static files and there are none. A warning, not
    an error: `migrate` and the other commands must still run before `collectstatic`."""
    if not static_files_must_be_collected():
        return []
    storage: Any = staticfiles_storage
    if storage.manifest_storage.exists(storage.manifest_name):
        return []
    return [
        Warning(
            f"The static files are not collected into STATIC_ROOT ({settings.STATIC_ROOT}): "
            "every page will fail (500) until they are.",
            hint="Run `manage.py collectstatic --noinput` (and again after each upgrade).",
            id=STATIC_FILES_NOT_COLLECTED,
        )
    ]
