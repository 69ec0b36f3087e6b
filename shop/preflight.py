"""Before a process serves or manages anything, the site's settings load and its system
checks pass, or the process ends with the reason. A configuration error is the operator's
to fix, not a bug to debug: it gets its message, never a traceback.

`manage.py` calls `settings_or_exit()` (its commands run the system checks themselves);
the ASGI module calls both, because servers such as daphne run no checks of their own.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, SystemCheckError


def settings_or_exit() -> None:
    """Load the settings module (it reads the environment: shop/settings.py). If it refuses
    the environment, exit with status 1 and its message on one line."""
    try:
        settings.INSTALLED_APPS  # noqa: B018 (the first access loads the module)
    except ImproperlyConfigured as error:
        raise SystemExit(f"Configuration error: {error}") from None


def checks_or_exit() -> None:
    """Run the system checks as `runserver` does (apps must be loaded): warnings are
    printed, errors end the process with Django's report of them (status 1)."""
    try:
        BaseCommand().check()
    except SystemCheckError as error:
        raise SystemExit(str(error)) from None
