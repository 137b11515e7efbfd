"""The benchmarks write their tables into docs/performance.md: each run replaces its own section and keeps the
others, so the page holds the latest measurement of every benchmark."""
from __future__ import annotations

from bench.report import write_section


def test_a_section_is_replaced_in_place_and_the_others_kept(tmp_path):
    doc = tmp_path / "performance.md"
    write_section("Sampling", "| a | 1 |", doc)
    write_section("DPO training", "| b | 2 |", doc)
    write_section("Sampling", "| a | 3 |", doc)
    text = doc.read_text()
    assert text.startswith("# Performance")
    assert text.count("## Sampling") == 1 and "| a | 3 |" in text and "| a | 1 |" not in text
    assert "| b | 2 |" in text
    assert text.index("## Sampling") < text.index("## DPO training")  # a replaced section keeps its place
