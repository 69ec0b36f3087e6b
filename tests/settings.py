"""Settings for the test suite: the site's settings with a throwaway key and fast timings."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-key-not-secret")
os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="live-carts-tests-"))

from shop.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
