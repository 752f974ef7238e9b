"""Fault points for the fault-injection tests; no-ops unless armed.

``CURRANT_FAULTS="point=action[,point=action...]"`` arms points in this
process. Actions: ``kill`` (SIGKILL this process), ``exit`` (os._exit(3)),
``raise`` (raise :class:`InjectedFault`), ``sleep:<seconds>``. A ``@N`` suffix
on the point fires it only on its N-th pass (``after_claim@3=kill``).
The points: ``after_claim_commit``, ``before_handler``, ``after_handler``,
``before_flush``, ``after_flush``, ``listener_reconnect``, ``rescue_sweep``.
"""

from __future__ import annotations

import os
import signal
import time


class InjectedFault(RuntimeError):
    """Raised by a fault point armed with ``raise``."""


def _parse(spec: str) -> dict[str, tuple[int, str]]:
    armed: dict[str, tuple[int, str]] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        point, _, action = entry.partition("=")
        name, _, nth = point.partition("@")
        armed[name] = (int(nth) if nth else 1, action or "kill")
    return armed


_armed = _parse(os.environ.get("CURRANT_FAULTS", ""))
_passes: dict[str, int] = {}
# Per-job points test this first: a branch, not a call, when nothing is armed.
ARMED = bool(_armed)


def point(name: str) -> None:
    """Mark a fault point; does something only when CURRANT_FAULTS arms it."""
    if not _armed or name not in _armed:
        return
    nth, action = _armed[name]
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] != nth:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        os._exit(3)
    elif action == "raise":
        raise InjectedFault(f"fault injected at {name}")
    elif action.startswith("sleep:"):
        time.sleep(float(action[6:]))
