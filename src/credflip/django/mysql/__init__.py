"""``ENGINE = "credflip.django.mysql"``: Django's MySQL/MariaDB backend (mysqlclient),
following the active color."""
