"""Settings shared by every environment. Everything configurable comes from the environment."""

from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("CONCORD_VAR_DIR", str(BASE_DIR / "var")))

SECRET_KEY = env_str("SECRET_KEY", "concord-local-development-key-not-for-production")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "axes",
    "csp",
    "annotate",
    "curation",
    "training",
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
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, so that it turns a locked-out login's response into the lockout page (concord.login_guard).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "concord.urls"
WSGI_APPLICATION = "concord.wsgi.application"

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
                "concord.navigation.project_nav",
            ],
        },
    },
]

# Each process keeps its connections in a psycopg pool (Django's native pooling) of at most one per web thread
# (CONCORD_WEB_THREADS, set by concord/gunicorn.conf.py): a request takes one when it first queries and hands it
# back when it ends, however it ends (a client that went away included), so the web server holds at most
# workers x threads connections. CONCORD_DB_POOL=0 turns the pool off (then DATABASE_CONN_MAX_AGE applies); a
# process that queries from more threads than that (a threaded Celery pool, a script) raises
# CONCORD_DB_POOL_MAX_SIZE, or a thread waits CONCORD_DB_POOL_TIMEOUT seconds for a connection and then fails.
DATABASE_POOL = env_bool("CONCORD_DB_POOL", True)
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", "postgres://concord@127.0.0.1:55432/concord"),
        # Django refuses persistent connections beside a pool: the pool keeps them.
        conn_max_age=0 if DATABASE_POOL else env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,  # with the pool: a connection is checked when it is taken
    )
}
if DATABASE_POOL:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("CONCORD_DB_POOL_MIN_SIZE", 1),
        "max_size": env_int("CONCORD_DB_POOL_MAX_SIZE", env_int("CONCORD_WEB_THREADS", 4)),
        "timeout": env_int("CONCORD_DB_POOL_TIMEOUT", 30),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "annotate:project_list"
LOGOUT_REDIRECT_URL = "login"

# Password guessing (django-axes, concord.login_guard): a username is locked out at one address after
# CONCORD_LOGIN_FAILURE_LIMIT failed logins from there, and an address after CONCORD_LOGIN_ADDRESS_FAILURE_LIMIT
# failures whatever the usernames, a username everywhere after CONCORD_LOGIN_USERNAME_FAILURE_LIMIT failures from
# any addresses, until CONCORD_LOGIN_COOLOFF_MINUTES have passed since the last failure (a try
# while locked out, right password or not, is another failure). The login form and the admin's answer 429 with
# Retry-After. Failures are rows in the database, so every worker sees them; an admin unlocks in the admin (Axes >
# Access attempts: delete the rows) or with `manage.py axes_reset_username NAME` or `axes_reset_ip ADDRESS`.
# Tests and scripts log in with Client.force_login: authenticate() without a request is refused.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_HANDLER = "concord.login_guard.LoginGuardHandler"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = env_int("CONCORD_LOGIN_FAILURE_LIMIT", 5)
CONCORD_LOGIN_ADDRESS_FAILURE_LIMIT = env_int("CONCORD_LOGIN_ADDRESS_FAILURE_LIMIT", 30)
CONCORD_LOGIN_USERNAME_FAILURE_LIMIT = env_int("CONCORD_LOGIN_USERNAME_FAILURE_LIMIT", 50)
AXES_COOLOFF_TIME = timedelta(minutes=max(1, env_int("CONCORD_LOGIN_COOLOFF_MINUTES", 15)))
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True
AXES_VERBOSE = False  # no banner on every manage.py command; failures are still logged
AXES_LOCKOUT_CALLABLE = "concord.login_guard.lockout_response"
AXES_CLIENT_IP_CALLABLE = "concord.addresses.client_address"
# Reverse proxies in front of the web server that append the client's address to X-Forwarded-For; 0 (no proxy):
# the header is ignored, so a client cannot pose as a new address per request (concord.addresses).
CONCORD_TRUSTED_PROXIES = env_int("CONCORD_TRUSTED_PROXIES", 0)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Development and tests serve static files straight from the app folders; production collects them.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
# Training runs' working directories (exported data, checkpoints) and the reward models they register.
TRAINING_ROOT = Path(env_str("TRAINING_ROOT", str(VAR_DIR / "training")))
# A training run in several processes (training.ml.launch): the gpu worker's task starts torchrun with this many
# processes on its machine ("1": train in the task's own process; a number; "gpu": one per visible GPU), joined by
# the ranks of CONCORD_TRAIN_NODES - 1 other machines meeting at CONCORD_TRAIN_RDZV_ENDPOINT (host:port of
# torchrun's c10d rendezvous). torchrun restarts every rank from the last checkpoint when one dies, at most
# CONCORD_TRAIN_MAX_RESTARTS times. README.md says how to start the other nodes.
CONCORD_TRAIN_PROCESSES = env_str("CONCORD_TRAIN_PROCESSES", "1").strip()
if not (
    CONCORD_TRAIN_PROCESSES in ("gpu", "auto") or (CONCORD_TRAIN_PROCESSES.isdigit() and int(CONCORD_TRAIN_PROCESSES))
):
    raise ImproperlyConfigured(
        f"CONCORD_TRAIN_PROCESSES must be a number, gpu or auto, not {CONCORD_TRAIN_PROCESSES!r}"
    )
CONCORD_TRAIN_NODES = max(1, env_int("CONCORD_TRAIN_NODES", 1))
CONCORD_TRAIN_RDZV_ENDPOINT = env_str("CONCORD_TRAIN_RDZV_ENDPOINT", "")
CONCORD_TRAIN_MAX_RESTARTS = max(0, env_int("CONCORD_TRAIN_MAX_RESTARTS", 3))
# "ddp": a whole copy of the model on each rank; "fsdp": weights, gradients and optimizer state sharded over the
# ranks, for a model whose training state does not fit one device.
CONCORD_TRAIN_SHARDING = env_str("CONCORD_TRAIN_SHARDING", "ddp")
if CONCORD_TRAIN_SHARDING not in ("ddp", "fsdp"):
    raise ImproperlyConfigured(f"CONCORD_TRAIN_SHARDING must be ddp or fsdp, not {CONCORD_TRAIN_SHARDING!r}")

# Uploads: imports are streamed from disk, never held in memory, and capped in size.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
CONCORD_MAX_UPLOAD_BYTES = env_int("CONCORD_MAX_UPLOAD_BYTES", 256 * 1024 * 1024)
# How large a gzip file being imported (uploaded or from the command line) may grow as it is decompressed; it may
# also grow at most 100 times its compressed size (annotate.formats.reading.MAX_GZIP_RATIO).
CONCORD_MAX_EXPANDED_BYTES = env_int("CONCORD_MAX_EXPANDED_BYTES", 4 * CONCORD_MAX_UPLOAD_BYTES)

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie.
X_FRAME_OPTIONS = "DENY"
# A refused form (an expired session's token, say) gets a page that says what to do (concord.error_views).
CSRF_FAILURE_VIEW = "concord.error_views.csrf_failure"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Content-Security-Policy (django-csp) on every response: scripts, styles and everything else from this origin
# only, so no inline <script>, <style>, style="..." or on...= handler runs or applies (templates keep them in
# static/; htmx is told not to inject styles or eval, in base.html's htmx-config); no plugins, no framing, forms
# post here only.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Celery: progress lives in the database, so results are not stored in the broker.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "redis://127.0.0.1:56379/0")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"training.tasks.*": {"queue": "gpu"}}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task not acknowledged within this many seconds is redelivered: longer than the longest job.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 12 * 3600)}
CELERY_TASK_ALWAYS_EAGER = False
# The watchdog (training.services.recovery) sends the task of a running job whose worker died again, at most
# CONCORD_MAX_RECOVERIES times, once nothing has been heard from it for CONCORD_RECOVERY_GRACE_S. Celery beat
# (the Procfile's `beat:`, one per deployment) runs it every CONCORD_WATCHDOG_INTERVAL_S on the default queue: its
# module is not under training.tasks.*, which go to the gpu queue, where it would wait behind the jobs it checks.
# A model measured on fewer held-out pairs than this is not promoted unless the admin insists: its accuracy says
# next to nothing (50 pairs leave a standard error of about 7 points).
CONCORD_MIN_HELDOUT_PAIRS = env_int("CONCORD_MIN_HELDOUT_PAIRS", 50)
# The encoder that embeds pairs for a curation round's error-driven retrieval (a local checkpoint directory); empty:
# the default backbone (all-MiniLM-L6-v2, training.ml.config.default_backbone).
CONCORD_EMBEDDING_MODEL = env_str("CONCORD_EMBEDDING_MODEL", "")
# Directories (colon- or comma-separated) whose model directories a training run may start from, beside the packaged
# default and the models of projects the user administers (training.selectors_backbones); no other path is read.
CONCORD_MODEL_ROOTS = [
    root.strip() for root in env_str("CONCORD_MODEL_ROOTS", "").replace(",", ":").split(":") if root.strip()
]
CONCORD_MAX_RECOVERIES = env_int("CONCORD_MAX_RECOVERIES", 3)
CONCORD_RECOVERY_GRACE_S = env_int("CONCORD_RECOVERY_GRACE_S", 120)
# A scoring job is split into chunks of this many items (in id order), one task each, that any number of gpu workers
# take (training.services.scoring); a worker loads the model once per chunk, so a chunk should take minutes, not
# seconds.
CONCORD_SCORING_CHUNK_ITEMS = max(1, env_int("CONCORD_SCORING_CHUNK_ITEMS", 20_000))
CELERY_IMPORTS = ["training.watchdog_tasks", "training.review_tasks"]
CELERY_BEAT_SCHEDULE = {
    "recover-stale-jobs": {
        "task": "training.watchdog_tasks.stale_jobs_recover_task",
        "schedule": float(env_int("CONCORD_WATCHDOG_INTERVAL_S", 60)),
        # A check not run by the next one (no default worker) is dropped rather than piled up.
        "options": {"expires": float(env_int("CONCORD_WATCHDOG_INTERVAL_S", 60))},
    }
}

# Short-lived state shared by web and workers, such as the progress of an import still in its transaction.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env_str("CACHE_URL", "redis://127.0.0.1:56379/1"),
        "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "concord"),
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# The REST API (curation.api) for training scripts: a token per user (`manage.py api_token USERNAME`), or the
# session for the browsable API. Everything needs a login; what a user reaches is decided by curation.api.
REST_FRAMEWORK = {
    # Token first: an anonymous request is answered 401 with `WWW-Authenticate: Token`.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "curation.api.authentication.GuardedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        # Last: reached only by a request that carries no credentials at all.
        "curation.api.authentication.AnonymousAddressLimit",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Throttles (curation.api.throttles), counted in the cache (Redis, shared by every worker): per user once
    # logged in; per address for requests without credentials and for failed tokens, after which the address gets
    # 429 with Retry-After for any token until the window has passed.
    "DEFAULT_THROTTLE_CLASSES": ["curation.api.throttles.UserThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_str("CONCORD_API_USER_RATE", "600/min"),
        "anon": env_str("CONCORD_API_ANON_RATE", "60/min"),
        "bad_token": env_str("CONCORD_API_BAD_TOKEN_RATE", "10/min"),
    },
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Concord API",
    "DESCRIPTION": "Read frozen dataset versions, request their exports and download the files.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # The ways to log in; curation.api.authentication.AnonymousAddressLimit only counts requests that use neither.
    "AUTHENTICATION_WHITELIST": [
        "curation.api.authentication.GuardedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Two models have a `status` field with different choices: name each enum after its model.
    "ENUM_NAME_OVERRIDES": {
        "DatasetVersionStatusEnum": "curation.models.DatasetVersion.Status",
        "ExportJobStatusEnum": "curation.models.ExportJob.Status",
    },
}
