"""A small Django project for the tests: one model, one view, a replica router.

Served by waitress (a fixed pool of worker threads, so connections persist
between requests with CONN_MAX_AGE) from ``python -m shopsite.serve``.
"""
