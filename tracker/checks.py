"""System checks of the tracker app (registered by `TrackerConfig.ready()`).

`settings.TRACKER` is validated here, when Django runs its checks (every management command
that runs them, `runserver`, and the site's ASGI module before it serves), rather than when
the settings module is imported: a settings file only gathers values, and the replica
starts only once the server runs, so without this check a bad combination would surface
then, in the server's log, instead of stopping the start.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error

from .conf import ConfigurationError, TrackerOptions
from .process import tracker_settings

INVALID_SETTINGS = "tracker.E001"


def check_tracker_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """tracker.E001 when `settings.TRACKER` names an unknown option, a bad value or a bad
    combination (the constraints of `tracker.conf`), or a bad tracker name."""
    try:
        name, options = tracker_settings()
        if not name or ":" in name:
            raise ConfigurationError(f"name must be non-empty and contain no ':', not {name!r}")
        TrackerOptions.from_mapping(options)
    except (ConfigurationError, TypeError, ValueError) as error:
        return [
            Error(
                f"settings.TRACKER is invalid: {error}",
                hint="Every option, its default and its constraints: tracker/conf.py.",
                id=INVALID_SETTINGS,
            )
        ]
    return []
