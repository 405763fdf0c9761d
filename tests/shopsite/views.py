from django.db import connections
from django.http import HttpRequest, JsonResponse

from .models import Order

_WHO = {
    "postgresql": "SELECT session_user",
    "mysql": "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)",
}


def who(alias: str) -> str:
    conn = connections[alias]
    with conn.cursor() as cur:
        cur.execute(_WHO[conn.vendor])
        return str(cur.fetchone()[0])


def order(request: HttpRequest) -> JsonResponse:
    """Write an order (default alias), count them (replica alias), say who did it."""
    worker = int(request.GET["worker"])
    created = Order.objects.create(worker=worker)
    count = Order.objects.filter(worker=worker).count()
    return JsonResponse(
        {"id": created.pk, "count": count, "writer": who("default"), "reader": who("replica")}
    )
