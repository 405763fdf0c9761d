"""Serve the test project with waitress on a free loopback port; print the port.

python -m shopsite.serve [THREADS]
"""

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shopsite.settings")

import django
from django.core.wsgi import get_wsgi_application
from waitress import create_server


def main() -> None:
    django.setup()
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    server = create_server(get_wsgi_application(), host="127.0.0.1", port=0, threads=threads)
    print(server.effective_port, flush=True)
    server.run()


if __name__ == "__main__":
    main()
