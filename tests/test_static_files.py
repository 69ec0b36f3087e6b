"""Static files as production serves them: collected by `collectstatic` under hashed names,
gzipped, and served by every daphne node itself through WhiteNoise with a year's
`Cache-Control: immutable`, under the site's own settings (DEBUG off). The rest of the
suite serves the apps' files under their plain names (tests/settings.py)."""

import gzip
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.daphne_server import DaphneServer, manage, prepare_database, server_env

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "static-files-test-key-" + "k3Vq9" * 10
YEAR = "max-age=315360000"


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def site_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a production node: shop.settings, a key, its own STATIC_ROOT."""
    database = prepare_database(tmp_path / "db.sqlite3")
    return server_env(
        tmp_path,
        database,
        extra={
            "DJANGO_SETTINGS_MODULE": "shop.settings",
            "SECRET_KEY": SECRET_KEY,
            "STATIC_ROOT": str(tmp_path / "static"),
        },
    )


def test_a_node_serves_collected_hashed_files_cached_for_a_year(tmp_path, site_env):
    before = manage("check", env=site_env)
    assert "(shop.W001) The static files are not collected" in before.stderr
    manage("collectstatic", "--noinput", env=site_env)
    assert "shop.W001" not in manage("check", env=site_env).stderr
    manifest = json.loads((tmp_path / "static" / "staticfiles.json").read_text())["paths"]

    node = DaphneServer(
        Path(site_env["DATABASE_URL"].removeprefix("sqlite:///")),
        var_dir=tmp_path,
        env={k: site_env[k] for k in ("DJANGO_SETTINGS_MODULE", "SECRET_KEY", "STATIC_ROOT")},
    )
    with node:
        status, headers, body = get(node.url + "/")
        assert status == 200, node.logs()
        page = body.decode()
        assert f'href="/static/{manifest["shop/shop.css"]}"' in page
        assert f'src="/static/{manifest["shop/cart.js"]}"' in page
        assert re.fullmatch(r"shop/cart\.[0-9a-f]{12}\.js", manifest["shop/cart.js"])
        assert "script-src 'self'" in headers["Content-Security-Policy"]  # pages keep theirs

        for name in ("shop/shop.css", "shop/cart.js", "dashboard/dashboard.js"):
            app = name.split("/")[0]
            url = f"{node.url}/static/{manifest[name]}"
            status, headers, body = get(url)
            assert status == 200
            assert YEAR in headers["Cache-Control"] and "immutable" in headers["Cache-Control"]
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert body == (ROOT / app / "static" / name).read_bytes()
            status, headers, zipped = get(url, **{"Accept-Encoding": "gzip"})
            assert headers.get("Content-Encoding") == "gzip"
            assert gzip.decompress(zipped) == body

        # The plain name still answers (a page cached before a deploy), briefly cached.
        status, headers, _ = get(node.url + "/static/shop/shop.css")
        assert status == 200 and YEAR not in headers["Cache-Control"]
        assert get(node.url + "/static/shop/missing.css")[0] == 404
