"""The app the limit tests' workers run (DSN and schema from the environment).

``register`` declares the same tasks on the tests' own App, so that their
producer knows the limits too. The ``time.sleep`` calls are the handlers' own
work: a job that takes a while, so that running jobs overlap.
"""

from __future__ import annotations

import time

import currant


def register(app: currant.App) -> None:
    @app.task(name="limited.slow", max_running=3)
    def slow() -> None:
        time.sleep(0.05)

    @app.task(name="limited.per_customer", max_running=1, limit_key="customer")
    def per_customer(customer: str, n: int = 0) -> None:
        time.sleep(0.1)

    @app.task(name="limited.paced", rate_limit="50/s")
    def paced() -> None:
        pass

    @app.task(name="limited.slowly_paced", rate_limit="2/s")
    def slowly_paced() -> None:
        pass

    @app.task(name="limited.hourly", rate_limit="1/h")
    def hourly() -> None:
        pass

    @app.task(name="limited.free")
    def free() -> None:
        pass


app = currant.App()
register(app)
