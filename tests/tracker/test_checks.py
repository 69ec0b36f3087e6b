"""The tracker app's system check of settings.TRACKER (tracker.E001), in-process. How it
stops manage.py and daphne: tests/test_settings.py."""

import pytest
from django.core import checks

from tracker.checks import INVALID_SETTINGS, check_tracker_settings


def errors() -> list[str]:
    return [message.id for message in checks.run_checks() if message.is_serious()]


def test_the_site_settings_pass():
    assert check_tracker_settings() == []
    assert INVALID_SETTINGS not in errors()


@pytest.mark.parametrize(
    ("tracker", "says"),
    [
        ({"down_period": 1.0}, "down_period (1.0 s) must be at least twice"),
        ({"down_period": 10.0, "permdown_period": 10.0}, "permdown_period (10.0 s) must be"),
        ({"broadcast_priod": 0.1}, "unknown tracker option(s): broadcast_priod"),
        ({"broadcast_period": "fast"}, "settings.TRACKER is invalid"),
        ({"name": "a:b"}, "name must be non-empty and contain no ':'"),
        ({"pool_size": 0}, "pool_size must be a whole number >= 1"),
    ],
)
def test_a_bad_tracker_setting_is_error_e001(settings, tracker, says):
    settings.TRACKER = {"redis_url": None, **tracker}
    [error] = check_tracker_settings()
    assert error.id == "tracker.E001" and error.level == checks.ERROR
    assert says in error.msg
    assert "tracker/conf.py" in error.hint
    assert INVALID_SETTINGS in errors()  # registered by TrackerConfig.ready()


def test_none_means_the_default(settings):
    settings.TRACKER = {"redis_url": None, "down_period": None, "node_name": None}
    assert check_tracker_settings() == []
