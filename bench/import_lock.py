"""How long people's writes wait while a large file is imported on SQLite: the whole file in one transaction (how
imports wrote before) against CHUNK_ROWS rows a transaction (now), side by side in one run.

    .venv/bin/python bench/import_lock.py [--rows 20000] [--repeats 2] [--no-write]

Each arm imports the same preference file into a fresh SQLite database (WAL, as the app runs it) while a second
process writes one row every 50 ms, as a label submission does, in its own transaction (SQLite's busy timeout 30 s,
as in settings). The writer starts 2 s before the import and stops 0.5 s after it; only the writes that overlap the
import count. The table gives the import's time and those writes' waits: the median, the 99th percentile (from 100
writes in every repeat; "—" below that, where it is the longest one under another name) and the longest. A write
waiting past the busy timeout fails ("database is locked"), which a label submission shows as an error; that column
is the total over all repeats. Prints the CPU model; writes its table to docs/performance.md unless --no-write.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ONE_TRANSACTION = 10**9  # CHUNK_ROWS that puts a whole file in one transaction: the behaviour before


def _writer(db: str, stop, writes) -> None:
    """A label submission every 50 ms: one INSERT in its own transaction; each one's (start, end, succeeded), on
    time.monotonic (one clock for every process on the machine, so the import's window can be laid over them)."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS bench_probe (at REAL)")
    while not stop.is_set():
        start = time.monotonic()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO bench_probe VALUES (?)", (start,))
            conn.execute("COMMIT")
            writes.append((start, time.monotonic(), True))
        except sqlite3.OperationalError:
            writes.append((start, time.monotonic(), False))
        time.sleep(0.05)


def summarise(writes: list[tuple[float, float, bool]], start: float, end: float) -> dict:
    """The writes that overlap the import (from `start` to `end`): how many, how many failed, and the median, 99th
    percentile (None below P99_MIN_SAMPLES) and longest wait of those that went through. The writer also runs
    before and after the import, where nothing holds the lock: counting those writes would dilute the figures."""
    from bench.report import p99

    during = [(s, e, ok) for s, e, ok in writes if s < end and e > start]
    waits = sorted(e - s for s, e, ok in during if ok)
    return {"writes": len(during), "failed": sum(1 for *_, ok in during if not ok),
            "median": statistics.median(waits) if waits else float("nan"), "p99": p99(waits),
            "max": waits[-1] if waits else float("nan")}


def _arm(chunk_rows: int, rows: int, work: Path) -> dict:
    """Import `rows` preference rows with `chunk_rows` a transaction into a fresh database while the writer runs (in
    this process: a fresh one per arm, started by `main`)."""
    data = work / f"data-{chunk_rows}-{time.monotonic_ns()}"
    os.environ["PREFLOOP_DATA_DIR"] = str(data)
    os.environ["DJANGO_SETTINGS_MODULE"] = "prefloop.settings"
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "PREFLOOP_SERVICES"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from annotate import importers

    call_command("migrate", verbosity=0)
    path = work / "prefs.jsonl"
    if not path.exists():
        with path.open("w") as out:
            for i in range(rows):
                out.write(json.dumps({"prompt": f"Question {i}: what should I know about topic {i * 7919 % 10007}?",
                                      "chosen": f"A careful answer number {i}. " * 4,
                                      "rejected": f"A careless answer number {i}. " * 4}) + "\n")
    ctx = multiprocessing.get_context("spawn")
    stop, manager = ctx.Event(), ctx.Manager()
    writes = manager.list()
    writer = ctx.Process(target=_writer, args=(connection.settings_dict["NAME"], stop, writes))
    writer.start()
    time.sleep(2.0)  # the writer is writing before the import starts
    importers.CHUNK_ROWS = chunk_rows
    start = time.monotonic()
    result = importers.import_preferences(path)
    end = time.monotonic()
    time.sleep(0.5)
    stop.set()
    writer.join()
    return {"took": end - start, "added": result.created, **summarise(list(writes), start, end)}


def _run_arm(chunk_rows: int, rows: int, work: Path) -> dict:
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--arm", str(chunk_rows), "--rows", str(rows), "--work", str(work)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--gap", type=float, default=None, help=argparse.SUPPRESS)  # WRITERS_GAP_S for a probe
    parser.add_argument("--arm", type=int, help=argparse.SUPPRESS)  # one arm, in a process of its own
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    if args.arm is not None:
        print(json.dumps(_arm(args.arm, args.rows, Path(args.work))))
        return 0
    from bench.report import P99_MIN_SAMPLES, machine_line, median, write_section

    arms = [("whole file in one transaction (before)", ONE_TRANSACTION), ("500 rows a transaction (now)", 500)]
    runs: dict[str, list[dict]] = {name: [] for name, _ in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, chunk in arms:
                runs[name].append(_run_arm(chunk, args.rows, Path(tmp)))
                print(name, runs[name][-1], flush=True)
    lines = [f"`.venv/bin/python bench/import_lock.py --rows {args.rows} --repeats {args.repeats}`", "",
             f"{args.rows:,} preference rows into a fresh SQLite database (WAL) while another process writes a row "
             f"every 50 ms in its own transaction (a label submission); {args.repeats} interleaved repeats, medians.",
             "", f"Machine: {machine_line()}.",
             "dtype: none (no model runs in this benchmark: it measures SQLite's write lock).", "",
             "| import writes | import s | writes during it | write wait median ms | p99 ms | longest ms | "
             f"writes failed, total of {args.repeats} repeats (locked past 30 s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    short = False
    for name, _ in arms:
        r = runs[name]
        # a p99 only where every repeat had enough writes for one: a median over some repeats would hide the others
        highs = [x["p99"] for x in r]
        short = short or None in highs
        high = "—" if None in highs else f"{1000 * median(highs):.0f}"
        lines.append(f"| {name} | {median([x['took'] for x in r]):.1f} | {median([x['writes'] for x in r]):.0f} | "
                     f"{1000 * median([x['median'] for x in r]):.1f} | {high} | "
                     f"{1000 * median([x['max'] for x in r]):.0f} | {sum(x['failed'] for x in r)} |")
    lines += ["", "Writes counted are those that overlap the import (the writer also runs 2 s before it and 0.5 s "
              "after)." + (f" p99 —: fewer than {P99_MIN_SAMPLES} such writes in a repeat, where a 99th percentile "
                           "is the longest one or next to it." if short else "")]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_section("Imports and the write lock", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
