"""Satledger settings. Every setting comes from the environment; defaults are the embedded
demo setup (SQLite, regtest, the simulated node). See the README's configuration table."""

import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("SATLEDGER_VAR_DIR", str(BASE_DIR / "var")))

INSECURE_SECRET_KEY = "django-insecure-satledger-embedded-default-do-not-use-in-production"  # noqa: S105
# Without SECRET_KEY, the random key `scripts/run` writes once into var/ (per install, never
# shared), so `manage.py` works in a second terminal of the embedded setup.
_LOCAL_KEY_FILE = VAR_DIR / "secret_key"
SECRET_KEY = env_secret("SECRET_KEY", "") or (
    _LOCAL_KEY_FILE.read_text().strip() if _LOCAL_KEY_FILE.is_file() else INSECURE_SECRET_KEY
)
DEBUG = env_bool("DEBUG", False)
if not DEBUG and (SECRET_KEY == INSECURE_SECRET_KEY or SECRET_KEY.startswith("django-insecure")):
    raise ImproperlyConfigured(
        "SECRET_KEY is the insecure embedded default. Set SECRET_KEY (or SECRET_KEY_FILE) "
        "to a long random value, or set DEBUG=1 for local development."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "accounts",
    "ledger",
    "lightning",
    "lightning.fakenode",
    "onchain",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'satledger.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
}
# Server-side parameters let psycopg prepare a statement it has run five times on a
# connection: PostgreSQL then skips parsing and planning it (most of its CPU per request).
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
    "DB_PREPARED_STATEMENTS", True
):
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True, prepare_threshold=5
    )
# A pool of connections per process (psycopg_pool), for threaded servers that start and stop
# threads on demand (granian, scripts/serve): a connection belongs to the pool, not to a
# thread, so a stopped thread leaves none behind, and a process never holds more than this.
DB_POOL_SIZE = env_int("DB_POOL_SIZE", 0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DB_POOL_SIZE > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django returns the connection to the pool
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": DB_POOL_SIZE,
        "max_size": DB_POOL_SIZE,
        "timeout": env_int("DB_POOL_TIMEOUT", 10),
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # Writers take the lock at BEGIN and queue behind each other (busy timeout)
        # instead of failing half-way with "database is locked".
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
        ),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.reporting.SecretsReporterFilter"
AUTH_USER_MODEL = "accounts.User"

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
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None
)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)

# --- Lightning -------------------------------------------------------------------------------
LIGHTNING_NETWORK = env_str("LIGHTNING_NETWORK", "regtest")
if LIGHTNING_NETWORK not in {"regtest", "signet", "testnet", "mainnet"}:
    raise ImproperlyConfigured("LIGHTNING_NETWORK must be one of regtest, signet, testnet, mainnet")
# Connection string of the node created on first start when no node is registered.
LIGHTNING_DEFAULT_NODE = env_str("LIGHTNING_DEFAULT_NODE", "type=fake")
LIGHTNING_CALL_TIMEOUT_S = env_int("LIGHTNING_CALL_TIMEOUT_S", 15)
DEPOSIT_INVOICE_EXPIRY_S = env_int("DEPOSIT_INVOICE_EXPIRY_S", 3600)
# How long a withdrawal request waits for the node before answering 202 "pending".
LIGHTNING_PAY_TIMEOUT_S = env_int("LIGHTNING_PAY_TIMEOUT_S", 10)
# Default routing-fee reserve when the client gives no max_fee_msat: ppm of the amount, with
# a floor. The node's fee limit never exceeds what was reserved.
LIGHTNING_FEE_RESERVE_PPM = env_int("LIGHTNING_FEE_RESERVE_PPM", 10_000)
LIGHTNING_FEE_RESERVE_MIN_MSAT = env_int("LIGHTNING_FEE_RESERVE_MIN_MSAT", 10_000)

# --- Money limits (msat) ---------------------------------------------------------------------
WITHDRAWAL_MAX_MSAT = env_int("WITHDRAWAL_MAX_MSAT", 10_000_000_000)  # 0.1 BTC per withdrawal
WITHDRAWAL_DAILY_MAX_MSAT = env_int("WITHDRAWAL_DAILY_MAX_MSAT", 50_000_000_000)
DEPOSIT_MAX_MSAT = env_int("DEPOSIT_MAX_MSAT", 10_000_000_000)

# --- On-chain ---------------------------------------------------------------------------------
# Withdrawals below the dust limit would make a non-standard output nodes refuse to relay.
ONCHAIN_DUST_LIMIT_SAT = env_int("ONCHAIN_DUST_LIMIT_SAT", 546)
# Fee reserved per withdrawal on top of its amount (a typical output's share at a high rate);
# the unused part returns at broadcast, a share above it is the operator's expense.
ONCHAIN_FEE_RESERVE_SAT = env_int("ONCHAIN_FEE_RESERVE_SAT", 2_000)
# The batch job runs every INTERVAL minutes and sends when MIN_OUTPUTS requests wait or the
# oldest has waited MAX_WAIT minutes; one transaction pays at most MAX_OUTPUTS requests.
ONCHAIN_BATCH_INTERVAL_MIN = env_int("ONCHAIN_BATCH_INTERVAL_MIN", 10)
ONCHAIN_BATCH_MIN_OUTPUTS = env_int("ONCHAIN_BATCH_MIN_OUTPUTS", 10)
ONCHAIN_BATCH_MAX_WAIT_MIN = env_int("ONCHAIN_BATCH_MAX_WAIT_MIN", 60)
ONCHAIN_BATCH_MAX_OUTPUTS = env_int("ONCHAIN_BATCH_MAX_OUTPUTS", 250)
ONCHAIN_TARGET_CONF = env_int("ONCHAIN_TARGET_CONF", 6)
# A batch (and its withdrawals) is confirmed after this many blocks.
ONCHAIN_CONFIRMATIONS = env_int("ONCHAIN_CONFIRMATIONS", 3)
# A claimed batch the node has no record of is sent again only after this long (longer than
# any call to the node can still be running).
ONCHAIN_RESEND_AFTER_S = env_int("ONCHAIN_RESEND_AFTER_S", 300)
# Batches a request may be in that the node refused, before it is failed and refunded.
ONCHAIN_MAX_ATTEMPTS = env_int("ONCHAIN_MAX_ATTEMPTS", 3)
ONCHAIN_DEPOSIT_CONFIRMATIONS = env_int("ONCHAIN_DEPOSIT_CONFIRMATIONS", 3)
ONCHAIN_DEPOSIT_SCAN_INTERVAL_MIN = env_int("ONCHAIN_DEPOSIT_SCAN_INTERVAL_MIN", 1)
if ONCHAIN_BATCH_MAX_OUTPUTS < 1 or ONCHAIN_BATCH_MIN_OUTPUTS < 1 or ONCHAIN_CONFIRMATIONS < 1:
    raise ImproperlyConfigured("ONCHAIN_BATCH_*_OUTPUTS and ONCHAIN_CONFIRMATIONS must be >= 1")
if ONCHAIN_RESEND_AFTER_S <= LIGHTNING_CALL_TIMEOUT_S:
    raise ImproperlyConfigured("ONCHAIN_RESEND_AFTER_S must exceed LIGHTNING_CALL_TIMEOUT_S")

# --- Jobs (django-q2; the ORM broker keeps the embedded default to one database) --------------
Q_CLUSTER = {
    "name": "satledger",
    "workers": env_int("Q_WORKERS", 2),
    "timeout": 120,
    "retry": 180,
    "max_attempts": 1,
    "catch_up": False,
    "orm": "default",
}
if env_str("REDIS_URL", ""):
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = env_str("REDIS_URL", "")

# --- Portal ----------------------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
CSRF_FAILURE_VIEW = "accounts.api.errors.csrf_failure"  # JSON under /api/, the usual page elsewhere

# --- API -------------------------------------------------------------------------------------
# Requests per API key, DRF's "<n>/<second|minute|hour|day>" form. Counted in each web process
# on its own unless API_RATE_LIMIT_REDIS_URL is set.
API_RATE_LIMIT = env_str("API_RATE_LIMIT", "120/min")
if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", API_RATE_LIMIT):
    raise ImproperlyConfigured("API_RATE_LIMIT must look like 120/min (per second/min/hour/day)")
# One budget per key for every web process, kept in this Redis (one round trip per request);
# empty: each process counts on its own (accounts/api/throttling.py).
API_RATE_LIMIT_REDIS_URL = env_str("API_RATE_LIMIT_REDIS_URL", "")
# Keep API keys found in each web process, emptied by PostgreSQL notifications on any change
# (accounts/keycache.py: a revocation reaches every process within milliseconds). PostgreSQL
# only; off: every request reads its key from the database.
API_KEY_CACHE = env_bool("API_KEY_CACHE", True)
# Largest amount any API field accepts (default: 21 million BTC in msat; always < 2^63).
API_AMOUNT_MAX_MSAT = env_int("API_AMOUNT_MAX_MSAT", 21_000_000 * 100_000_000 * 1000)
# How long a request with the Idempotency-Key of a request still running waits for it to
# finish (then it gets the stored response) before answering 409 idempotency_in_progress.
IDEMPOTENCY_WAIT_S = env_int("IDEMPOTENCY_WAIT_S", 10)

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.api.permissions.HasApiScope"],
    "DEFAULT_THROTTLE_CLASSES": ["accounts.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "accounts.api.negotiation.JsonFirstContentNegotiation",
    "EXCEPTION_HANDLER": "accounts.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Satledger API",
    "DESCRIPTION": (
        "Custodial Lightning balances. All amounts are integers in millisatoshi. "
        "Authenticate with `Authorization: Bearer <api key>`; every error has the shape "
        '`{"error": {"code", "message", "details"}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
