"""What this machine computes fastest on: the device and the dtype, read from the hardware, never assumed.

On CPUs without native bf16 (AVX2-only, e.g. AMD EPYC here) bf16 matrix products are emulated and run about
100x slower than fp32; with AMX or AVX-512 BF16 they run several times faster. So the CPU's flags decide.
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    return any(flag in cpu_flags(cpuinfo) for flag in NATIVE_BF16_FLAGS)


@functools.cache
def cpu_model_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def fastest_dtype(device: str | None = None, cpuinfo: str | None = None):
    """bf16 on CUDA with bf16 support and on CPUs with native bf16; fp32 otherwise."""
    import torch

    device = device or default_device()
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16(cpuinfo) else torch.float32


def describe() -> str:
    """One line for benchmark tables: CPU model, bf16 support, torch threads."""
    import torch

    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu_model_name()} ({bf16}, {torch.get_num_threads()} threads){gpu}"
