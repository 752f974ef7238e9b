"""Django tasks of the test project, declared with Django's own decorator."""

from __future__ import annotations

import asyncio
from typing import Any

from currant.contrib.django.compat import task


class Trouble(Exception):
    pass


@task
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="mail")
def fail(message: str) -> None:
    raise Trouble(message)


@task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task(takes_context=True)
def whoami(context: Any) -> dict[str, Any]:
    return {"id": context.task_result.id, "attempt": context.attempt, "status": str(context.task_result.status)}


@task
def record(label: str) -> str:
    return label
