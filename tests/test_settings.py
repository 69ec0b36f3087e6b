import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _check(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    env.update(env_overrides)
    env["DJANGO_SETTINGS_MODULE"] = "shop.settings"
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_refuses_to_start_without_secret_key_when_debug_is_off(tmp_path):
    result = _check({"VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_debug_generates_and_keeps_a_local_key(tmp_path):
    first = _check({"DEBUG": "1", "VAR_DIR": str(tmp_path)})
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "secret_key").read_text()
    assert len(key) >= 50
    second = _check({"DEBUG": "1", "VAR_DIR": str(tmp_path)})
    assert second.returncode == 0
    assert (tmp_path / "secret_key").read_text() == key


def test_invalid_boolean_is_a_clear_error(tmp_path):
    result = _check({"DEBUG": "maybe", "VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr


def test_tracker_timings_come_from_the_environment(tmp_path):
    env = {"DEBUG": "1", "VAR_DIR": str(tmp_path), "TRACKER_BROADCAST_PERIOD": "0.05",
           "TRACKER_DOWN_PERIOD": "1", "TRACKER_PERMDOWN_PERIOD": "120"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "from django.conf import settings; t = settings.TRACKER; "
         "print(t['broadcast_period'], t['down_period'], t['permdown_period'])"],
        cwd=ROOT, env={**os.environ, **env, "DJANGO_SETTINGS_MODULE": "shop.settings"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["0.05", "1.0", "120.0"]


def test_invalid_tracker_timings_are_a_clear_error_at_start(tmp_path):
    result = _check({"DEBUG": "1", "VAR_DIR": str(tmp_path), "TRACKER_DOWN_PERIOD": "-1"})
    assert result.returncode != 0
    assert "TRACKER_DOWN_PERIOD must be a positive number of seconds" in result.stderr
    # Each value is fine alone; together a quiet peer would look dead (tracker/conf.py).
    result = _check({"DEBUG": "1", "VAR_DIR": str(tmp_path), "TRACKER_DOWN_PERIOD": "1"})
    assert result.returncode != 0
    assert "down_period (1.0 s) must be at least twice" in result.stderr


def test_tracker_redis_url_defaults_to_redis_url_and_needs_it(tmp_path):
    def tracker_url(env: dict[str, str]) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from django.conf import settings; print(settings.TRACKER['redis_url'])"],
            cwd=ROOT, capture_output=True, text=True,
            env={**{k: v for k, v in os.environ.items() if "REDIS_URL" not in k}, **env,
                 "DEBUG": "1", "VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "shop.settings"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()[-1]

    assert tracker_url({"REDIS_URL": "redis://r:6379/0"}) == "redis://r:6379/0"
    assert tracker_url({"REDIS_URL": "redis://r:6379/0", "TRACKER_REDIS_URL": "redis://t:1/0"}) == (
        "redis://t:1/0"
    )
    result = _check({"DEBUG": "1", "VAR_DIR": str(tmp_path), "TRACKER_REDIS_URL": "redis://t:1/0"})
    assert result.returncode != 0
    assert "TRACKER_REDIS_URL needs REDIS_URL" in result.stderr


def test_a_log_line_is_printed_once_in_debug(tmp_path):
    """Django's default logging gives the "django" logger a console handler of its own in
    DEBUG; with the site's root handler beside it, every server line came out twice."""
    env = {"DEBUG": "1", "VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "shop.settings"}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "import logging; logging.getLogger('django.channels.server').info('GET / 200');"
         "logging.getLogger('tracker').info('replica up')"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("GET / 200") == 1, result.stderr
    assert result.stderr.count("replica up") == 1, result.stderr


def _gc_settings(tmp_path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """GC_TUNING and GC_THRESHOLD as the site reads them, printed on the last line."""
    outer = {k: v for k, v in os.environ.items() if not k.startswith("GC_")}
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "from django.conf import settings; print(settings.GC_TUNING, *settings.GC_THRESHOLD)"],
        cwd=ROOT, capture_output=True, text=True,
        env={**outer, **env, "DEBUG": "1", "VAR_DIR": str(tmp_path),
             "DJANGO_SETTINGS_MODULE": "shop.settings"},
    )  # fmt: skip


def test_the_gc_policy_is_on_by_default_and_its_thresholds_come_from_the_environment(tmp_path):
    default = _gc_settings(tmp_path, {})
    assert default.returncode == 0, default.stderr
    assert default.stdout.splitlines()[-1].split() == ["True", "700", "10", "2"]
    tuned = _gc_settings(tmp_path, {"GC_TUNING": "on", "GC_THRESHOLD": " 2000, 20,5 "})
    assert tuned.returncode == 0, tuned.stderr
    assert tuned.stdout.splitlines()[-1].split() == ["True", "2000", "20", "5"]
    off = _gc_settings(tmp_path, {"GC_TUNING": "off"})
    assert off.returncode == 0, off.stderr
    assert off.stdout.splitlines()[-1].split()[0] == "False"


@pytest.mark.parametrize("value", ["700,10", "700,10,10,10", "a,b,c", "0,10,10", "700,-1,10",
                                   "700,,10", "1.5,10,10"])  # fmt: skip
def test_a_bad_gc_threshold_is_a_clear_error(tmp_path, value):
    result = _check({"DEBUG": "1", "VAR_DIR": str(tmp_path), "GC_THRESHOLD": value})
    assert result.returncode != 0
    assert (
        f"GC_THRESHOLD must be three positive integers g0,g1,g2 (e.g. 700,10,2), not {value!r}"
        in result.stderr
    )


def test_bad_gc_tuning_values_are_clear_errors(tmp_path):
    result = _check({"DEBUG": "1", "VAR_DIR": str(tmp_path), "GC_TUNING": "sometimes"})
    assert result.returncode != 0
    assert "GC_TUNING must be a boolean" in result.stderr
    # Off means Python's defaults: a threshold as well would be ignored, so it is refused.
    result = _check(
        {"DEBUG": "1", "VAR_DIR": str(tmp_path), "GC_TUNING": "off", "GC_THRESHOLD": "900,10,10"}
    )
    assert result.returncode != 0
    assert "GC_THRESHOLD needs GC_TUNING on" in result.stderr
