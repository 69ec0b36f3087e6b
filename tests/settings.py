"""Settings for the test suite: the site's settings with a throwaway key and fast timings."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-key-not-secret")
os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="live-carts-tests-"))

from shop.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The apps' static files under their plain names, which WhiteNoise serves straight from the
# apps' static/ directories: no test server needs collectstatic first. The production
# storage (collected, hashed, compressed) has tests of its own: tests/test_static_files.py.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = None  # nothing is collected

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # Consumers and concurrent checkouts use the test database from several threads; SQLite's
    # shared-cache in-memory database locks badly across threads, a file does not.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}  # noqa: F405
