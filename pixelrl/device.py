"""device=auto|cpu|cuda|cuda:N|mps -> torch.device, with clear errors."""

from __future__ import annotations

import ctypes
import sys

import torch

from pixelrl.errors import ConfigError


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"


def check_spec(spec: str) -> None:
    """Raise ConfigError unless `spec` is one of DEVICE_CHOICES (before any device is touched)."""
    ok = spec in ("auto", "cpu", "cuda", "mps") or (spec.startswith("cuda:") and spec[5:].isdigit())
    if not ok:
        raise ConfigError(f"device={spec!r} is not allowed; choose one of: {DEVICE_CHOICES}")


def resolve_device(spec: str) -> torch.device:
    check_spec(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"device={spec} but CUDA is not available (torch {torch.__version__}, {build}); "
                "use device=cpu or device=auto"
            )
        index = int(spec.split(":")[1]) if ":" in spec else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(
                f"device={spec} but only {count} CUDA device(s) exist (cuda:0..cuda:{count - 1})"
            )
        return torch.device("cuda", index)
    if spec == "mps":
        if not _mps_available():
            raise ConfigError(
                "device=mps but Apple MPS is not available; use device=cpu or device=auto"
            )
        return torch.device("mps")
    raise AssertionError(spec)  # check_spec lets nothing else through


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''})"
    return str(device)


def cpu_multiplies_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions: AMX tiles (Intel Sapphire Rapids and
    later) or AVX512-BF16 dot products (AMD Zen 4 and later, Intel Cooper Lake)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def use_bf16(precision: str, device: torch.device, convolutional: bool = True) -> bool:
    """algo.precision: bf16 autocast where the hardware multiplies bf16 natively (CPUs with AMX or
    AVX512-BF16, bf16-capable CUDA GPUs), fp32 elsewhere (without native support bf16 is
    emulated, slower). A3C on Pong, 2 cores: 1.26x the frames/s on an AMX Xeon, 1.29x on an
    AVX512-BF16 EPYC (BENCHMARKS.md). `auto` keeps fp32 for a network without convolutions."""
    if precision != "auto":
        return precision == "bf16"
    if not convolutional:  # an MLP trunk's small matmuls gain nothing; autocast costs
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_multiplies_bf16()
    return False


def bf16_features(
    module: torch.nn.Module, x: torch.Tensor, device: torch.device, fp32: bool = True
) -> torch.Tensor:
    """`module(x)` (a conv trunk or encoder) under bf16 autocast, returned as fp32 so that the heads,
    the values (which reach hundreds) and the losses keep fp32 resolution; `fp32=False` leaves it
    bf16 for a consumer that takes bf16 itself (DDPG's FeatureLayer)."""
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = module(x)
    return out.float() if fp32 else out


def _cgroup_memory_left() -> int | None:
    """Bytes this process's cgroup may still use (a container's or SLURM job's --mem), or None
    without a limit. cgroup v2 (memory.max) or v1 (memory.limit_in_bytes)."""
    from pathlib import Path

    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "0::/path"
            base = Path("/sys/fs/cgroup") / path.lstrip("/")
            files = ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        for directory in (base, *base.parents):  # the nearest level that sets a limit
            try:
                limit = (directory / files[0]).read_text().strip()
                used = int((directory / files[1]).read_text().strip())
            except (OSError, ValueError):
                continue
            if limit != "max" and int(limit) < 1 << 60:
                return max(0, int(limit) - used)
    return None


def available_memory_bytes() -> int:
    """RAM this process can still take: the system's available memory, or less where a cgroup
    (container, SLURM --mem) sets a limit."""
    import psutil

    available = int(psutil.virtual_memory().available)
    left = _cgroup_memory_left()
    return available if left is None else min(available, left)


def check_process_count(key: str, count: int, per_process_bytes: int, per_cpu: int) -> None:
    """Refuse a number of worker processes this machine cannot hold: more than `per_cpu` per
    CPU, or more memory than is available (each process imports torch: hundreds of MB). Asking
    for 100,000 must end in one line, not in the kernel's OOM killer ending other jobs."""
    import os

    cpus = os.cpu_count() or 1
    memory = available_memory_bytes()
    fits = max(1, min(cpus * per_cpu, memory // per_process_bytes))
    if count > fits:
        raise ConfigError(
            f"{key}={count} starts more processes than this machine can run ({cpus} CPUs, "
            f"{memory / 2**30:.1f} GiB of memory available, about {per_process_bytes / 2**30:.2f} "
            f"GiB per process); use {key} <= {fits}"
        )


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Keep the memory of freed tensors in the process instead of handing it back to the OS.

    By default glibc maps large blocks fresh from the kernel and unmaps them on free, and trims
    the heap whenever its free top exceeds a few hundred KiB. A training step that allocates the
    same few hundred MiB of activations every update then page-faults all of it in again each
    time (DDPG at batch 256 on 84x84 pixels: 7x the minor page faults). Blocks up to
    `mmap_threshold` (glibc's maximum, 32 MiB) now come from the heap, and up to
    `trim_threshold` of free heap is kept for reuse; peak RSS is what the step needs either
    way. Returns False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
