"""Guardsite settings.

Everything comes from environment variables with defaults that make the
*embedded* configuration work with nothing but Python: SQLite and a Celery
broker on the filesystem (kombu's filesystem transport). Production sets
DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
# Runtime state of the embedded configuration (SQLite file, broker folders,
# model cache, training outputs). Git-ignored.
VAR_DIR = Path(os.environ.get("GUARDSITE_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY") or "insecure-dev-key-set-SECRET_KEY-in-production"
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "ninja",  # serves the API docs' Swagger UI from local static files (no CDN)
    "guardsite",
    "guard",
    "policies",
    "moderation",
    "trainer",
    "evaluation",
    "ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "guardsite.middleware.ApiJsonErrorsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "guardsite.middleware.LoginRequiredEverywhereMiddleware",
]

ROOT_URLCONF = "guardsite.urls"
WSGI_APPLICATION = "guardsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "guardsite" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "guardsite.roles.roles_context",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'guardsite.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The web server and the worker write concurrently; wait instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
    # A transaction that reads and then writes (claiming a review task) must take the write lock at BEGIN:
    # a deferred one that upgrades while the worker writes gets "database is locked" at once, without waiting.
    # WAL: readers (every page) never wait for the worker's writes.
    DATABASES["default"]["OPTIONS"].update(transaction_mode="IMMEDIATE", init_command="PRAGMA journal_mode=WAL;")
else:
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = 5

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "guardsite" / "static"]
# Serve app static files straight from the source tree (no collectstatic step
# needed for the embedded setup); production may still run collectstatic.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# --- security (production values when DEBUG is off; `check --deploy` clean) ---
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the cookie-less meta tag; keep default
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG and SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None

# --- Celery ---
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("out", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        "control_folder": str(BROKER_DIR / "control"),
    }
else:
    # Longer than the longest job (a training run), so Redis does not hand a
    # still-running, unacknowledged task to a second worker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 12 * 3600)}
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# --- the guard ---
# The default guard: GUARD_MODEL_DIR, else the adapter shipped in models/ (see
# guard/shipped.py), else the embedded base. GUARD_MODEL_DIR=embedded: the untrained base.
SHIPPED_GUARD_DIR = BASE_DIR / "models" / "guardsite-guard-270m"
GUARD_MODEL_DIR = os.environ.get("GUARD_MODEL_DIR") or (
    str(SHIPPED_GUARD_DIR) if (SHIPPED_GUARD_DIR / "adapter_config.json").is_file() else ""
)
GUARD_MODEL_CACHE = Path(os.environ.get("GUARD_MODEL_CACHE") or Path.home() / ".cache" / "guardsite" / "models")
GUARD_DEVICE = os.environ.get("GUARD_DEVICE") or "auto"  # auto | cpu | cuda
# Hidden-state features of the latent heads (guard/features.py), one SQLite file per backbone.
GUARD_FEATURE_CACHE = os.environ.get("GUARD_FEATURE_CACHE") or str(GUARD_MODEL_CACHE.parent / "features")
# Serving keeps no judged text on disk unless this is on (benchmarks, repeated evaluations of a corpus).
GUARD_FEATURE_CACHE_IN_SERVING = env_bool("GUARD_FEATURE_CACHE_IN_SERVING", False)
# Heads with a peak head read every prompt over 64 tokens whole for a harmful request hidden in ordinary text
# (guard/peak_reading.py): about 0.8 s per long prompt on 2 CPU cores. Off: the prompt head alone decides.
GUARD_PEAK_READING = env_bool("GUARD_PEAK_READING", True)
GUARD_MAX_INPUT_TOKENS = env_int("GUARD_MAX_INPUT_TOKENS", 2048)
GUARD_MAX_TEXT_CHARS = env_int("GUARD_MAX_TEXT_CHARS", 32000)
GUARD_MAX_NEW_TOKENS = env_int("GUARD_MAX_NEW_TOKENS", 96)
GUARD_OPENAI_BASE_URL = os.environ.get("GUARD_OPENAI_BASE_URL") or ""
GUARD_OPENAI_API_KEY = os.environ.get("GUARD_OPENAI_API_KEY") or ""
GUARD_BACKEND = os.environ.get("GUARD_BACKEND") or "transformers"  # transformers | vllm | openai
# Load the production guard before taking traffic: in gpu-infer workers and/or gunicorn web workers
# (guard/preload.py). "workers,web" (default), "workers", "web", or 0 (off: the tests set it).
GUARD_PRELOAD = os.environ.get("GUARD_PRELOAD", "workers,web")
# The preload runs in Celery's worker_process_init, which Celery gives 4 s before it kills the pool
# process as hung: loading a model takes longer, so the limit is raised while workers preload.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = float(
    os.environ.get("CELERY_WORKER_PROC_ALIVE_TIMEOUT")
    or (4.0 if GUARD_PRELOAD.strip().lower() in ("", "0", "off", "false", "no", "none", "web") else 300.0)
)
SHARED_DATASETS_DIR = Path(os.environ.get("SHARED_DATASETS_DIR") or BASE_DIR.parent / "shared" / "datasets")
TRAINING_OUTPUT_DIR = Path(os.environ.get("TRAINING_OUTPUT_DIR") or VAR_DIR / "training")
# Policy-following pairs a training job judges with its candidate and the baseline (0: all 72).
TRAINER_EVAL_POLICY_FOLLOWING_PAIRS = env_int("TRAINER_EVAL_POLICY_FOLLOWING_PAIRS", 0)

# --- moderation ---
MODERATION_MAX_BATCH = env_int("MODERATION_MAX_BATCH", 1000)
MODERATION_MICRO_BATCH_SIZE = env_int("MODERATION_MICRO_BATCH_SIZE", 32)
MODERATION_RATE_LIMIT_PER_MINUTE = env_int("MODERATION_RATE_LIMIT_PER_MINUTE", 6000)
# The largest request body (not counting uploaded files) the app reads: an API request above it
# is answered 413 with a JSON message. 1 MiB holds a batch of a few hundred ordinary items.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BODY_BYTES", 1024 * 1024)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
