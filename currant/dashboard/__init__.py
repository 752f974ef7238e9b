"""Currant's web dashboard: queues, jobs, workers, schedules and the database's
health, live, with retry and cancel (``pip install "currant[dashboard]"``).

``python -m currant dashboard`` serves it; :func:`asgi_app` returns it as an
ASGI app to mount in a FastAPI, Starlette or Django ASGI project.
"""

from .server import asgi_app

__all__ = ["asgi_app"]
