"""Tunix RT settings, driven entirely by environment variables (django-environ).

Local development needs no variables at all: SQLite under ``var/``, a filesystem Celery broker
and an embedded Ray. Production differs only by environment (see docs/operations.md).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _bounded_int(name: str, default: int, low: int, high: int) -> int:
    """An integer variable that must lie in [low, high] (docs/configuration.md lists the bounds)."""
    value = env.int(name, default=default)
    if not low <= value <= high:
        raise environ.ImproperlyConfigured(f"{name}={value} is out of bounds: it must lie in [{low}, {high}].")
    return value


DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="" if not DEBUG else "insecure-local-development-key")
if not SECRET_KEY:
    raise environ.ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Where runs write their output folders, the filesystem broker keeps its messages, Ray keeps
# experiment state and the SQLite database lives. Must be absolute: Ray trials change directory.
DATA_DIR = Path(env.str("TUNIX_RT_DATA_DIR", default=str(BASE_DIR / "var"))).resolve()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "axes",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "tunix_rt.apps.TunixRTConfig",
    "accounts",
    "runs",
    "tuning",
    "traces",
    "registry",
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
    # Last, as django-axes requires: it turns a locked-out sign-in into accounts/lockout.py's answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "tunix_rt.urls"
WSGI_APPLICATION = "tunix_rt.wsgi.application"

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


def _database(url: str) -> dict:
    config = env.db_url_config(url)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL + IMMEDIATE: the driver and trials write concurrently without lock errors.
        config["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
        # Trial processes must see the test database, so it is a file, never :memory:.
        config["TEST"] = {"NAME": str(DATA_DIR / env.str("TEST_DATABASE_NAME", "test_db.sqlite3"))}
    else:
        config["CONN_MAX_AGE"] = _bounded_int("CONN_MAX_AGE", 60, 0, 86400)
        config["CONN_HEALTH_CHECKS"] = True
        if env.str("TEST_DATABASE_NAME", default=""):
            config["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME")}
    return config


DATABASES = {"default": _database(env.str("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out account before any password is checked.
AUTHENTICATION_BACKENDS = [
    "accounts.backends.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
# The model registry's files (docs/registry.md): a folder under DATA_DIR by default; any Django
# storage by configuration, e.g. django-storages' S3 backend with its options as JSON.
_registry_backend = env.str("TUNIX_RT_REGISTRY_STORAGE_BACKEND", default="django.core.files.storage.FileSystemStorage")
_registry_options = (
    {"location": env.str("TUNIX_RT_REGISTRY_DIR", default=str(DATA_DIR / "registry"))}
    if _registry_backend == "django.core.files.storage.FileSystemStorage"
    else env.json("TUNIX_RT_REGISTRY_STORAGE_OPTIONS", default={})
)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "registry": {"BACKEND": _registry_backend, "OPTIONS": _registry_options},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Bounded request bodies: uploads and JSON payloads past this are refused with 413/400.
DATA_UPLOAD_MAX_MEMORY_SIZE = _bounded_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024, 1024, 1024**3)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "accounts.authentication.ApiTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "tunix_rt.pagination.Pagination",
    "DEFAULT_PARSER_CLASSES": [
        "tunix_rt.api.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "tunix_rt.schema.AutoSchema",
    "EXCEPTION_HANDLER": "tunix_rt.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tunix RT API",
    "DESCRIPTION": "Tracked training runs and hyperparameter tuning jobs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs page are for signed-in users, like the rest of the API.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and ReDoc from the sidecar package's static files: the docs page needs no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "runs.models.Run.Status",
        "TuningJobStatusEnum": "tuning.models.TuningJob.Status",
        "TrialStatusEnum": "tuning.models.Trial.Status",
    },
}

# Celery. Without CELERY_BROKER_URL a filesystem broker under DATA_DIR needs no server.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
_broker_dir = DATA_DIR / "broker"
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "control_folder": str(_broker_dir / "control"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem://")
    else {"visibility_timeout": _bounded_int("CELERY_VISIBILITY_TIMEOUT", 3600, 60, 7 * 86400)}
)
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Ray cannot start under Celery's stdout proxy: 'LoggingProxy' object has no attribute 'fileno'.
CELERY_WORKER_REDIRECT_STDOUTS = False
CELERY_TASK_DEFAULT_QUEUE = "runs"
# The reaper is short database work: it must not wait behind an experiment on the solo tuning worker.
CELERY_TASK_ROUTES = {
    "tuning.tasks.reap_stale_work_task": {"queue": "runs"},
    "tuning.tasks.*": {"queue": "tuning"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True

# Ray: an existing cluster address, or empty for an embedded local cluster in the tuning worker.
RAY_ADDRESS = env.str("RAY_ADDRESS", default="")
RAY_NUM_CPUS = env.int("RAY_NUM_CPUS", default=0) or None
# GPUs the embedded cluster announces (0: Ray detects them). Lets a machine without a GPU test
# GPU requests with a fake count; Ray then sets CUDA_VISIBLE_DEVICES for each trial.
RAY_NUM_GPUS = env.float("RAY_NUM_GPUS", default=0.0) or None
# Ray's usage statistics (posted to Ray's collection server) stay off unless a user opts in.
RAY_USAGE_STATS = env.bool("TUNIX_RT_RAY_USAGE_STATS", default=False)

TUNIX_RT = {
    # The trainer the new-job form opens with.
    "DEFAULT_TRAINER": env.str("TUNIX_RT_DEFAULT_TRAINER", default="sklearn-mlp"),
    # Extra trainer plugins: dotted paths to Trainer classes or to callables returning trainers.
    "TRAINERS": env.list("TUNIX_RT_TRAINERS", default=[]),
    # Command trainers declared in a TOML file (docs/trainers.md).
    "COMMAND_TRAINERS_FILE": env.str("TUNIX_RT_COMMAND_TRAINERS_FILE", default=str(BASE_DIR / "trainers.toml")),
    "LOG_MAX_LINES": _bounded_int("TUNIX_RT_LOG_MAX_LINES", 5000, 100, 1_000_000),
    "LOG_MAX_LINE_CHARS": 2000,
    "METRIC_MAX_POINTS": _bounded_int("TUNIX_RT_METRIC_MAX_POINTS", 100_000, 1, 10_000_000),
    "COMMAND_TIMEOUT_MAX_S": _bounded_int("TUNIX_RT_COMMAND_TIMEOUT_MAX_S", 24 * 3600, 1, 30 * 86400),
    "MAX_PAGE_SIZE": 200,
    # Pretrained checkpoints a run may start from: `pretrained_path` names a folder inside it, so a
    # run can read neither arbitrary server paths nor other users' run outputs.
    "MODELS_DIR": Path(env.str("TUNIX_RT_MODELS_DIR", default=str(DATA_DIR / "models"))).resolve(),
    # Jobs (queued or running) one user may have at once; starting one more answers 429.
    "MAX_ACTIVE_JOBS_PER_USER": _bounded_int("TUNIX_RT_MAX_ACTIVE_JOBS_PER_USER", 5, 1, 10_000),
    # Stand-alone runs (not trials; queued or running) one user may have at once; more answers 429.
    "MAX_ACTIVE_RUNS_PER_USER": _bounded_int("TUNIX_RT_MAX_ACTIVE_RUNS_PER_USER", 10, 1, 10_000),
    # API tokens (docs/security.md): at most this many per user; new ones expire after this many
    # days unless their creator chooses (0: never).
    "MAX_TOKENS_PER_USER": _bounded_int("TUNIX_RT_MAX_TOKENS_PER_USER", 50, 1, 1000),
    "TOKEN_EXPIRY_DAYS": _bounded_int("TUNIX_RT_TOKEN_EXPIRY_DAYS", 90, 0, 3650),
    # Fault tolerance (docs/operations.md). Running jobs and runs write a heartbeat every
    # HEARTBEAT_INTERVAL_S; a job's lease lasts STALE_AFTER_S from its last heartbeat. The reaper
    # (every REAPER_INTERVAL_S) resumes a job whose lease expired, at most MAX_JOB_ATTEMPTS times
    # in all, then ends it failed; it fails stand-alone runs silent for STALE_AFTER_S and re-sends
    # jobs queued for QUEUED_RESEND_AFTER_S (a lost message; duplicates are harmless).
    "HEARTBEAT_INTERVAL_S": _bounded_int("TUNIX_RT_HEARTBEAT_INTERVAL_S", 10, 1, 3600),
    "STALE_AFTER_S": _bounded_int("TUNIX_RT_STALE_AFTER_S", 90, 3, 7 * 86400),
    "REAPER_INTERVAL_S": _bounded_int("TUNIX_RT_REAPER_INTERVAL_S", 30, 1, 3600),
    "QUEUED_RESEND_AFTER_S": _bounded_int("TUNIX_RT_QUEUED_RESEND_AFTER_S", 600, 10, 7 * 86400),
    "MAX_JOB_ATTEMPTS": _bounded_int("TUNIX_RT_MAX_JOB_ATTEMPTS", 5, 1, 100),
    # A worker told to stop (SIGTERM, to it or to its whole process group) gives its runs back to
    # the queue: at their next report or poll, or after this many seconds at most (docs/operations.md).
    "RUN_STOP_GRACE_S": _bounded_int("TUNIX_RT_RUN_STOP_GRACE_S", 10, 1, 3600),
    # How often Tune saves the experiment state a resume starts from (TUNE_GLOBAL_CHECKPOINT_S).
    "EXPERIMENT_CHECKPOINT_S": _bounded_int("TUNIX_RT_EXPERIMENT_CHECKPOINT_S", 5, 1, 3600),
    # The model registry (docs/registry.md): the most a promoted version may hold, in bytes and files.
    "REGISTRY_MAX_VERSION_BYTES": _bounded_int("TUNIX_RT_REGISTRY_MAX_VERSION_BYTES", 2 * 1024**3, 1, 1024**4),
    "REGISTRY_MAX_VERSION_FILES": _bounded_int("TUNIX_RT_REGISTRY_MAX_VERSION_FILES", 1000, 1, 100_000),
}
if TUNIX_RT["STALE_AFTER_S"] < 3 * TUNIX_RT["HEARTBEAT_INTERVAL_S"]:
    raise environ.ImproperlyConfigured("TUNIX_RT_STALE_AFTER_S must be at least 3 x TUNIX_RT_HEARTBEAT_INTERVAL_S.")

CELERY_BEAT_SCHEDULE = {
    "reap-stale-work": {
        "task": "tuning.tasks.reap_stale_work_task",
        "schedule": float(TUNIX_RT["REAPER_INTERVAL_S"]),
        "options": {"expires": float(TUNIX_RT["REAPER_INTERVAL_S"])},
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = _bounded_int("SECURE_HSTS_SECONDS", 31536000, 0, 2 * 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

# Password guessing (docs/security.md): django-axes counts failed sign-ins on every authenticate()
# call (login page, admin login, POST /api/auth/token/) and locks out past the limit.
# TUNIX_RT_LOGIN_LOCKOUT_BY: comma-separated "username", "ip_address", or both joined by "+" for the pair.
_LOCKOUT_PARAMETERS = {"username", "ip_address"}


def _lockout_parameters(items: list[str]) -> list[str | list[str]]:
    parameters: list[str | list[str]] = []
    for item in items:
        names = [name.strip() for name in item.split("+")]
        if not names or set(names) - _LOCKOUT_PARAMETERS:
            raise environ.ImproperlyConfigured(
                f"TUNIX_RT_LOGIN_LOCKOUT_BY={item!r}: use username, ip_address or username+ip_address."
            )
        parameters.append(names[0] if len(names) == 1 else names)
    return parameters or ["username"]


AXES_FAILURE_LIMIT = _bounded_int("TUNIX_RT_LOGIN_FAILURE_LIMIT", 5, 1, 1000)
AXES_COOLOFF_TIME = timedelta(minutes=_bounded_int("TUNIX_RT_LOGIN_LOCKOUT_MINUTES", 15, 1, 30 * 24 * 60))
AXES_LOCKOUT_PARAMETERS = _lockout_parameters(env.list("TUNIX_RT_LOGIN_LOCKOUT_BY", default=["username"]))
# A failed attempt while locked starts the cool-off again; a successful sign-in clears the count.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = True
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
# axes.W006 asks for ip_address among the lockout parameters. By default we lock the account instead:
# behind a reverse proxy every client has the proxy's address, so one guesser would lock everybody out.
# Where the server sees client addresses, add ip_address through TUNIX_RT_LOGIN_LOCKOUT_BY.
SILENCED_SYSTEM_CHECKS = ["axes.W006"]

# Tuning bounds (docs/tuning.md): parameters per search space, values per choice/grid, and trials
# per job (num_samples, and grid combinations x num_samples).
TUNIX_RT_TUNING = {
    "MAX_PARAMETERS": env.int("TUNIX_RT_TUNING_MAX_PARAMETERS", default=32),
    "MAX_CHOICE_VALUES": env.int("TUNIX_RT_TUNING_MAX_CHOICE_VALUES", default=256),
    "MAX_TRIALS": env.int("TUNIX_RT_TUNING_MAX_TRIALS", default=10_000),
}
