"""`pip install .` (not editable) ships a working site: templates, static files, migrations
and management commands travel inside the packages, and the installed copy serves the shop
from a directory that has nothing of the checkout.

To keep this fast and offline, the copy goes into a fresh virtualenv made without pip, whose
site-packages gets one .pth line naming the test environment's site-packages: the
dependencies (Django, channels, daphne...) come from there, already installed, while the
project itself is built and installed into the new environment by the test environment's
pip (`--python`, `--no-deps`, `--no-index`, `--no-build-isolation` with the setuptools of
the dev extra). A plain path in a .pth file is only appended to sys.path (the .pth files
inside that directory, such as the editable install's finder of this checkout, are not run),
and the new environment's own site-packages comes first: `shop` is imported from the
installed copy, which the test checks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
# What a clone holds but a build must not see (and what it would write into the source).
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "var", "staticfiles", "build", "*.egg-info", "__pycache__", ".*_cache"
)
# Variables of the outer environment that would configure the site differently.
SITE_VARIABLES = {
    "PYTHONPATH", "DJANGO_SETTINGS_MODULE", "SECRET_KEY", "DEBUG", "VAR_DIR", "STATIC_ROOT",
    "DATABASE_URL", "REDIS_URL", "TRACKER_REDIS_URL", "TRACKER_NODE_NAME",
}  # fmt: skip

RESOLVE = """
import json, django, shop
django.setup()
from django.contrib.staticfiles import finders
from django.core.management import get_commands
from django.db.migrations.loader import MigrationLoader
from django.template.loader import get_template

templates = ["base.html", "registration/login.html", "registration/locked_out.html",
             "shop/index.html", "dashboard/index.html"]
static = ["shop/cart.js", "shop/shop.css", "dashboard/dashboard.js", "dashboard/dashboard.css"]
commands = ["seed_catalog", "purge_carts", "runcluster", "simulate_shoppers",
            "tracker_list", "tracker_status"]
print(json.dumps({
    "shop": shop.__file__,
    "templates": {name: get_template(name).origin.name for name in templates},
    "static": {name: finders.find(name) for name in static},
    "migrations": sorted(
        name for app, name in MigrationLoader(None).disk_migrations if app == "shop"
    ),
    "commands": {name: get_commands().get(name) for name in commands},
}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the project installed from a copy of the checkout, not
    editable; returns its python."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
         "--no-index", "--no-build-isolation", source],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    shutil.rmtree(source)  # nothing of the checkout is left to import from
    return python


def run_elsewhere(python: Path, cwd: Path, *args: str, **env: str) -> str:
    """`python args` from `cwd`, as shop.settings with a clean site environment."""
    environment = {k: v for k, v in os.environ.items() if k not in SITE_VARIABLES}
    environment.update(env, DJANGO_SETTINGS_MODULE="shop.settings")
    result = subprocess.run(
        [python, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_templates_static_files_migrations_and_commands_ship(installed, tmp_path):
    found = json.loads(run_elsewhere(installed, tmp_path, "-c", RESOLVE, DEBUG="1"))
    site_packages = installed.parent.parent
    assert Path(found["shop"]).is_relative_to(site_packages)
    for name, origin in found["templates"].items():
        assert origin and Path(origin).is_relative_to(site_packages), name
    for name, path in found["static"].items():
        assert path and Path(path).is_relative_to(site_packages), name
    assert found["migrations"] == ["0001_initial"]
    assert found["commands"] == {
        "seed_catalog": "shop",
        "purge_carts": "shop",
        "runcluster": "shop",
        "simulate_shoppers": "shop",
        "tracker_list": "tracker",
        "tracker_status": "tracker",
    }
    # DEBUG off: the installed apps' files are collected into the working directory.
    run_elsewhere(installed, tmp_path, "-m", "django", "collectstatic", "--noinput",
                  SECRET_KEY="packaging-test-key-" + "Zt8w" * 12)  # fmt: skip
    paths = json.loads((tmp_path / "staticfiles" / "staticfiles.json").read_text())["paths"]
    assert {"shop/cart.js", "shop/shop.css", "dashboard/dashboard.js"} <= set(paths)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_daphne_serves_the_installed_shop_from_another_directory(installed, tmp_path):
    """DEBUG=1 as a developer would try it: var/ (database, key) in the working directory."""
    run_elsewhere(installed, tmp_path, "-m", "django", "migrate", "--noinput", DEBUG="1")
    run_elsewhere(installed, tmp_path, "-m", "django", "seed_catalog", DEBUG="1")
    assert (tmp_path / "var" / "db.sqlite3").is_file()
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k not in SITE_VARIABLES}
    environment.update(DJANGO_SETTINGS_MODULE="shop.settings", DEBUG="1")
    log = tmp_path / "daphne.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [installed, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
             "shop.asgi:application"],
            cwd=tmp_path, env=environment, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()
            try:
                status, page = get(url + "/")
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert status == 200, log.read_text()
        assert 'src="/static/shop/cart.js"' in page and "product-card" in page
        assert get(url + "/static/shop/cart.js")[0] == 200
        status, login = get(url + "/accounts/login/")
        assert status == 200 and "Log in" in login and "site-header" in login
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
