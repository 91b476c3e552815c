"""What a result was measured on: the CPU, the accelerator, the software and the commit.

Benchmarks put it beside every figure, and every run dir keeps it in run_info.json, so that a
number can always be traced to its machine and code.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), and whether it has AMX tiles."""
    name = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        if " amx_tile" in text:
            name += " (AMX)"
    except OSError:
        pass
    return name


# the CPU features that decide which matmul path a run takes (pixelrl.device.use_bf16)
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """Which of ISA_FLAGS this CPU reports (Linux: /proc/cpuinfo; elsewhere none are listed)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in ISA_FLAGS if f in have]
    return []


def commit() -> str | None:
    """The code's git commit, `+uncommitted` when the work tree differs (None outside git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        # figures measured on uncommitted code must not be credited to the commit
        if head and git("status", "--porcelain", "--untracked-files=no"):
            head += "+uncommitted"
        return head or None
    except (OSError, subprocess.SubprocessError):
        return None


def let_openmp_threads_sleep() -> None:
    """Call before torch loads its OpenMP: threads waiting for work then sleep instead of spinning.
    On a busy machine spinning threads take the cores from the work itself (2 cores, two busy
    processes beside it: a 10-game evaluation took 91 s against 23 s, A2C trained at 1.4k
    against 4.4k frames/s); alone it costs nothing (BENCHMARKS.md). A value the user set is
    kept, and worker processes inherit it."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def machine_info(device: str) -> dict:
    import torch

    from pixelrl.device import resolve_device, use_bf16
    from pixelrl.errors import ConfigError

    info = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # the CLI sets PASSIVE (__main__)
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
    }
    try:  # the path algo.precision=auto takes for a conv net here: bf16 where native, else fp32
        info["auto_precision"] = "bf16" if use_bf16("auto", resolve_device(device)) else "fp32"
    except ConfigError:  # a device this machine lacks: the run itself says so
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    head = commit()
    if head:
        info["commit"] = head
    return info
