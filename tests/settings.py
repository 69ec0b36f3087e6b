"""Settings for the test suite: the site's settings with a throwaway key and fast timings."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-key-not-secret")
os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="live-carts-tests-"))

from shop.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # Consumers and concurrent checkouts use the test database from several threads; SQLite's
    # shared-cache in-memory database locks badly across threads, a file does not.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}  # noqa: F405
