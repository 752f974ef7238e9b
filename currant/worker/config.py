"""A worker's settings, checked once at start (the CLI's flags map onto these)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class WorkerConfig:
    queues: list[str] = field(default_factory=lambda: ["default"])
    concurrency: int = 4
    burst: bool = False
    poll_interval: float = 1.0
    batch_size: int = 1000
    heartbeat: float = 5.0
    dead_after: float = 30.0
    max_rescues: int = 3
    shutdown_grace: float = 30.0
    keep_succeeded: float = 24 * 3600.0
    keep_failed: float = 7 * 24 * 3600.0
    prune_batch: int = 10_000
    max_flush: int = 10_000
    # A round trip that takes longer is abandoned and retried on a new
    # connection: the only way to notice a half-open TCP connection, which
    # keepalives cannot see while a proxy on the path still answers them.
    # Default: dead_after (past it, the lease is lost anyway).
    db_timeout: float | None = None
    # Where to LISTEN when the DSN leads to a transaction-mode pooler (which
    # cannot carry LISTEN): a direct connection string. Without one such a
    # worker polls (every poll_interval). Default: $CURRANT_LISTEN_DSN.
    listen_dsn: str | None = None
    # How the app was named (``module:app``), for the start-up line.
    label: str = ""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if self.poll_interval <= 0:
            raise ValueError(f"poll interval must be positive, got {self.poll_interval}")
        if self.heartbeat <= 0 or self.dead_after <= self.heartbeat:
            raise ValueError(f"need 0 < heartbeat ({self.heartbeat}) < dead_after ({self.dead_after})")
        if self.listen_dsn is None:
            self.listen_dsn = os.environ.get("CURRANT_LISTEN_DSN") or None
        if not self.queues:
            raise ValueError("a worker needs at least one queue")
        if self.db_timeout is None:
            self.db_timeout = self.dead_after
        elif self.db_timeout <= 0:
            raise ValueError(f"db timeout must be positive, got {self.db_timeout}")

    @property
    def round_trip_timeout(self) -> float:
        return float(self.db_timeout or self.dead_after)
