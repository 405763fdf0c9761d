"""A one-file Django site for the benchmark, served by waitress; prints its port.

    python bench/django_site.py follow   # credflip.django settings (DB_ENV, CREDFLIP_*)
    python bench/django_site.py static   # Django's own backend; URL read once from
                                         # $BENCH_DB_URL (the original design)

``GET /order?worker=N`` inserts an order and answers the login user. Four
worker threads with ``CONN_MAX_AGE=60``: persistent connections, as in production.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import django
from django.conf import settings

from credflip.urls import DbUrl


def database(mode: str) -> dict[str, Any]:
    options = {"application_name": "django"}
    if mode == "follow":
        import credflip.django

        return credflip.django.database(
            os.environ["DB_ENV"], CONN_MAX_AGE=60, CONN_HEALTH_CHECKS=True, OPTIONS=options
        )
    url = DbUrl.parse(os.environ.pop("BENCH_DB_URL"))
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": url.database,
        "USER": url.user,
        "PASSWORD": url.password,
        "HOST": url.host,
        "PORT": str(url.port),
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": options,
    }


settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    DATABASES={"default": database(sys.argv[1])},
    USE_TZ=True,
    SECRET_KEY="bench-only",
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import connection  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def order(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO orders (worker, kind) VALUES (%s, 'django')", [int(request.GET["worker"])]
        )
        cur.execute("SELECT session_user")
        user = cur.fetchone()[0]
    return JsonResponse({"writer": user})


urlpatterns = [path("order", order)]

if __name__ == "__main__":
    from waitress import create_server

    server = create_server(get_wsgi_application(), host="127.0.0.1", port=0, threads=4)
    print(server.effective_port, flush=True)
    server.run()
