"""Waiting for a free GPU before training (the original prm_exp.py did this on shared machines)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def free_gpu_memory_gb() -> list[float]:
    """Free memory of every visible CUDA device in GiB (empty without a GPU)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.mem_get_info(i)[0] / 2**30 for i in range(torch.cuda.device_count())]


def wait_for_gpu(min_free_gb: float, timeout_min: float, poll_s: float = 30.0,
                 probe: Callable[[], list[float]] = free_gpu_memory_gb, sleep: Callable[[float], None] = time.sleep) -> int | None:
    """Block until some GPU has ``min_free_gb`` free, checking every ``poll_s`` seconds for at most
    ``timeout_min`` minutes. Returns that GPU's index, or None when there is no GPU at all (CPU
    runs go on at once). Raises TimeoutError when the wait runs out."""
    deadline = time.monotonic() + timeout_min * 60
    while True:
        free = probe()
        if not free:
            log.info("no GPU visible: not waiting")
            return None
        best = max(range(len(free)), key=free.__getitem__)
        if free[best] >= min_free_gb:
            log.info("GPU %d has %.1f GiB free", best, free[best])
            return best
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no GPU reached {min_free_gb} GiB free within {timeout_min} min (most free: {free[best]:.1f} GiB)")
        log.info("waiting for a GPU with %.1f GiB free (most free now: %.1f GiB)", min_free_gb, free[best])
        sleep(poll_s)
