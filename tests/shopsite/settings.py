"""Settings of the test project; the databases are examples/django_settings.py's.

DB_ENV names the env; CREDFLIP_STORE, CREDFLIP_PREFIX and CREDFLIP_TTL are
read by credflip itself. The examples directory is on PYTHONPATH.
"""

from django_settings import DATABASE_ROUTERS, DATABASES

SECRET_KEY = "shopsite-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "shopsite.urls"
INSTALLED_APPS = ["shopsite"]
MIDDLEWARE: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
__all__ = ["DATABASES", "DATABASE_ROUTERS"]

LOGGING = {
    "version": 1,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"credflip": {"handlers": ["stderr"], "level": "INFO"}},
}
