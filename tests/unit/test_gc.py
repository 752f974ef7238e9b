"""A worker process settles its garbage collector (see settle_garbage_collector)."""

from __future__ import annotations

import subprocess
import sys


def test_a_worker_process_freezes_start_up_and_collects_young_objects_less_often() -> None:
    code = (
        "import gc; from currant.worker.worker import settle_garbage_collector;"
        "assert gc.get_freeze_count() == 0; settle_garbage_collector();"
        "print(gc.get_threshold()[0], gc.get_freeze_count() > 1000)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["50000", "True"]
