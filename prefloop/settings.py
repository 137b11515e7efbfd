"""Django settings: every environment variable the web app and its workers read is read here. A few are read where
only one program needs them: prefloop/serve.py (`make run`'s server and worker), `manage.py ensure_admin` (the admin
account's name and password), and the training engine, which imports no Django (training/dpo/: accelerate's RANK and
WORLD_SIZE)."""
import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from prefloop.private_files import create_private, make_private, private_dir, private_sqlite

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool, *, strict: bool = True) -> bool:
    """On for 1/true/yes/on, off for 0/false/no/off and for an empty value (as it always was), the default when
    unset; anything else is refused naming the variable, unless `strict` is off (DEBUG, which other tools set to
    their own values, such as the npm convention DEBUG=express:*): then it is off."""
    value = os.environ.get(name)
    if value is None:
        return default
    word = value.strip().lower()
    if strict and word not in {"", "1", "true", "yes", "on", "0", "false", "no", "off"}:
        raise ImproperlyConfigured(f"{name}={value!r}: expected 1, true, yes or on (or 0, false, no, off)")
    return word in {"1", "true", "yes", "on"}


def _env_number(name: str, default, kind: type, low=None, high=None, *, above=None):
    """A number from the environment, refused with its variable's name (a bare int() said "invalid literal for int()
    with base 10" and named nothing): a whole number for int, a finite one for float, within the bounds given."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = kind(value.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: expected {'a whole number' if kind is int else 'a number'}") \
            from None
    if kind is float and number != number or number in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name}={value!r}: expected a finite number")
    if (low is not None and number < low) or (high is not None and number > high) or (
            above is not None and number <= above):
        bounds = " and ".join(b for b in (f"at least {low}" if low is not None else "",
                                          f"above {above}" if above is not None else "",
                                          f"at most {high}" if high is not None else "") if b)
        raise ImproperlyConfigured(f"{name}={value!r}: expected a number {bounds}")
    return number


def _env_name(name: str, default: str) -> str:
    """One name (a queue's) from the environment, as the Procfile's ${NAME:-default} reads it: stripped, the default
    when empty. Empty, it routed every model task to the default queue (whose worker runs two at once) while the GPU
    worker waited on "gpu"; padded (" gpu "), to a queue no worker consumes. Spaces or commas inside are refused."""
    value = os.environ.get(name, "").strip() or default
    if any(c.isspace() or c == "," for c in value):
        raise ImproperlyConfigured(f"{name}={value!r}: expected one name, without spaces or commas")
    return value


DATA_DIR = Path(os.environ.get("PREFLOOP_DATA_DIR", BASE_DIR / "var")).resolve()
# A new data folder is 0700; the secret key and the SQLite database in it are 0600 (prefloop/private_files.py).
private_dir(DATA_DIR)
MODELS_DIR = DATA_DIR / "models"
EXPORTS_DIR = DATA_DIR / "exports"
IMPORTS_DIR = DATA_DIR / "imports"  # files uploaded on the import page, kept until their import job ends

PRODUCTION = _env_bool("PREFLOOP_PRODUCTION", False)
# Off unless DEBUG=1 is set (development only: Django's error page shows settings, the environment and code).
DEBUG = _env_bool("DEBUG", False, strict=False)
# Even then the error page hides connection URLs and masks passwords in any URL (prefloop/error_reports.py).
DEFAULT_EXCEPTION_REPORTER_FILTER = "prefloop.error_reports.ConnectionSafeFilter"


def _env_list(name: str, default: str) -> list[str]:
    """A comma-separated list, each item stripped and empty ones dropped: "a.org, b.org" is ["a.org", "b.org"] (the
    item " b.org", with its space, matched no request's host, and that host was answered 400)."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# The secret key deploy/prefloop.env.example ships with: a production started with it signed its sessions with a
# key anyone who has read the repository knows.
EXAMPLE_SECRET_KEY = "change-me-to-60-random-characters"


def _weak_secret_key(key: str) -> str | None:
    """Why a production secret key is unsafe, or None: the example's placeholder, or what Django's check W009 calls
    weak (under 50 characters, fewer than 5 different ones, or startproject's 'django-insecure-' key)."""
    if key == EXAMPLE_SECRET_KEY:
        return "is the placeholder of deploy/prefloop.env.example"
    if len(key) < 50:
        return f"is {len(key)} characters long (at least 50 are needed)"
    if len(set(key)) < 5:
        return f"has {len(set(key))} different characters (at least 5 are needed)"
    if key.startswith("django-insecure-"):
        return "is a key startproject generated for development (it starts with 'django-insecure-')"
    return None


def _secret_key() -> str:
    name = "DJANGO_SECRET_KEY" if os.environ.get("DJANGO_SECRET_KEY") else "SECRET_KEY"
    key = os.environ.get(name)
    if key:
        weak = _weak_secret_key(key) if PRODUCTION else None
        if weak:
            raise ImproperlyConfigured(
                f"{name} {weak}: sessions signed with it can be forged. Set a random one, e.g. the output of "
                "python -c \"import secrets; print(secrets.token_urlsafe(60))\"")
        return key
    if PRODUCTION:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when PREFLOOP_PRODUCTION is on")
    # Development: a key kept in the data folder so sessions survive restarts, readable by its owner only.
    path = DATA_DIR / "secret_key"
    create_private(path, secrets.token_urlsafe(50))
    make_private(path)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Django's test client's host ("testserver") only in development: a production that forgot ALLOWED_HOSTS answered it
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" + ("" if PRODUCTION else ",testserver"))
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # whitenoise serves static files under runserver too, as in production (before staticfiles, which it replaces).
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "axes",
    "csp",
    "jobs",
    "generation",
    "annotate",
    "training",
    "compare",
    "loop",
    "ninja",  # the API docs page's own scripts and styles, served from static/ (no CDN)
    "api",
]

MIDDLEWARE = [
    # First: X-Forwarded-For and X-Forwarded-Proto are dropped from a request that did not come from
    # PREFLOOP_TRUSTED_PROXIES, before anything (the HTTPS redirect, the sign-in lockout) reads them.
    "prefloop.proxies.UntrustedForwardedHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "api.middleware.JsonErrorsMiddleware",  # every error under /api/ is JSON, whichever layer below answered
    "prefloop.request_limits.RequestSizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before the session: an unreachable database, from the session load on, answers 503 and the page retries.
    "prefloop.dbfaults.DatabaseFaultMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # GET /healthz is answered here, before CommonMiddleware's Host check: probes ask by address (127.0.0.1:8000).
    # After the middleware above, so its answer has their headers (the CSP too) as every other page's.
    "prefloop.health.HealthProbeMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # An upload larger than an ordinary body is read only for staff: checked before the CSRF check reads the body.
    "prefloop.request_limits.LargeUploadSenderMiddleware",
    # Django's LoginRequiredMiddleware, but an htmx request sent signed out gets 401 and HX-Redirect to the sign-in
    # page (not the login page swapped into the label area); a CSRF refusal gets a sentence the page shows.
    "prefloop.htmx.HtmxLoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # A POST-only page asked with GET says which method it takes (Django's 405 has an empty body).
    "prefloop.errors.MethodNotAllowedSentenceMiddleware",
    # Last, as axes asks: it turns a sign-in refused for a lockout into the page with a message and status 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "prefloop.urls"
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
            ]
        },
    }
]
WSGI_APPLICATION = "prefloop.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"), conn_max_age=60,
        # A kept connection is checked before each request reuses it, so a database restart costs no request.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if DATABASES["default"]["NAME"] and not str(DATABASES["default"]["NAME"]).startswith((":memory:", "file:")):
        private_sqlite(Path(DATABASES["default"]["NAME"]))
    # IMMEDIATE transactions take the write lock up front, so concurrent writers queue on the
    # busy timeout instead of failing with "database is locked" halfway through a transaction.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Tests use a file database (one per test process), so threads and worker subprocesses share it.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("PREFLOOP_TEST_DB", str(DATA_DIR / f"test-{os.getpid()}.sqlite3"))
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django's four: at least 8 characters, not one of the 20,000 commonest passwords, not all digits, not like the
# account's own name or e-mail (the password change form took "password", "12345678" and the username)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
# Sign-in lockout (django-axes, prefloop/lockout.py): after PREFLOOP_LOGIN_MAX_FAILURES failed sign-ins for one
# username from one address, each within PREFLOOP_LOGIN_WINDOW_SECONDS of the one before, that name is refused from
# that address until the window has passed since the last counted failure. Every sign-in form is covered, because
# axes checks in the authentication backend. Failures are kept in the database (the admin lists them).
PREFLOOP_LOGIN_MAX_FAILURES = _env_number("PREFLOOP_LOGIN_MAX_FAILURES", 10, int, low=1)
PREFLOOP_LOGIN_WINDOW_SECONDS = _env_number("PREFLOOP_LOGIN_WINDOW_SECONDS", 15 * 60, int, low=1)
# Proxies in front of the web app that append the client's address to X-Forwarded-For (0: none; the header is
# then ignored, as anyone can send it).
PREFLOOP_TRUSTED_PROXY_COUNT = _env_number("PREFLOOP_TRUSTED_PROXY_COUNT", 0, int, low=0)
# The addresses (or networks, 10.0.0.0/24) those proxies connect from. X-Forwarded-For and X-Forwarded-Proto are
# read only on a request whose REMOTE_ADDR is one of them: a client that reaches gunicorn directly writes what it
# likes there, and with the count alone a new X-Forwarded-For on each guess escaped the lockout. The default is
# loopback: nginx on the same machine as gunicorn (docs/deployment.md).
PREFLOOP_TRUSTED_PROXIES = _env_list("PREFLOOP_TRUSTED_PROXIES", "127.0.0.1,::1")
for _proxy in PREFLOOP_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"PREFLOOP_TRUSTED_PROXIES: {_proxy!r} is not an address or a network "
                                   "(expected e.g. 127.0.0.1,10.0.0.0/24)") from None
# And a looser limit per address alone: PREFLOOP_LOGIN_MAX_FAILURES_PER_ADDRESS failures from one address within the
# window, over every name, refuse sign-ins from it (a few guesses at every account's password were never slowed).
PREFLOOP_LOGIN_MAX_FAILURES_PER_ADDRESS = _env_number("PREFLOOP_LOGIN_MAX_FAILURES_PER_ADDRESS", 100, int, low=1)
AUTHENTICATION_BACKENDS = ["prefloop.lockout.AddressThrottleBackend", "axes.backends.AxesStandaloneBackend",
                           "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = PREFLOOP_LOGIN_MAX_FAILURES
AXES_COOLOFF_TIME = timedelta(seconds=PREFLOOP_LOGIN_WINDOW_SECONDS)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# A refused attempt during a lockout does not extend it: it ends a window after the last failure that counted.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_USERNAME_CALLABLE = "prefloop.lockout.lockout_username"
AXES_CLIENT_IP_CALLABLE = "prefloop.lockout.client_address"
AXES_LOCKOUT_CALLABLE = "prefloop.lockout.lockout_response"
# Axes keeps each failed sign-in's form data (shown to staff in the admin) and masks only the fields named here and
# "password": the password-change form and the token form confirm the current password through the sign-in check,
# and a typo in it stored the mistyped password and the new one in clear.
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "old_password", "new_password1", "new_password2", "password1",
                             "password2", "csrfmiddlewaretoken"]
# No start-up banner on every command's output; failures and lockouts are still logged as warnings.
AXES_VERBOSE = False

# Content-Security-Policy (django-csp): pages load only the app's own scripts, style sheets, images and fonts, so
# a remote image in a model's answer is never fetched by an annotator's browser, and no inline script or style
# attribute runs (the templates have none; htmx is told not to inject its indicator styles).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# A file cache on one box, Redis (CACHE_URL=redis://host:6379/1) when several machines serve the web app.
CACHE_URL = os.environ.get("CACHE_URL", "")
if CACHE_URL.startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
elif CACHE_URL:
    raise ImproperlyConfigured(f"CACHE_URL={CACHE_URL!r}: expected redis://host:port/db, or leave it unset")
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": DATA_DIR / "cache"}
    }

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
if not PRODUCTION:
    # Outside production whitenoise serves the source folders directly: no collectstatic to run, and an empty
    # STATIC_ROOT (whitenoise warns at startup when it is missing). Production serves what collectstatic wrote.
    WHITENOISE_USE_FINDERS = True
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
PREFLOOP_MAX_UPLOAD_BYTES = _env_number("PREFLOOP_MAX_UPLOAD_BYTES", 50 * 1024 * 1024, int, low=1)
# What one import may read (page or command): rows, decoded bytes (a compressed Parquet file can decode to a
# thousand times its size) and JSON nesting. Each refusal names the setting that raises its limit.
PREFLOOP_IMPORT_MAX_ROWS = _env_number("PREFLOOP_IMPORT_MAX_ROWS", 200_000, int, low=1)
PREFLOOP_IMPORT_MAX_BYTES = _env_number("PREFLOOP_IMPORT_MAX_BYTES", 256 * 1024 * 1024, int, low=1)
PREFLOOP_IMPORT_MAX_DEPTH = _env_number("PREFLOOP_IMPORT_MAX_DEPTH", 32, int, low=1)

if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", True)
    # Health probes (a load balancer, systemd, honcho) ask over plain HTTP on the local address.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = _env_number("SECURE_HSTS_SECONDS", 31536000, int, low=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    # Read only from PREFLOOP_TRUSTED_PROXIES (prefloop.proxies drops the header from anyone else).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Celery. The default broker is kombu's filesystem transport: no server to run.
BROKER_DIR = DATA_DIR / "broker"
# "localhost", which the folder broker ignores: without a host kombu warned "No hostname was supplied" at every
# start and every job queued, a line people read as an error
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://localhost/")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # The exchange tables; kombu's default is a "control" folder in the working directory.
        "control_folder": str(BROKER_DIR / "control"),
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = _env_bool("PREFLOOP_TASKS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
PREFLOOP_GPU_QUEUE = _env_name("PREFLOOP_GPU_QUEUE", "gpu")
# The one place tasks are routed. Heavy work (sampling, training, and the loop and comparisons, which sample) goes to
# the GPU queue; `make run` (prefloop/serve.py) runs one worker for each queue.
CELERY_TASK_ROUTES = {
    "generation.tasks.*": {"queue": PREFLOOP_GPU_QUEUE},
    "training.tasks.*": {"queue": PREFLOOP_GPU_QUEUE},
    "compare.tasks.*": {"queue": PREFLOOP_GPU_QUEUE},
    "loop.tasks.*": {"queue": PREFLOOP_GPU_QUEUE},
    # Imports load no model: a worker on the default queue runs them while the GPU worker trains or samples.
    "annotate.tasks.*": {"queue": CELERY_TASK_DEFAULT_QUEUE},
}
CELERY_TASK_TIME_LIMIT = _env_number("PREFLOOP_TASK_TIME_LIMIT", 24 * 3600, int, low=1)
# The soft limit raises SoftTimeLimitExceeded inside the task first, so it can record the failure itself.
CELERY_TASK_SOFT_TIME_LIMIT = max(1, CELERY_TASK_TIME_LIMIT - max(1, min(300, CELERY_TASK_TIME_LIMIT // 10)))
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# With acks_late, a task whose worker lost the broker connection is cancelled and redelivered, not run twice.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Redis redelivers a message not acked within the visibility timeout: it must exceed the longest task, or a
    # long training run would start a second time while the first is still running.
    _visibility = _env_number("PREFLOOP_BROKER_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT + 600, int, low=1)
    if _visibility <= CELERY_TASK_TIME_LIMIT:
        raise ImproperlyConfigured(
            f"PREFLOOP_BROKER_VISIBILITY_TIMEOUT ({_visibility} s) must exceed PREFLOOP_TASK_TIME_LIMIT "
            f"({CELERY_TASK_TIME_LIMIT} s), or Redis redelivers tasks that are still running"
        )
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": _visibility}

# Models.
PREFLOOP_BASE_MODEL = os.environ.get("PREFLOOP_BASE_MODEL", str(MODELS_DIR / "smollm2-135m-instruct"))
PREFLOOP_BACKEND = os.environ.get("PREFLOOP_BACKEND", "auto").strip().lower() or "auto"
if PREFLOOP_BACKEND not in ("auto", "hf", "vllm"):
    raise ImproperlyConfigured(f"PREFLOOP_BACKEND={PREFLOOP_BACKEND!r}: expected auto, hf or vllm")
# The dtype of sampling, training and evaluation alike: auto (bf16 where the CPU computes it natively or on a GPU,
# else fp32: prefcore.hardware), float32 or bfloat16. docs/numerics.md says what holds in each.
PREFLOOP_DTYPE = os.environ.get("PREFLOOP_DTYPE", "auto").strip().lower() or "auto"
if PREFLOOP_DTYPE not in ("auto", "float32", "bfloat16"):
    raise ImproperlyConfigured(f"PREFLOOP_DTYPE={PREFLOOP_DTYPE!r}: expected auto, float32 or bfloat16")
PREFLOOP_VLLM_TP = _env_number("PREFLOOP_VLLM_TP", 1, int, low=1)
PREFLOOP_VLLM_GPU_MEMORY = _env_number("PREFLOOP_VLLM_GPU_MEMORY", 0.5, float, high=1, above=0)
PREFLOOP_TRAIN_PROCESSES = _env_number("PREFLOOP_TRAIN_PROCESSES", 1, int, low=1)
# TensorBoard event files per training run (loss, margin, accuracy, KL per step; held-out figures per round) under
# PREFLOOP_DATA_DIR/tensorboard/run-<id>/: `tensorboard --logdir var/tensorboard`. training/tensorboard.py.
PREFLOOP_TENSORBOARD = _env_bool("PREFLOOP_TENSORBOARD", False)
TENSORBOARD_DIR = DATA_DIR / "tensorboard"
# Each round is measured on held-out labelled pairs (this share of prompts, never trained on once a round has
# PREFLOOP_HELDOUT_MIN_PAIRS decided pairs) and on answers to this many eval prompts (KL to the reference, length).
PREFLOOP_HELDOUT_FRACTION = _env_number("PREFLOOP_HELDOUT_FRACTION", 0.1, float, low=0, high=0.9)
PREFLOOP_HELDOUT_MIN_PAIRS = _env_number("PREFLOOP_HELDOUT_MIN_PAIRS", 20, int, low=0)
PREFLOOP_ROUND_EVAL_PROMPTS = _env_number("PREFLOOP_ROUND_EVAL_PROMPTS", 8, int, low=0)
# The promotion gate: a finished round's version is a candidate; it becomes current only when a blind evaluation
# against the current version (judge or people, on eval prompts) gives it at least PREFLOOP_GATE_MIN_VOTES votes, a
# win rate (ties and both-bad half) of at least PREFLOOP_GATE_MIN_WIN_RATE, a 95% (Wilson) interval whose lower end
# is at least PREFLOOP_GATE_MIN_LOWER_BOUND, and mean answer tokens at most PREFLOOP_GATE_MAX_LENGTH_GROWTH above the
# current version's on the same prompts (base's, where base's are longer); or when a staff member promotes it by hand. Stated bounds, not fitted to a
# judge (docs/defaults.md).
PREFLOOP_GATE_MIN_VOTES = _env_number("PREFLOOP_GATE_MIN_VOTES", 16, int, low=1)
PREFLOOP_GATE_MIN_WIN_RATE = _env_number("PREFLOOP_GATE_MIN_WIN_RATE", 0.5, float, low=0, high=1)
PREFLOOP_GATE_MIN_LOWER_BOUND = _env_number("PREFLOOP_GATE_MIN_LOWER_BOUND", 0.4, float, low=0, high=1)
PREFLOOP_GATE_MAX_LENGTH_GROWTH = _env_number("PREFLOOP_GATE_MAX_LENGTH_GROWTH", 0.25, float, low=0)
# The drift budget (also part of the gate): the share of eval answers cut at the token limit may rise by at most
# PREFLOOP_GATE_MAX_CUT_SHARE_GROWTH over the current version's (base's, where base's is higher), and the round's KL to its reference may be at most
# PREFLOOP_GATE_MAX_KL_PER_TOKEN nats per answer token, and its KL to base (the lineage's first version) at most
# PREFLOOP_GATE_MAX_KL_TO_BASE_PER_TOKEN, the rounds' drift added up (docs/defaults.md).
PREFLOOP_GATE_MAX_CUT_SHARE_GROWTH = _env_number("PREFLOOP_GATE_MAX_CUT_SHARE_GROWTH", 0.10, float, low=0)
PREFLOOP_GATE_MAX_KL_PER_TOKEN = _env_number("PREFLOOP_GATE_MAX_KL_PER_TOKEN", 0.5, float, above=0)
PREFLOOP_GATE_MAX_KL_TO_BASE_PER_TOKEN = _env_number("PREFLOOP_GATE_MAX_KL_TO_BASE_PER_TOKEN", 1.0, float, above=0)
PREFLOOP_JUDGES = _env_list("PREFLOOP_JUDGES", "")
# Loss terms a training run may name besides the built-in ones (training/dpo/terms.py), as "package.module:attr".
PREFLOOP_LOSS_TERMS = _env_list("PREFLOOP_LOSS_TERMS", "")
PREFLOOP_COMPARE_JUDGE = os.environ.get("PREFLOOP_COMPARE_JUDGE", "").strip()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
