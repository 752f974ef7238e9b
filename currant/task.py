"""Task declarations, their retry policy, and periodic schedules."""

from __future__ import annotations

import inspect
import random
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from . import codec
from .errors import ConfigurationError
from .flow import Call
from .limits import make_limit
from .names import check_name

P = ParamSpec("P")
R = TypeVar("R")

BackoffPolicy = Callable[[int], float]


class Producer(Protocol):
    """What a task needs of its App: the enqueue API (see ``App.enqueue``)."""

    @property
    def enqueue(self) -> Callable[..., int]: ...
    @property
    def aenqueue(self) -> Callable[..., Awaitable[int]]: ...
    @property
    def enqueue_many(self) -> Callable[..., list[int]]: ...
    @property
    def aenqueue_many(self) -> Callable[..., Awaitable[list[int]]]: ...


def default_task_name(function: Callable[..., Any]) -> str:
    """``module.qualname``, with the module named as a worker imports it.

    A function in a file run as a script lives in ``__main__``, but the
    worker imports that file under its own name (``python quickstart.py`` and
    ``python -m currant.worker quickstart:app``): the task is named after the
    file, so both sides agree.
    """
    module = function.__module__
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        path = getattr(main, "__file__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            module = spec.name  # python -m package.module
        elif path and Path(path).stem.isidentifier():
            module = Path(path).stem  # python quickstart.py
        else:
            where = f"file {path!r}" if path else "an interactive session"
            raise ConfigurationError(
                f"task {function.__qualname__!r} is defined in {where}, which a worker cannot import under any"
                " name: pass a name (@app.task(name=...))"
            )
    return f"{module}.{function.__qualname__}"


def exponential_backoff(base: float = 1.0, cap: float = 3600.0) -> BackoffPolicy:
    """Delay before the next attempt: base * 2**(attempt-1), capped, with ±25% jitter.

    The jitter spreads retries of jobs that failed together (a dead dependency)
    so they do not all come back in the same instant.
    """

    def delay(attempt: int) -> float:
        raw = min(cap, base * (2 ** min(max(attempt - 1, 0), 30)))
        return float(raw * random.uniform(0.75, 1.25))

    return delay


class Task(Generic[P, R]):
    """A registered task: call it to run it here, ``enqueue`` it to run it on a worker."""

    def __init__(
        self,
        app: Producer,
        fn: Callable[P, R],
        *,
        name: str,
        queue: str,
        max_attempts: int = 25,
        retry_backoff: float | BackoffPolicy | None = None,
        timeout: float | None = None,
        priority: int = 0,
        rate_limit: str | None = None,
        max_running: int | None = None,
        limit_key: str | Callable[..., Any] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout}")
        self.app = app
        self.fn = fn
        self.name = check_name("task", name)
        self.queue = check_name("queue", queue)
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.priority = priority
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some callables have none to read
            self.signature = None
        self.limit = make_limit(self.name, self.signature, rate_limit, max_running, limit_key)
        if retry_backoff is None:
            self.backoff: BackoffPolicy = exponential_backoff()
        elif callable(retry_backoff):
            self.backoff = retry_backoff
        else:
            self.backoff = exponential_backoff(base=float(retry_backoff))
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__name__ = getattr(fn, "__name__", name)
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<currant.Task {self.name!r} queue={self.queue!r}>"

    def enqueue(self, *args: Any, **kwargs: Any) -> int:
        """Enqueue one job with these arguments; returns its id (one round trip).

        The arguments must fit the function (checked here, not when a worker
        runs it); job options go through :meth:`options`."""
        self.check_arguments(args, kwargs)
        return self.app.enqueue(self, args, kwargs)

    def enqueue_many(self, items: Sequence[Any] | Any, **options: Any) -> list[int]:
        """Enqueue many jobs in one transaction with binary COPY; returns their ids."""
        return self.app.enqueue_many(self, items, **options)

    async def aenqueue(self, *args: Any, **kwargs: Any) -> int:
        self.check_arguments(args, kwargs)
        return await self.app.aenqueue(self, args, kwargs)

    async def aenqueue_many(self, items: Sequence[Any], **options: Any) -> list[int]:
        return await self.app.aenqueue_many(self, items, **options)

    def s(self, *args: Any, **kwargs: Any) -> Call:
        """This task with these arguments, not enqueued: a step of ``app.group`` or ``app.chain``."""
        return Call(self, args, kwargs)

    def options(self, **options: Any) -> _BoundOptions:
        """``add.options(delay=10, depends_on=[job_id]).enqueue(1, 2)``: any option of ``App.enqueue``."""
        return _BoundOptions(self, options)

    def check_arguments(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """A TypeError now for arguments the function would refuse on the worker."""
        if self.signature is None:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            misplaced = sorted(ENQUEUE_OPTIONS.intersection(kwargs))
            hint = f" ({', '.join(misplaced)}: a job option, given as {self.name}.options(...).enqueue(...))"
            raise TypeError(f"task {self.name!r}: {exc}{hint if misplaced else ''}") from None


# The options of App.enqueue: a keyword argument of Task.enqueue with one of
# these names that the function does not take was meant as one.
ENQUEUE_OPTIONS = frozenset(
    {
        "queue",
        "priority",
        "run_at",
        "delay",
        "unique_key",
        "max_attempts",
        "depends_on",
        "on_parent_failure",
        "pass_results",
        "limit_key",
        "connection",
    }
)


class _BoundOptions:
    def __init__(self, task: Task[Any, Any], options: dict[str, Any]) -> None:
        self.task = task
        self.options_ = options

    def enqueue(self, *args: Any, **kwargs: Any) -> int:
        self._check(args, kwargs)
        return self.task.app.enqueue(self.task, args, kwargs, **self.options_)

    async def aenqueue(self, *args: Any, **kwargs: Any) -> int:
        self._check(args, kwargs)
        return await self.task.app.aenqueue(self.task, args, kwargs, **self.options_)

    def _check(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        if self.options_.get("pass_results") is None:  # else the parents' results complete the arguments
            self.task.check_arguments(args, kwargs)


class Periodic:
    """A cron schedule attached to a task (see ``App.periodic``)."""

    def __init__(self, name: str, schedule: str, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        from croniter import croniter  # here, not at import: ~20 ms of every start-up, for apps with no schedule

        if not croniter.is_valid(schedule):
            raise ValueError(f"periodic {name!r}: invalid cron expression {schedule!r}")
        codec.encode_payload(args, kwargs)  # arguments that cannot be encoded fail here, not at every tick
        self.name = check_name("periodic", name)
        self.schedule = schedule
        self.task = task
        self.args = args
        self.kwargs = kwargs
