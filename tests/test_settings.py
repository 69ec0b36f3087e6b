import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_server import free_port

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


def _daphne(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    """Start daphne on the site's ASGI module as a deployment does, and wait for it to end
    (a server that starts despite a bad environment times out here)."""
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    env.update(env_overrides, DJANGO_SETTINGS_MODULE="shop.settings")
    return subprocess.run(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(free_port()),
         "shop.asgi:application"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_bad_environment_is_one_line_without_traceback(tmp_path):
    """manage.py and daphne (through shop.asgi) print the settings' complaint alone."""
    for result in (
        _check({"VAR_DIR": str(tmp_path)}),
        _daphne({"VAR_DIR": str(tmp_path)}),
    ):
        assert result.returncode == 1, result.stderr
        assert result.stderr.splitlines() == [
            "Configuration error: SECRET_KEY is not set. Set it in the environment, "
            "or set DEBUG=1 for development."
        ]
    for result in (
        _check({"DEBUG": "maybe", "VAR_DIR": str(tmp_path)}),
        _daphne({"DEBUG": "maybe", "VAR_DIR": str(tmp_path)}),
    ):
        assert result.returncode == 1, result.stderr
        assert result.stderr.splitlines() == [
            "Configuration error: DEBUG must be a boolean (1/0, true/false), not 'maybe'"
        ]


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


def test_tracker_channel_prefix_and_secret_come_from_the_environment(tmp_path):
    env = {"DEBUG": "1", "VAR_DIR": str(tmp_path), "TRACKER_CHANNEL_PREFIX": "blue",
           "SECRET_KEY": "s3cret-for-this-test"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "from django.conf import settings; t = settings.TRACKER; "
         "print(t['channel_prefix'], t['secret'] == settings.SECRET_KEY)"],
        cwd=ROOT, env={**os.environ, **env, "DJANGO_SETTINGS_MODULE": "shop.settings"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["blue", "True"]
    result = _check({"DEBUG": "1", "VAR_DIR": str(tmp_path), "TRACKER_CHANNEL_PREFIX": "a:b"})
    assert result.returncode != 0
    assert "channel_prefix must be non-empty and contain no ':'" in result.stderr


def test_tracker_timings_are_checked_by_the_system_check_not_at_import(tmp_path):
    """Settings only parse the values; the tracker app's check (tracker.E001) refuses a bad
    combination in every command that runs checks, and stops daphne before it serves."""
    env = {"DEBUG": "1", "VAR_DIR": str(tmp_path), "TRACKER_DOWN_PERIOD": "1"}
    imported = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "from django.conf import settings; print(settings.TRACKER['down_period'])"],
        cwd=ROOT, env={**os.environ, **env, "DJANGO_SETTINGS_MODULE": "shop.settings"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.splitlines()[-1] == "1.0"
    checked = _check(env)
    assert checked.returncode != 0
    assert "(tracker.E001) settings.TRACKER is invalid: down_period (1.0 s)" in checked.stderr
    served = _daphne(env)
    assert served.returncode == 1
    assert "(tracker.E001) settings.TRACKER is invalid: down_period (1.0 s)" in served.stderr
    assert "Traceback" not in served.stderr


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


def test_socket_limits_come_from_the_environment_and_are_checked(tmp_path):
    def limits(env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from django.conf import settings; "
             "print(settings.SHOPPER_SOCKETS_PER_SESSION, settings.SHOPPER_SOCKETS_PER_ADDRESS)"],
            cwd=ROOT, capture_output=True, text=True,
            env={**os.environ, **env, "DEBUG": "1", "VAR_DIR": str(tmp_path),
                 "DJANGO_SETTINGS_MODULE": "shop.settings"},
        )  # fmt: skip

    assert limits({}).stdout.splitlines()[-1].split() == ["30", "500"]
    custom = limits({"SHOPPER_SOCKETS_PER_SESSION": "5", "SHOPPER_SOCKETS_PER_ADDRESS": "0"})
    assert custom.stdout.splitlines()[-1].split() == ["5", "0"]
    bad = limits({"SHOPPER_SOCKETS_PER_SESSION": "-1"})
    assert bad.returncode != 0
    assert "SHOPPER_SOCKETS_PER_SESSION must be a whole number" in bad.stderr


def _deploy_env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "HTTPS"}}
    env.update(
        DJANGO_SETTINGS_MODULE="shop.settings",
        VAR_DIR=str(tmp_path),
        STATIC_ROOT=str(tmp_path / "static"),
        SECRET_KEY="a-deployment-key-" + "x7Qp2" * 12,
        ALLOWED_HOSTS="shop.example.com",
        **extra,
    )
    return env


def _collect_static(env: dict[str, str]) -> None:
    """As a deployment does before serving (pages link the collected, hashed names)."""
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip


def test_check_deploy_is_clean_with_https_on(tmp_path):
    def check(env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip

    _collect_static(_deploy_env(tmp_path))
    plain = check(_deploy_env(tmp_path))
    assert "security.W008" in plain.stderr and "security.W012" in plain.stderr
    secure = check(_deploy_env(tmp_path, HTTPS="1"))
    assert secure.returncode == 0, secure.stderr
    assert "System check identified no issues" in secure.stdout, secure.stdout + secure.stderr


HTTPS_SCRIPT = """
from django.test import Client
c = Client(HTTP_HOST="shop.example.com")
r = c.get("/")
print("plain", r.status_code, r.get("Location"))
print("metrics", c.get("/metrics").status_code)
r = c.get("/", secure=True)
print("hsts", r["Strict-Transport-Security"])
cart = r.cookies["__Host-cart"]
print("cart", bool(cart["secure"]), cart["path"], cart["domain"] or "-")
from django.conf import settings
print("names", settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME, settings.CSRF_COOKIE_SECURE)
"""


def test_https_redirects_secures_cookies_and_sends_hsts(tmp_path):
    env = _deploy_env(tmp_path, HTTPS="1")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    _collect_static(env)
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", HTTPS_SCRIPT],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["plain"] == "301 https://shop.example.com/"
    assert lines["metrics"] != "301"  # Prometheus scrapes nodes over plain HTTP
    assert lines["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert lines["cart"] == "True / -"  # the __Host- prefix: Secure, path /, no Domain
    assert lines["names"] == "__Host-sessionid __Host-csrftoken True"


EMAIL_SCRIPT = (
    "from django.conf import settings as s; print(s.EMAIL_BACKEND.rsplit('.', 2)[-2], "
    "s.PASSWORD_RESET, s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_HOST_USER, s.EMAIL_HOST_PASSWORD, "
    "s.EMAIL_USE_TLS, s.EMAIL_USE_SSL)"
)


def test_email_comes_from_email_url_and_decides_password_reset(tmp_path):
    def email(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", EMAIL_SCRIPT],
            cwd=ROOT, capture_output=True, text=True,
            env={**_deploy_env(tmp_path), **env},
        )  # fmt: skip

    def line(**env: str) -> str:
        result = email(**env)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()[-1]

    assert line() == "smtp False localhost 25   False False"  # production, no mail
    assert line(DEBUG="1").startswith("console True ")
    assert line(EMAIL_URL="smtp+tls://shop%40example.com:p%40ss@mail.example.com") == (
        "smtp True mail.example.com 587 shop@example.com p@ss True False"
    )
    assert line(EMAIL_URL="smtp+ssl://mail.example.com:2465").endswith(" 2465   False True")
    assert line(EMAIL_URL="console://").startswith("console True ")
    bad = email(EMAIL_URL="http://mail.example.com")
    assert bad.returncode != 0 and "EMAIL_URL must be smtp://" in bad.stderr


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
