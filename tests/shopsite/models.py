from django.db import models


class Order(models.Model):
    """The ``orders`` table the test fixtures create (id, worker, color, at)."""

    worker = models.IntegerField()
    color = models.CharField(max_length=16, null=True)

    class Meta:
        app_label = "shopsite"
        db_table = "orders"
        managed = False
