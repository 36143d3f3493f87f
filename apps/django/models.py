"""The table every app writes, as a Django model: `simple_text` exists already, so Django does not manage it."""

from django.db import models


class SimpleText(models.Model):
    id = models.BigAutoField(primary_key=True)
    text = models.CharField(max_length=1000)

    class Meta:
        managed = False
        db_table = "simple_text"
