"""``ENGINE = "credflip.django.postgresql"``: Django's PostgreSQL backend (psycopg 3),
following the active color."""
