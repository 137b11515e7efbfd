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


def machine_line() -> str:
    """CPU model, bf16 support, threads, and whether other work shared the cores (load average above the threads)."""
    import torch

    from prefcore.hardware import describe

    load = os.getloadavg()[0]
    shared = "shared machine" if load > torch.get_num_threads() + 0.5 else "machine otherwise idle"
    return f"{describe()}; {shared} (load average {load:.1f} at the end)"


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
