"""How long a PrefLoop process takes to start and how much memory it holds, against an earlier commit, side by side.

Every manage.py command (make run's setup runs four), each gunicorn worker and each Celery worker starts Django. Until
4304e14 that imported torch (the admin's modules read the trainer), which no page needs. This runs the same
commands in this checkout and in a temporary worktree of `--against` (by default the commit before that change),
with the same Python and a fresh SQLite database each, interleaved, and prints the medians:

    .venv/bin/python bench/startup.py [--against REV] [--repeats 5]

Peak memory is the process's own high-water mark (ru_maxrss), read as it exits.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402

# manage.py with its arguments, reporting its peak memory as it exits
WRAPPER = """
import atexit, resource, runpy, sys
atexit.register(lambda: sys.stderr.write(f"\\nMAXRSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n"))
if sys.argv[1:] == ["pages"]:  # a web process: a new database, then every page once as a superuser
    import django
    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client
    call_command("migrate", verbosity=0)
    client = Client()
    client.force_login(User.objects.create_superuser("bench", "bench@example.com", "not-a-guess-9"))
    for page in PAGES:
        assert client.get(page).status_code == 200, page
else:
    sys.argv = ["manage.py", *sys.argv[1:]]
    runpy.run_path("manage.py", run_name="__main__")
"""
PAGES = ["/", "/annotate/", "/annotate/quality/", "/annotate/rounds/", "/annotate/import/", "/annotate/export/",
         "/generation/", "/training/", "/compare/", "/compare/leaderboard/", "/compare/rounds/", "/loop/", "/admin/"]
COMMANDS = {
    "manage.py check": ["check", "-v0"],
    "manage.py migrate (a new database)": ["migrate", "--noinput", "-v0"],
    "a web process: migrate, then every page once": ["pages"],
}


def run_once(checkout: Path, args: list[str], data: Path) -> tuple[float, float]:
    """(seconds, peak MB) of one command in `checkout` with a fresh data folder and database."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "PREFLOOP_SERVICES")}
    data.mkdir(parents=True, exist_ok=True)
    env.update(DJANGO_SETTINGS_MODULE="prefloop.settings", PREFLOOP_DATA_DIR=str(data),
               DATABASE_URL=f"sqlite:///{data / 'db.sqlite3'}")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", f"PAGES = {PAGES!r}\n{WRAPPER}", *args], cwd=checkout, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {checkout}:\n{done.stderr[-2000:]}")
    peak = next(int(line.split()[1]) for line in reversed(done.stderr.splitlines()) if line.startswith("MAXRSS_KB"))
    return seconds, peak / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="4304e14~1", help="the earlier commit to start side by side")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print the table only (not docs/performance.md)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="prefloop-startup-") as tmp:
        peer = Path(tmp) / "peer"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(peer), args.against], cwd=ROOT, check=True)
        try:
            results: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for repeat in range(args.repeats):
                for number, (name, command) in enumerate(COMMANDS.items()):
                    for side, checkout in (("peer", peer), ("ours", ROOT)):  # interleaved: a load hurts both
                        data = Path(tmp) / f"{side}-{repeat}-{number}"  # a new folder, so a new database, each run
                        results.setdefault((name, side), []).append(run_once(checkout, command, data))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(peer)], cwd=ROOT, check=False)
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                      text=True).stdout.strip():
        revision += " with changes"  # what ran is the working tree, not the commit alone
    against = subprocess.run(["git", "rev-parse", "--short", args.against], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
    lines = [f"CPU: {report.cpu_line()}; load average {os.getloadavg()[0]:.1f} at the end; "
             f"median of {args.repeats} interleaved runs, each with a new SQLite database",
             "", f"| command | {against} s | {revision} s | speed-up | {against} peak MB | {revision} peak MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in COMMANDS:
        old_s, old_mb = (report.median([r[i] for r in results[name, "peer"]]) for i in (0, 1))
        new_s, new_mb = (report.median([r[i] for r in results[name, "ours"]]) for i in (0, 1))
        lines.append(f"| {name} | {old_s:.2f} | {new_s:.2f} | {old_s / new_s:.2f}x | {old_mb:.0f} | {new_mb:.0f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        print(f"written to {report.write_section('Start-up (bench/startup.py)', table)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
