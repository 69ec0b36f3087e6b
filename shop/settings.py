"""Site settings. Every value that comes from the environment is read here, and only here.

Environment:
  DEBUG            "1"/"true" for development (default off).
  SECRET_KEY       required when DEBUG is off; in DEBUG a local key is generated once and kept
                   in var/secret_key (never committed).
  ALLOWED_HOSTS    comma-separated host names (default: localhost,127.0.0.1,[::1]).
  REDIS_URL        absent: one node, in-memory channel layer, in-process tracker transport.
                   present: channels-redis layer and the Redis tracker transport (a cluster).
  VAR_DIR          where the SQLite file and the development key live (default: var/ in the
                   checkout, or in the working directory of an installed copy).
  DATABASE_URL     absent: SQLite file var/db.sqlite3. Otherwise any dj-database-url URL.
  STATIC_ROOT      where `manage.py collectstatic` puts the static files, which each node
                   serves from there (default: staticfiles/ in the checkout, or in the
                   working directory of an installed copy).
  TRACKER_REDIS_URL  the Redis that carries the tracker's pub/sub when it should not be
                   REDIS_URL's (default: REDIS_URL), e.g. a Redis of its own for the presence
                   fan-out, or a proxy in front of it (the partition fault tests). Needs
                   REDIS_URL: a cluster's channel layer must span its nodes too.
  TRACKER_NODE_NAME  stable name of this server process in the tracker cluster (default
                   hostname:pid); a restarted process with the same name replaces its old replica.
  TRACKER_CHANNEL_PREFIX  prefix of the tracker's Redis channels (default "tracker"): nodes
                   with different prefixes form separate clusters (a protocol change during a
                   rolling deploy: docs/protocol.md).
  TRACKER_BROADCAST_PERIOD, TRACKER_DOWN_PERIOD, TRACKER_PERMDOWN_PERIOD  the tracker's
                   timings in seconds (defaults 0.2, 5 and 300: see tracker/conf.py for what
                   each means). Positive numbers, checked together at start-up by the
                   tracker's system check (tracker.E001): down at least 2 x broadcast x
                   max_silent_periods (5), permdown longer than down. Lowered by the
                   cluster fault tests; raise down on a loaded cluster whose nodes miss
                   heartbeats.
  DASHBOARD_DIFF_INTERVAL  seconds between coalesced staff diffs (default 0.1).
  PRODUCT_PRESENCE_INTERVAL  at most one "N viewing / in N carts" update per product page
                   in this many seconds (default 1).
  METRICS          "on" (default) or "off": serve Prometheus metrics at /metrics. Off: 404.
  METRICS_ALLOWED_IPS  comma-separated client addresses or networks (CIDR) that may read
                   /metrics and the details of /healthz (default 127.0.0.1,::1); others get
                   403 from /metrics. The address is the ASGI client (REMOTE_ADDR), never
                   X-Forwarded-For: behind a proxy, list the proxy, or run daphne with
                   --proxy-headers only where clients cannot reach it directly.
                   /healthz answers everyone (load balancers need its status code), but
                   only allowed addresses, with METRICS on, see its body beyond "status"
                   (replica ids name hosts and processes; Redis errors name addresses).
  GC_TUNING        "on" (default) or "off": the cyclic garbage collector's policy in server
                   processes (shop/gc_tuning.py). After start-up, and after each full
                   collection that ends with no HTTP request in flight, the surviving objects
                   are frozen (gc.freeze()): a full collection then walks only what was
                   allocated since, never the sockets held, and its pauses stay short however
                   many sockets the process holds. Off: Python's defaults. Pauses are measured
                   either way (/metrics: gc_pause_seconds, gc_pause_max_seconds).
  GC_THRESHOLD     "g0,g1,g2", the collector's thresholds with GC_TUNING on (default
                   700,10,2): a young collection after g0 net allocations, a middle one every
                   g1 young ones, a full one every g2 middle ones (CPython adds: and only once
                   the objects kept since the last full one are a quarter of those it kept).
                   How much a full collection walks grows with g0 x g1 x g2. Positive
                   integers; needs GC_TUNING on (off keeps Python's 700,10,10).
"""

import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

# A source checkout keeps var/ and staticfiles/ beside manage.py; an installed copy (pip
# install .) keeps them in the directory it is run from, never inside site-packages.
_CHECKOUT = Path(__file__).resolve().parent.parent
BASE_DIR = _CHECKOUT if (_CHECKOUT / "manage.py").is_file() else Path.cwd()
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {value!r}")


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of seconds, not {value!r}") from None


def _env_count(name: str, default: int) -> int:
    """A whole number of at least 0 (0 meaning no limit)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise ImproperlyConfigured(f"{name} must be a whole number (0: no limit), not {value!r}")
    return int(value)


def _env_seconds(name: str) -> float | None:
    """A positive, finite number of seconds, or None (the default) when unset."""
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    seconds = _env_float(name, 0.0)
    if not 0 < seconds < float("inf"):
        raise ImproperlyConfigured(f"{name} must be a positive number of seconds, not {value!r}")
    return seconds


def _env_networks(name: str, default: str) -> list[str]:
    """Comma-separated addresses or CIDR networks, checked here so a typo fails at start."""
    networks = []
    for part in (os.environ.get(name) or default).split(","):
        if not part.strip():
            continue
        try:
            networks.append(str(ipaddress.ip_network(part.strip(), strict=False)))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must list IP addresses or networks, not {part.strip()!r}"
            ) from None
    return networks


def _email_settings(url: str) -> dict[str, object]:
    """Django's EMAIL_* settings from EMAIL_URL (see the "Email" block below)."""
    parts = urlsplit(url)
    if parts.scheme == "console":
        return {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}
    if parts.scheme not in {"smtp", "smtp+tls", "smtp+ssl"} or not parts.hostname:
        raise ImproperlyConfigured(
            "EMAIL_URL must be smtp://, smtp+tls:// or smtp+ssl://USER:PASSWORD@HOST:PORT, "
            "or console://"
        )
    try:
        port = parts.port or {"smtp": 25, "smtp+tls": 587, "smtp+ssl": 465}[parts.scheme]
    except ValueError:
        raise ImproperlyConfigured("EMAIL_URL has a port that is not a number") from None
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": parts.hostname,
        "EMAIL_PORT": port,
        "EMAIL_HOST_USER": unquote(parts.username or ""),
        "EMAIL_HOST_PASSWORD": unquote(parts.password or ""),
        "EMAIL_USE_TLS": parts.scheme == "smtp+tls",
        "EMAIL_USE_SSL": parts.scheme == "smtp+ssl",
    }


def _env_gc_threshold(name: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
    """Three positive integers "g0,g1,g2" for gc.set_threshold."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    parts = value.split(",")
    try:
        g0, g1, g2 = (int(part) for part in parts)
    except ValueError:
        g0 = g1 = g2 = 0
    threshold = (g0, g1, g2)
    if min(threshold) < 1:
        raise ImproperlyConfigured(
            f"{name} must be three positive integers g0,g1,g2 (e.g. 700,10,2), not {value!r}"
        )
    return threshold


def _local_secret_key() -> str:
    """A development key generated on first use and kept out of the repository."""
    path = VAR_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    path.write_text(key)
    path.chmod(0o600)
    return key


DEBUG = _env_bool("DEBUG")
SECRET_KEY = os.environ.get("SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment, or set DEBUG=1 for development."
        )
    SECRET_KEY = _local_secret_key()

ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if h.strip()
]

REDIS_URL = os.environ.get("REDIS_URL") or None
TRACKER_REDIS_URL = os.environ.get("TRACKER_REDIS_URL") or REDIS_URL
if TRACKER_REDIS_URL and not REDIS_URL:
    raise ImproperlyConfigured(
        "TRACKER_REDIS_URL needs REDIS_URL: without it the channel layer stays in-process, "
        "and shoppers on other nodes would never hear of their cart's changes"
    )

INSTALLED_APPS = [
    "daphne",
    # Before django.contrib.admin: the site's layout and its registration/ pages (login,
    # password reset) are shop's templates, and the admin ships pages of the same names.
    "shop",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "tracker",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (STORAGES below) are answered here, before anything else runs for them.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before the session middleware: it tells sockets of an ended login once the session is
    # saved (shop/login_state.py).
    "shop.login_state.LoginStateMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "shop.root_urls"
ASGI_APPLICATION = "shop.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],  # every template ships with its app (the site's own: shop/templates)
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=60,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several daphne processes may share one SQLite file: wait for locks instead of failing,
    # and take the write lock at BEGIN so concurrent checkouts serialise cleanly. Connections
    # are kept for good (one per thread: a server process reaches the database from its one
    # sync thread): opening one costs more than most queries (the file, the PRAGMAs, Django's
    # SQL functions), and in WAL mode an idle connection holds no lock.
    DATABASES["default"]["CONN_MAX_AGE"] = None
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "shop:index"
LOGOUT_REDIRECT_URL = "shop:index"

SESSION_COOKIE_AGE = 60 * 60 * 24 * 30  # carts outlive a browser restart

# -- Shopper identity and login state (shop/identity.py, shop/login_state.py) --------------
# An anonymous shopper's cart id lives in this signed cookie (as long as a session), so a
# page view by a visitor without cookies writes nothing to the database.
CART_COOKIE_NAME = "cart"
# Open shopper sockets per shopper (session, or anonymous cart) and per client address, on
# each server process (shop/socket_limits.py); 0 lifts a limit. Behind a proxy the address
# is the proxy's unless daphne runs with --proxy-headers (docs/deployment.md).
SHOPPER_SOCKETS_PER_SESSION = _env_count("SHOPPER_SOCKETS_PER_SESSION", 30)
SHOPPER_SOCKETS_PER_ADDRESS = _env_count("SHOPPER_SOCKETS_PER_ADDRESS", 500)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files: every node serves them itself, through WhiteNoise (daphne has no static file
# handler). `manage.py collectstatic` gathers the apps' files into STATIC_ROOT under hashed
# names (shop/shop.1f2e3d4c5b6a.css), also gzipped; pages link those names, and WhiteNoise
# serves them with a year's `Cache-Control: immutable`: a changed file is a new name. In
# DEBUG, pages link the plain names, which WhiteNoise serves from the apps' static/
# directories as they change: development needs no collectstatic.
STATIC_URL = "static/"
STATIC_ROOT: Path | None = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis with a pool that waits for a free connection (shop/channel_layer.py)
            "BACKEND": "shop.channel_layer.WaitingRedisChannelLayer",
            # channels-redis waits for a consumer's next message with a BZPOPMIN that blocks
            # 5 s; redis-py 8 times socket reads out after 5 s by default, which cut that
            # wait short and closed every idle websocket (1011). Reads may take longer than
            # the wait, and a dead Redis is still noticed.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}]},
        }
    }
else:
    # channels' in-memory layer without its sweep on every message (shop/channel_layer.py)
    CHANNEL_LAYERS = {"default": {"BACKEND": "shop.channel_layer.LocalChannelLayer"}}

# The presence tracker (see tracker/conf.py for every option and its default; None means
# that default). Each value is parsed here; whether they go together is the tracker app's
# system check (tracker.E001), run before any server starts: a bad combination must stop
# start-up, not the replica's start.
TRACKER = {
    "redis_url": TRACKER_REDIS_URL,
    "node_name": os.environ.get("TRACKER_NODE_NAME") or None,
    "channel_prefix": os.environ.get("TRACKER_CHANNEL_PREFIX") or None,
    "broadcast_period": _env_seconds("TRACKER_BROADCAST_PERIOD"),
    "down_period": _env_seconds("TRACKER_DOWN_PERIOD"),
    "permdown_period": _env_seconds("TRACKER_PERMDOWN_PERIOD"),
    # Every tracker frame is signed with a key derived from SECRET_KEY: only the site's own
    # processes can change what the cluster shows (docs/protocol.md, tracker wire format).
    "secret": SECRET_KEY,
}

DASHBOARD_DIFF_INTERVAL = _env_float("DASHBOARD_DIFF_INTERVAL", 0.1)
# At most one product_presence message per product page in this many seconds
# (shop/product_feed.py).
PRODUCT_PRESENCE_INTERVAL = _env_seconds("PRODUCT_PRESENCE_INTERVAL") or 1.0

# /metrics and /healthz (shop/observability.py).
METRICS = _env_bool("METRICS", default=True)
METRICS_ALLOWED_IPS = _env_networks("METRICS_ALLOWED_IPS", "127.0.0.1,::1")

# The cyclic garbage collector in server processes (shop/gc_tuning.py).
GC_TUNING = _env_bool("GC_TUNING", default=True)
GC_THRESHOLD = _env_gc_threshold("GC_THRESHOLD", (700, 10, 2))
if os.environ.get("GC_THRESHOLD") and not GC_TUNING:
    raise ImproperlyConfigured(
        "GC_THRESHOLD needs GC_TUNING on: with GC_TUNING off the collector keeps Python's defaults"
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # One handler, on the root: servers like daphne configure logging too, and a second
    # handler on "tracker" would print its lines twice. Django's default config gives
    # "django" a console handler of its own in DEBUG (every runserver line twice): none.
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": [], "level": "INFO"},
        "tracker": {"level": os.environ.get("TRACKER_LOG_LEVEL", "INFO")},
    },
}

# -- Login throttling (django-axes) -----------------------------------------------------
# After LOGIN_FAILURE_LIMIT failed logins for one username from one client address, that
# username is locked out from that address (HTTP 429, registration/locked_out.html) for
# LOGIN_LOCKOUT_MINUTES; others, and the same username elsewhere, are not: no client can
# lock a user out everywhere. The address is the ASGI client (REMOTE_ADDR), as for
# /metrics. Attempts live in the database (shared by every node) and expire with the lockout.
LOGIN_FAILURE_LIMIT = _env_count("LOGIN_FAILURE_LIMIT", 5)
LOGIN_LOCKOUT_MINUTES = _env_count("LOGIN_LOCKOUT_MINUTES", 15)
if LOGIN_FAILURE_LIMIT < 1 or LOGIN_LOCKOUT_MINUTES < 1:
    raise ImproperlyConfigured("LOGIN_FAILURE_LIMIT and LOGIN_LOCKOUT_MINUTES must be at least 1")
INSTALLED_APPS.append("axes")
MIDDLEWARE.append("axes.middleware.AxesMiddleware")  # last, as axes requires
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # a lockout always ends in time
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # no row per successful login
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)  # never a forwarded header
AXES_LOCKOUT_CALLABLE = "shop.views.login_locked_out"

# -- Security headers and HTTPS --------------------------------------------------------
# Content-Security-Policy (django-csp): scripts, styles, fetches and websockets from this
# site only, no inline script or style (none of the pages has any), no framing. The
# favicon is a data: URL. 'self' covers ws:/wss: to this host.
# (After WhiteNoise: the header is for pages; scripts and stylesheets need none.)
MIDDLEWARE.insert(MIDDLEWARE.index("whitenoise.middleware.WhiteNoiseMiddleware") + 1,
                  "csp.middleware.CSPMiddleware")  # fmt: skip
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
    }
}
SECURE_REFERRER_POLICY = "same-origin"  # other sites never see a page's path

# HTTPS=1 for a site served over TLS (behind a proxy, daphne --proxy-headers must pass the
# scheme): HTTP is redirected to HTTPS (except /healthz and /metrics, which load balancers
# and Prometheus read over plain HTTP on the private network), cookies are Secure and
# __Host- prefixed (only this host, over HTTPS, can set them: a sibling host or a plain
# HTTP page cannot plant one), and HSTS tells browsers to use HTTPS only, for
# HSTS_SECONDS (default a year), subdomains included and preloadable unless
# HSTS_INCLUDE_SUBDOMAINS / HSTS_PRELOAD are off. `manage.py check --deploy` is clean.
HTTPS = _env_bool("HTTPS")
if HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SESSION_COOKIE_NAME, CSRF_COOKIE_NAME = "__Host-sessionid", "__Host-csrftoken"
    CART_COOKIE_NAME = "__Host-cart"
    SECURE_HSTS_SECONDS = _env_count("HSTS_SECONDS", 365 * 24 * 60 * 60)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = _env_bool("HSTS_PRELOAD", default=True)

# -- Email and password reset ------------------------------------------------------------
# EMAIL_URL: how the site sends mail, smtp://USER:PASSWORD@HOST:PORT (smtp+tls:// for
# STARTTLS, smtp+ssl:// for TLS from the start; user and password percent-encoded) or
# console:// (printed). Without it, DEBUG prints mail to the console and production sends
# none: then password reset is not offered (its pages answer 404, the login page has no
# link). DEFAULT_FROM_EMAIL is the sender.
EMAIL_URL = os.environ.get("EMAIL_URL") or None
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL") or "Live Carts <webmaster@localhost>"
EMAIL_TIMEOUT = 10
if EMAIL_URL:
    globals().update(_email_settings(EMAIL_URL))  # EMAIL_BACKEND, EMAIL_HOST, ...
elif DEBUG:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
PASSWORD_RESET = bool(EMAIL_URL) or DEBUG
