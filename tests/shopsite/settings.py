"""Settings of the test project: both aliases come from credflip.django.database().

SHOP_ENV names the env; CREDFLIP_STORE, CREDFLIP_PREFIX and CREDFLIP_TTL are
read by credflip itself.
"""

import os

import credflip.django

SECRET_KEY = "shopsite-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "shopsite.urls"
INSTALLED_APPS = ["shopsite"]
MIDDLEWARE: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": credflip.django.database(
        os.environ["SHOP_ENV"], CONN_MAX_AGE=60, CONN_HEALTH_CHECKS=True
    ),
    "replica": credflip.django.database(
        os.environ["SHOP_ENV"], role="reader", CONN_MAX_AGE=60, CONN_HEALTH_CHECKS=True
    ),
}
DATABASE_ROUTERS = ["shopsite.routers.ReplicaRouter"]

LOGGING = {
    "version": 1,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"credflip": {"handlers": ["stderr"], "level": "INFO"}},
}
