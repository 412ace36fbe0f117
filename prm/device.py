"""What the machine offers: waiting for a free GPU before training (the original prm_exp.py did
this on shared machines), and whether this CPU computes bf16 fast."""

from __future__ import annotations

import functools
import logging
import platform
import time
from collections.abc import Callable
from pathlib import Path

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


# CPU flags of bf16 matmul instructions: x86 AVX512-BF16 and AMX, Arm's BF16 extension.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def cpu_bf16_fast(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 matmul instructions (``/proc/cpuinfo`` flags; False where they
    cannot be read). Without them torch's bf16 kernels fall back to slow paths: on an AVX2-only
    EPYC a 1024x1024 bf16 linear ran 8x and ``a @ b`` 160x slower than fp32, so bf16 is a
    default only where this is True (or on a GPU)."""
    if platform.system() == "Darwin":  # Apple M2 and later report Arm's BF16 extension here
        import subprocess

        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return False
        return out.strip() == "1"
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return bool(BF16_CPU_FLAGS & set(value.split()))
    return False


def bf16_default() -> bool:
    """bf16 by default: on a CUDA GPU, or on a CPU with bf16 matmul instructions (`cpu_bf16_fast`)."""
    import torch

    return torch.cuda.is_available() or cpu_bf16_fast()
