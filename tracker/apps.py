from django.apps import AppConfig
from django.core import checks


class TrackerConfig(AppConfig):
    name = "tracker"
    verbose_name = "Presence tracker"

    def ready(self) -> None:
        from .checks import check_tracker_settings

        checks.register(check_tracker_settings)
