"""Currant's exceptions. Everything a caller may catch derives from CurrantError."""

from __future__ import annotations


class CurrantError(Exception):
    """Base class of Currant's own errors."""


class ConfigurationError(CurrantError, ValueError):
    """A bad name, option or argument, found before any I/O."""


class PayloadTooLarge(ConfigurationError):
    """An encoded payload is over the cap (``App(max_payload_size=...)``)."""


class EnqueueOutcomeUnknown(CurrantError):
    """The connection died while the enqueue was committing.

    The job may or may not exist. Retrying with the same ``unique_key`` is safe:
    a job that did get in is found and its id returned instead of a second one.
    """


class PayloadError(CurrantError, ValueError):
    """A stored payload or result is not a well-formed Currant msgpack value.

    ``str(exc)`` is a human-readable reason, suitable for recording on the job.
    """


class DatabaseUnavailable(CurrantError, ConnectionError):
    """PostgreSQL could not be reached within the connect timeout, or refused us.

    Nothing was sent: whatever the call was about to do did not happen.
    """


class UnknownTask(CurrantError, LookupError):
    """A task name that this app does not know."""


class Retry(Exception):
    """Raise from a task to ask for another attempt after ``delay`` seconds.

    With ``delay=None`` the task's backoff policy picks the delay. The attempt
    still counts against ``max_attempts``.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason


class Discard(Exception):
    """Raise from a task to fail the job at once, without further attempts."""

    def __init__(self, reason: str = "discarded") -> None:
        super().__init__(reason)
        self.reason = reason


class JobTimeout(CurrantError, TimeoutError):
    """A job ran past its task's ``timeout``."""


class JobCancelled(CurrantError):
    """A running job was cancelled by ``App.cancel``; raise it from a sync task that saw the flag."""
