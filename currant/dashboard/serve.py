"""``python -m currant dashboard``: serve the dashboard with uvicorn.

Binds 127.0.0.1 by default. Any other address needs basic auth
(``CURRANT_DASHBOARD_USER`` and ``CURRANT_DASHBOARD_PASSWORD``) unless
``--insecure`` says an open dashboard there is intended. Credentials come
from the environment only, never from the command line, and nothing secret is
logged (the DSN is shown without its password).
"""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from .. import dsn as dsns
from .. import schema as schemas
from ..app import App
from .server import PASSWORD_ENV, USER_ENV, asgi_app, credentials_from_env

log = logging.getLogger("currant.dashboard")


class Refused(ValueError):
    """The dashboard will not start like this (the message says why and what to do)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_exposure(host: str, has_auth: bool, insecure: bool) -> None:
    if is_loopback(host) or has_auth or insecure:
        return
    raise Refused(
        f"refusing to serve the dashboard on {host} without a password: anyone who reaches that address could "
        f"retry and cancel jobs. Set {USER_ENV} and {PASSWORD_ENV} (basic auth), or pass --insecure if the network "
        "is trusted."
    )


def check_schema(app: App) -> None:
    """The dashboard reads tables of the latest migration: say so at once if they are missing."""
    have = app.run_plan(schemas.current_version(app.schema))
    need = schemas.latest_version(app.schema)
    if have is None or have < need:
        state = "not installed" if have is None else f"at version {have}"
        raise Refused(
            f"Currant's schema {app.schema!r} is {state}; the dashboard needs version {need}: "
            "run `python -m currant migrate` (as the schema's owner) first"
        )


def serve(app: App, *, host: str, port: int, read_only: bool, insecure: bool) -> int:
    credentials = credentials_from_env()
    check_exposure(host, credentials is not None, insecure)
    check_schema(app)
    application = asgi_app(app, read_only=read_only, credentials=credentials, use_env=False)
    shown = f"[{host}]" if ":" in host else host
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log.info(
        "currant dashboard on http://%s:%d/ for %s, schema %s%s%s",
        shown,
        port,
        dsns.describe(app.dsn),
        app.schema,
        "; read-only" if read_only else "",
        "; basic auth on" if credentials else "",
    )
    # Open pages hold their event streams forever: on Ctrl-C or SIGTERM, give them a moment, then stop.
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    return 0
