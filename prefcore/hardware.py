"""What this machine computes fastest on: the device and the dtype, read from the hardware, never assumed.

On CPUs without native bf16 (AVX2-only, e.g. the older AMD EPYCs here) bf16 matrix products are emulated and run
about 100x slower than fp32; with AMX or AVX-512 BF16 they run several times faster (2-3x at this model's shapes on
a Zen 4 EPYC, measured in docs/performance.md). So the CPU's flags decide what
"auto" means; a dtype choice ("auto", "float32", "bfloat16": PREFLOOP_DTYPE in the product, --dtype in the
benchmarks) resolves here, so sampling, training and evaluation agree. docs/numerics.md says what holds in each.
"""
from __future__ import annotations

import functools
import platform
import sys
from pathlib import Path

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
DTYPE_CHOICES = ("auto", "float32", "bfloat16")
_DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
                "float16": "float16", "fp16": "float16"}


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


# What a machine shows when torch may find a GPU on it: NVIDIA's driver, AMD's (ROCm builds of torch report it as
# cuda), WSL's GPU. Read only to say which dtype a page's note names (shown_device), never to choose where a model
# runs: a GPU these do not cover (a board whose driver has other device files) is still found by default_device.
GPU_SIGNS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def _no_gpu_here() -> bool:
    return not any(Path(sign).exists() for sign in GPU_SIGNS)


def shown_device() -> str:
    """The device a note for the pages names, without importing torch where the machine shows no GPU (torch is 1.5 s
    and 200 MB of a web process that only names the dtype): "cpu" there, default_device() elsewhere or once torch is
    loaded anyway."""
    if "torch" not in sys.modules and _no_gpu_here():
        return "cpu"
    return default_device()


def fastest_dtype(device: str | None = None, cpuinfo: str | None = None):
    """bf16 on CUDA with bf16 support (fp16 on older GPUs) and on CPUs with native bf16; fp32 on other CPUs."""
    import torch

    device = device or default_device()
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, _cpu_dtype_name(cpuinfo))


def _cpu_dtype_name(cpuinfo: str | None = None) -> str:
    return "bfloat16" if cpu_has_native_bf16(cpuinfo) else "float32"


def resolve_dtype(choice=None, device: str | None = None):
    """The torch dtype of a choice: None or "auto" is `fastest_dtype(device)`; a name ("float32", "bfloat16",
    "float16" or fp32/bf16/fp16) or a torch.dtype is taken as it is. An unknown name is a ValueError naming it."""
    import torch

    if choice is None or choice == "auto":
        return fastest_dtype(device)
    if isinstance(choice, torch.dtype):
        return choice
    if choice not in _DTYPE_NAMES:
        raise ValueError(f"dtype must be 'auto' or one of {', '.join(_DTYPE_NAMES)}, got {choice!r}")
    return getattr(torch, _DTYPE_NAMES[choice])


def dtype_name(dtype) -> str:
    """"bfloat16" for torch.bfloat16 (and for the name itself)."""
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def resolved_dtype_name(choice=None, device: str | None = None) -> str:
    """dtype_name(resolve_dtype(choice, device)), without importing torch for a name or for the device "cpu"."""
    if isinstance(choice, str) and choice in _DTYPE_NAMES:
        return _DTYPE_NAMES[choice]
    if choice in (None, "auto") and (device or default_device()) == "cpu":
        return _cpu_dtype_name()
    return dtype_name(resolve_dtype(choice, device))


def describe_dtype(choice=None, device: str | None = None, *, setting: str = "PREFLOOP_DTYPE") -> str:
    """One line saying which dtype a choice gives here and why, e.g. "bfloat16 (native bf16 on this CPU)" or
    "float32 (forced by PREFLOOP_DTYPE)"; `setting` names where a forced choice came from."""
    name = resolved_dtype_name(choice, device)
    if choice not in (None, "auto"):
        return f"{name} (forced by {setting})"
    device = device or default_device()
    if device.startswith("cuda"):
        import torch

        return f"{name} (fastest on {torch.cuda.get_device_name(0)})"
    if cpu_has_native_bf16():
        return f"{name} (native bf16 on this CPU)"
    return f"{name} (no native bf16 on this CPU: bf16 would be emulated)"


def describe() -> str:
    """One line for benchmark tables: CPU model, bf16 support, torch threads."""
    import torch

    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu_model_name()} ({bf16}, {torch.get_num_threads()} threads){gpu}"
