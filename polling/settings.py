"""Settings for the polling service, all read from the environment (twelve-factor).

With no DATABASE_URL, KAFKA_BROKERS or REDIS_URL the service runs its embedded default:
SQLite, votes applied in process by the worker's own batch code, and an in-memory
channel layer. With them set it uses the real services. docs/settings.md describes every
variable, and .env.example lists them.
"""

import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from polling.env import env_bool, env_float, env_int, env_list, env_networks, env_rate, env_str
from polling.logging import log_format, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)

# A development key only exists in DEBUG mode; production refuses to start without one.
SECRET_KEY = env_str("SECRET_KEY", required=not DEBUG) or "django-insecure-development-only"
if not DEBUG and SECRET_KEY.startswith("django-insecure"):
    raise ImproperlyConfigured("SECRET_KEY must be set to a real secret when DEBUG is off.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must list the host names served when DEBUG is off.")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    # Throttles admin logins (see ADMIN_LOGIN_* below).
    "axes",
    "polls",
    "leaderboard",
    "realtime",
]

MIDDLEWARE = [
    "polling.middleware.BodySizeLimitMiddleware",
    "polling.middleware.JSONDepthMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The admin's and Swagger UI's files (see STATIC_ROOT below).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Answers a locked-out login attempt (429); last, as django-axes asks.
    "axes.middleware.AxesMiddleware",
    "polling.middleware.ReleaseDatabaseConnectionMiddleware",
]

ROOT_URLCONF = "polling.urls"
ASGI_APPLICATION = "polling.asgi.application"

# The seed's paths have no trailing slash; a redirect would drop a POST body in many clients.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The project's own pages beside the apps' (the API docs' page).
        "DIRS": [BASE_DIR / "polling" / "templates"],
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

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    # A pool, not persistent connections: under ASGI each request may run on a new
    # thread, and a kept-open connection per thread leaks until PostgreSQL runs out of
    # slots, while a new connection per request costs a login and a new backend process
    # (docs/decisions/0004-django-request-path.md).
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0, conn_health_checks=True)}
    if env_bool("DB_POOL", True):
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env_int("DB_POOL_MIN_SIZE", 2, minimum=0),
            "max_size": env_int("DB_POOL_MAX_SIZE", 16, minimum=1),
            # Seconds a request waits for a free connection before failing (503). With
            # PostgreSQL down, every request waits this long: at 10 s clients gave up
            # before hearing the 503 (tests/faults/test_postgres_outage.py).
            "timeout": env_float("DB_POOL_TIMEOUT", 3.0, minimum=0.1),
        }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / env_str("SQLITE_PATH", "db.sqlite3"),
            # IMMEDIATE takes the write lock at BEGIN, so concurrent vote batches queue
            # on the lock instead of failing with "database is locked" mid-transaction.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "polling" / "static"]
# The web process serves the static files itself (WhiteNoise): the ASGI server does
# not, and without them the admin had no styles or scripts and /api/docs no Swagger UI.
# They are found where the apps keep them, so no collectstatic is needed (the image runs
# it anyway); read once at the start.
WHITENOISE_USE_FINDERS = True
# Until collectstatic fills STATIC_ROOT, the finders serve everything: no warning line.
warnings.filterwarnings("ignore", message=r"No directory at: .*staticfiles", category=UserWarning)

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    # Token first: an anonymous request to a protected endpoint then gets 401 with
    # "WWW-Authenticate: Token" (the first class names the scheme), not a bare 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "polling.exception_handler.api_exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Polling API",
    "DESCRIPTION": (
        "Create polls, vote at high concurrency, read results and the leaderboard. "
        "Votes travel through Kafka and are counted exactly once; live results stream "
        "over WebSockets at /ws and /ws/polls/{id}."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The request bodies' cross-field rules, which serializers cannot describe (polls.api.docs).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "polls.api.docs.strict_request_bodies"],
}

# The shared cache: rate-limit counters must hold across web processes.
if env_str("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "polling.cache.SharedClientRedisCache",
            "LOCATION": env_str("REDIS_URL"),
            # A stopped or hung Redis must cost a vote milliseconds, not a stall.
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Votes -------------------------------------------------------------------------

# Largest request body the API reads; anything bigger is answered 413 before parsing.
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 16 * 1024, minimum=256)

KAFKA_BROKERS = env_list("KAFKA_BROKERS", [])
KAFKA_TOPIC = env_str("KAFKA_TOPIC", "polls")
KAFKA_TOPIC_PARTITIONS = env_int("KAFKA_TOPIC_PARTITIONS", 6, minimum=1)
# Replicas of the topics the worker creates; 0: min(3, the brokers in the cluster), with
# min.insync.replicas 2 from three replicas on (polls.kafka.topics).
KAFKA_REPLICATION_FACTOR = env_int("KAFKA_REPLICATION_FACTOR", 0, minimum=0)
KAFKA_CONSUMER_GROUP = env_str("KAFKA_CONSUMER_GROUP", "vote-workers")
# How long a vote request waits for the broker's acknowledgement before answering 503.
VOTE_PUBLISH_TIMEOUT = env_float("VOTE_PUBLISH_TIMEOUT", 5.0, minimum=0.1)
# Threads a web process gives the blocking part of votes on its lean path (a database
# read, a keyed vote's claim and record, a rate-limit sync); votes past this many wait.
VOTE_THREADS = env_int("VOTE_THREADS", 64, minimum=1)
# How long a web process keeps what a vote is checked against (the poll's status, deadline,
# voting rule and number of options) before reading it again; 0 reads it on every vote.
# A change made in this process counts at once; one made in another process (a moderator's
# close, say) is seen up to this late (docs/decisions/0005-vote-checks-off-the-hot-path.md).
VOTE_TARGET_CACHE_SECONDS = env_float("VOTE_TARGET_CACHE_SECONDS", 1.0, minimum=0)
# Seconds a client is told to wait after a 503.
VOTE_RETRY_AFTER = env_int("VOTE_RETRY_AFTER", 2, minimum=1)
# Seconds an Idempotency-Key's first request is remembered in the cache (polls.domain.idempotency);
# later, the ballot's vote rows still make a retry count once.
IDEMPOTENCY_KEY_TTL = env_int("IDEMPOTENCY_KEY_TTL", 24 * 3600, minimum=60)
# Producer batching: how long a send waits for others to share its request.
KAFKA_LINGER_MS = env_int("KAFKA_LINGER_MS", 2, minimum=0)
VOTE_BATCH_SIZE = env_int("VOTE_BATCH_SIZE", 5000, minimum=1)
VOTE_BATCH_WAIT_MS = env_int("VOTE_BATCH_WAIT_MS", 200, minimum=0)
# Threads of the worker that apply batches, each on its own database connection, each to
# partitions no other one has at the time (one on SQLite, which has one writer).
VOTE_APPLY_THREADS = env_int("VOTE_APPLY_THREADS", 2, minimum=1)
# How long the broker may hold the worker's fetch request when it has no new votes for it.
# kafka-python keeps one fetch in flight per broker, so a busy partition's votes can wait
# this long behind a fetch held for idle ones (docs/decisions/0008-worker-throughput.md).
VOTE_FETCH_MAX_WAIT_MS = env_int("VOTE_FETCH_MAX_WAIT_MS", 50, minimum=1)
# How many bytes of new votes the broker gathers for a fetch before answering it (within
# VOTE_FETCH_MAX_WAIT_MS): at low rates a batch per wait, not a transaction and an offset
# commit for every vote or two; a backlog still fills the fetch at once.
VOTE_FETCH_MIN_BYTES = env_int("VOTE_FETCH_MIN_BYTES", 65536, minimum=1)
# Python's thread switch interval in the worker (sys.setswitchinterval), in ms. Its polling
# thread parses fetched records while the applying threads wait on the database; a short
# interval gives an applying thread whose statement has returned the GIL back sooner.
# The web process keeps Python's default (docs/decisions/0008-worker-throughput.md).
WORKER_SWITCH_INTERVAL_MS = env_float("WORKER_SWITCH_INTERVAL_MS", 1.0, minimum=0.05)
# The worker reads its fetched records with polling.patches.kafka_records, faster than kafka-python's
# reader. It takes the place of a kafka-python internal (pinned in requirements.txt);
# off, kafka-python reads them.
WORKER_LEAN_RECORDS = env_bool("WORKER_LEAN_RECORDS", True)

LEADERBOARD_DEFAULT_LIMIT = env_int("LEADERBOARD_DEFAULT_LIMIT", 10, minimum=1)
LEADERBOARD_MAX_LIMIT = env_int("LEADERBOARD_MAX_LIMIT", 100, minimum=1)

POLL_MAX_OPTIONS = env_int("POLL_MAX_OPTIONS", 10, minimum=2)
# Off by default: the seed's API lets anyone create polls.
POLLS_CREATE_REQUIRES_AUTH = env_bool("POLLS_CREATE_REQUIRES_AUTH", False)
VOTER_COOKIE_MAX_AGE = env_int("VOTER_COOKIE_MAX_AGE", 365 * 24 * 3600, minimum=60)

# Rate limits as "<count>/<s|min|hour|day>", checked at start; "0" turns one off. A whole
# venue can share one address (its Wi-Fi, a mobile carrier's NAT), so per address only
# what no audience sends is refused; abuse is bounded per voter token or user. The
# rates each default allows are in docs/audience.md.
RATE_LIMIT_DEFAULTS = {
    "RATE_LIMIT_VOTES_PER_ADDRESS": "60000/min",
    "RATE_LIMIT_NEW_VOTERS_PER_ADDRESS": "6000/min",
    "RATE_LIMIT_VOTES_PER_VOTER": "60/min",
    "RATE_LIMIT_POLLS_PER_ADDRESS": "60/min",
}
RATE_LIMIT_VOTES_PER_ADDRESS = env_rate(
    "RATE_LIMIT_VOTES_PER_ADDRESS", RATE_LIMIT_DEFAULTS["RATE_LIMIT_VOTES_PER_ADDRESS"]
)
RATE_LIMIT_NEW_VOTERS_PER_ADDRESS = env_rate(
    "RATE_LIMIT_NEW_VOTERS_PER_ADDRESS", RATE_LIMIT_DEFAULTS["RATE_LIMIT_NEW_VOTERS_PER_ADDRESS"]
)
RATE_LIMIT_VOTES_PER_VOTER = env_rate("RATE_LIMIT_VOTES_PER_VOTER", RATE_LIMIT_DEFAULTS["RATE_LIMIT_VOTES_PER_VOTER"])
RATE_LIMIT_POLLS_PER_ADDRESS = env_rate(
    "RATE_LIMIT_POLLS_PER_ADDRESS", RATE_LIMIT_DEFAULTS["RATE_LIMIT_POLLS_PER_ADDRESS"]
)
RATE_LIMIT_CACHE = "default"
# With Redis, a request is decided in process and its count reaches Redis in the
# background, at most this often; a process learns the others' counts at these syncs.
# 0 counts in Redis during each request instead (docs/api.md, Rate limits).
RATE_LIMIT_SYNC_MS = env_int("RATE_LIMIT_SYNC_MS", 20, minimum=0)

# --- Real time -----------------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL")
# Which channels_redis layer carries broadcasts when REDIS_URL is set. "pubsub" publishes
# one message per group send and each web process fans it out to its own viewers;
# "core" writes one message per viewer into Redis, a cost that grows with the audience
# (docs/decisions/0010-channel-layer-pubsub.md).
REDIS_CHANNEL_LAYER = env_str("REDIS_CHANNEL_LAYER", "pubsub")
if REDIS_CHANNEL_LAYER not in ("pubsub", "core"):
    raise ImproperlyConfigured(f"REDIS_CHANNEL_LAYER={REDIS_CHANNEL_LAYER!r} must be 'pubsub' or 'core'.")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": (
                "channels_redis.pubsub.RedisPubSubChannelLayer"
                if REDIS_CHANNEL_LAYER == "pubsub"
                else "channels_redis.core.RedisChannelLayer"
            ),
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Broadcasts of one poll's totals per second, per broadcasting process, whatever the vote
# rate: updates in between are folded into the next send, which reads the latest totals.
BROADCAST_MAX_PER_SECOND = env_float("BROADCAST_MAX_PER_SECOND", 10.0, minimum=0.1)
# How long one round of group sends may take before it counts as failed (Redis down or
# stalled); the polls it carried are sent again a second later, their totals read afresh.
BROADCAST_SEND_TIMEOUT = env_float("BROADCAST_SEND_TIMEOUT", 2.0, minimum=0.1)
# Write broadcast frames straight to uvicorn's sockets (polling.patches.uvicorn_websockets).
# It relies on uvicorn's websockets-sansio protocol (pinned in requirements.txt); off,
# every viewer sends through its ordinary ASGI send, slower but independent of it.
WS_DIRECT_WRITE = env_bool("WS_DIRECT_WRITE", True)
# The share of a server process's loop thread that writing one watched group may take:
# after a write that cost C seconds of the thread's CPU, the group rests until C / share
# has passed since the write began (at most a second), updates arriving meanwhile folded
# into the next write (realtime.fanout). A small audience is never held back (the
# broadcaster's 10 a second come first); a large one gets fewer, fresher updates, and
# the votes answered by the same process keep their share of it. 0: no limit (updates
# still fold while a write is under way).
WS_FANOUT_CPU_SHARE = env_float("WS_FANOUT_CPU_SHARE", 0.2, minimum=0.0, maximum=1.0)
# WebSocket connections one server process accepts; the next ones are closed at once
# with code 1013 (try again later), so a flood cannot exhaust its memory or descriptors.
WS_MAX_CONNECTIONS = env_int("WS_MAX_CONNECTIONS", 15000, minimum=1)
# Polls in the snapshot a client of ws://host/ws receives on connect, newest first.
WS_SNAPSHOT_POLLS = env_int("WS_SNAPSHOT_POLLS", 20, minimum=0)

# --- Production hardening ------------------------------------------------------------

SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Sent on every response (polling.middleware.SecurityHeadersMiddleware): scripts, styles
# and everything else from this site's own files only, no inline code, no framing. New
# pages inherit it; one that needs more sets its own header (docs/security.md).
CONTENT_SECURITY_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    # data: for the icons Swagger UI and the live page draw inline.
    "img-src": ["'self'", "data:"],
    # 'self' covers ws:// and wss:// of the same host (the live page's WebSocket).
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# Off by default so that plain-HTTP setups (compose on localhost, tests) work; turn on
# behind TLS. `manage.py check --deploy` passes with the values in .env.example.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# "HTTP_X_FORWARDED_PROTO,https" behind a proxy that terminates TLS and sets that header.
_proxy_ssl_header = env_list("SECURE_PROXY_SSL_HEADER", [])
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) if len(_proxy_ssl_header) == 2 else None

# Admin logins throttled by django-axes: after ADMIN_LOGIN_FAILURE_LIMIT wrong passwords
# for one username from one address, that pair is refused (429), the right password too,
# until ADMIN_LOGIN_LOCKOUT_MINUTES pass without another try. Attempts are kept in the
# database (SQLite or PostgreSQL alike; staff see them in the admin), not in the cache.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("ADMIN_LOGIN_LOCKOUT_MINUTES", 15.0, minimum=0.1))
# The pair, not the address alone: everyone behind one NAT or proxy shares an address,
# and one attacker there would lock every moderator out.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
# No start-up banner (a process's log is one JSON object a line); lockouts still warn.
AXES_VERBOSE = False

# --- Operations ------------------------------------------------------------------------

# Logs go to stderr: one JSON object per line in production (for log collectors), plain
# text in DEBUG; LOG_FORMAT=json|plain overrides either.
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOG_FORMAT = log_format(debug=DEBUG)
LOGGING = logging_config(level=LOG_LEVEL, fmt=LOG_FORMAT)

# Every response gets the security headers; request metrics time the rest of the stack;
# probes and scrapes are answered next, ahead of the Host header check (see polling.health).
MIDDLEWARE = [
    "polling.middleware.SecurityHeadersMiddleware",
    "polling.metrics.RequestMetricsMiddleware",
    "polling.health.ProbeMiddleware",
    *(
        name
        for name in MIDDLEWARE
        if name not in ("polling.metrics.RequestMetricsMiddleware", "polling.health.ProbeMiddleware")
    ),
]

# One access-log line per HTTP request (logger "polling.access"), through the formatter above.
ACCESS_LOG = env_bool("ACCESS_LOG", True)
# How long /readyz waits for each service (they are checked side by side).
READYZ_TIMEOUT = env_float("READYZ_TIMEOUT", 1.0, minimum=0.1)
# Who may read the web processes' /metrics: a client whose own address (not a
# forwarded one) is in these networks and whose request came through no proxy, or one
# that sends "Authorization: Bearer <METRICS_TOKEN>". Loopback only by default; "none"
# leaves the token alone. See docs/security.md.
METRICS_ALLOWED_ADDRESSES = env_networks("METRICS_ALLOWED_ADDRESSES", ["127.0.0.1", "::1"])
METRICS_TOKEN = env_str("METRICS_TOKEN")
if METRICS_TOKEN is not None and len(METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 16 characters long (a random secret).")
# The vote worker serves its Prometheus metrics on this port; 0 turns that off.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0, minimum=0)
# Seconds between the vote worker's progress lines (votes applied, batches, lag); 0: none.
WORKER_PROGRESS_INTERVAL = env_float("WORKER_PROGRESS_INTERVAL", 30.0, minimum=0)
# Seconds votes may wait while the worker applies nothing before it logs an ERROR and
# counts a stall (polling_worker_stalls_total); 0 turns the watchdog off.
WORKER_STALL_TIMEOUT = env_float("WORKER_STALL_TIMEOUT", 60.0, minimum=0)
# On a stall the worker stops (exit status 1) so that its supervisor starts it again.
WORKER_EXIT_ON_STALL = env_bool("WORKER_EXIT_ON_STALL", False)
