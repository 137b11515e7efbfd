"""Load test of the labelling workspace over loopback: the real server (gunicorn, 127.0.0.1 only) on a fresh SQLite
database, 32 annotators with their own sessions, each request being what a key press does: submit a label and get
the next pair back (one htmx POST). (a) no pause for 60 s, (b) a human pace of one label per 3 s each; then the
database is checked for duplicate labels and over-assigned pairs. Prints a table with the CPU model name, the load
average and the SQL queries one page view and one key press cost. The server runs with DEBUG off, as in production
(DEBUG=1 in the environment turns it on).

    .venv/bin/python bench/labelling_load.py [--annotators 32] [--seconds 60] [--human-seconds 60] [--pairs 20000]
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The id a key press names: the lease on screen (templates/annotate/_pair.html, data-lease), which is what
# annotate.forms.LeaseForm takes from an ordinary annotator; a pair's own id is for staff and automatic labellers only.
LEASE_ID = re.compile(rb'data-lease="(\d+)"')


def lease_on(page: bytes) -> str | None:
    """The id of the lease a page shows, or None when it shows no pair (nothing left to label)."""
    found = LEASE_ID.search(page)
    return found.group(1).decode() if found else None


def label_form(lease: str, side: str) -> dict[str, str]:
    """The fields of a key press on the labelling page (what its form posts)."""
    return {"lease": lease, "side": side, "seconds": "1.5"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup_django(data_dir: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{data_dir / 'db.sqlite3'}"
    os.environ["PREFLOOP_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefloop.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _seed(pairs: int, users: int) -> list[str]:
    """Pairs in one round needing one label each, and users with a logged-in session each; returns session keys."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django.db import transaction

    from annotate.models import LabellingRound, Pair
    from generation.models import Prompt, Response

    call_command("migrate", verbosity=0, interactive=False)
    with transaction.atomic():
        round_ = LabellingRound.objects.create(number=1, guidelines="Pick the more helpful answer.")
        prompts = Prompt.objects.bulk_create(
            [Prompt(text=f"Question {i}: how does step {i} work?", hash=f"bench-{i}") for i in range(pairs)]
        )
        responses = Response.objects.bulk_create(
            [Response(prompt=p, text=f"Answer {side} to {p.text} " + "Some *markdown* and `code`. " * 8)
             for p in prompts for side in ("A", "B")]
        )
        Pair.objects.bulk_create([
            Pair(prompt=p, response_a=responses[2 * i], response_b=responses[2 * i + 1], round=round_)
            for i, p in enumerate(prompts)
        ])
        keys = []
        for i in range(users):
            user = get_user_model().objects.create_user(f"bench{i}")
            session = SessionStore()
            session[SESSION_KEY] = str(user.pk)
            session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            session[HASH_SESSION_KEY] = user.get_session_auth_hash()
            session.create()
            keys.append(session.session_key)
    return keys


class Annotator:
    """One person's browser: a keep-alive connection, a session cookie and the lease of the pair on screen."""

    def __init__(self, port: int, session_key: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookies = {"sessionid": session_key}
        self.lease: str | None = None

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> bytes:
        headers = dict(headers or {})
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected):  # an idle keep-alive closed: reconnect, as browsers do
            self.conn.close()
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        data = response.read()
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name.strip()] = rest.split(";", 1)[0]
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data[:200]!r}")
        return data

    def open_page(self) -> None:
        page = self._request("GET", "/annotate/")
        self.csrf = re.search(rb'"X-CSRFToken": "([^"]+)"', page).group(1).decode()
        self.lease = lease_on(page)

    def label(self, side: str) -> float:
        """Press a key: submit the label and receive the next pair; returns the seconds it took."""
        body = urllib.parse.urlencode(label_form(self.lease, side)).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true",
                   "X-CSRFToken": self.csrf}
        start = time.perf_counter()
        data = self._request("POST", "/annotate/submit/", body, headers)
        elapsed = time.perf_counter() - start
        self.lease = lease_on(data)
        return elapsed


def _wait_until_serving(port: int, workers: int, limit: float = 120.0) -> None:
    """Until the server answers HTTP, not only accepts: gunicorn binds the port before its workers have loaded
    Django, and requests queued meanwhile would count start-up as latency. Any answer will do (/healthz says 503
    where a service it checks is absent); a few more on fresh connections give each worker its chance to load."""
    deadline, answered = time.monotonic() + limit, 0
    while answered < 2 * workers:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            answered += 1
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer on 127.0.0.1:{port} within {limit:.0f} s") from None
            time.sleep(0.1)


def _drive(annotators: list[Annotator], seconds: float, pause: float) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    sides = ("left", "right", "tie", "both_bad")

    def run(i: int, annotator: Annotator) -> None:
        mine = []
        try:
            if pause:  # people arrive spread over the first interval, not all opening the page at one instant
                time.sleep(pause * i / len(annotators))
            annotator.open_page()
            # each person labels for `seconds` from their page: a first request queued behind a slow start must not
            # eat the run (a 5 s run once recorded nothing), and labels/s stays labels over `seconds` each
            deadline = time.monotonic() + seconds
            n = 0
            while time.monotonic() < deadline and annotator.lease:
                started = time.monotonic()
                mine.append(annotator.label(sides[(i + n) % 4]))
                n += 1
                if pause:
                    time.sleep(max(0.0, pause - (time.monotonic() - started)))
        except Exception as exc:  # reported in the table
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(annotators)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors


def _query_counts(session_key: str) -> dict[str, int]:
    """SQL statements of one page view and one key press, counted in process (the same code the server runs)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="127.0.0.1")
    client.cookies["sessionid"] = session_key
    client.get("/annotate/")  # the lease is taken here; the count below is of a reload
    with CaptureQueriesContext(connection) as page:
        html = client.get("/annotate/").content
    lease = lease_on(html)
    if lease is None:
        raise RuntimeError("the labelling page shows no lease (data-lease): nothing to count a key press on")
    with CaptureQueriesContext(connection) as submit:
        response = client.post("/annotate/submit/", label_form(lease, "left"), HTTP_HX_REQUEST="true")
    # a refused key press costs fewer queries than a recorded one: a count of one would understate the path
    if response.status_code != 200 or lease_on(response.content) == lease:
        raise RuntimeError(f"the counted key press was not recorded (HTTP {response.status_code})")
    return {"page GET": len(page), "submit + next": len(submit)}


def _database_checks() -> dict:
    from django.db.models import Count, F

    from annotate.models import Label, Pair

    return {
        "labels": Label.objects.count(),
        "duplicate labels": Label.objects.values("pair", "annotator").annotate(n=Count("pk")).filter(n__gt=1).count(),
        "over-assigned pairs": Pair.objects.filter(labels_done__gt=F("labels_needed")).count()
        + Pair.objects.annotate(n=Count("labels")).filter(n__gt=F("labels_needed")).count(),
        "counter mismatches": Pair.objects.annotate(n=Count("labels")).exclude(n=F("labels_done")).count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0, help="Length of the no-pause run.")
    parser.add_argument("--human-seconds", type=float, default=60.0, help="Length of the human-pace run.")
    parser.add_argument("--pace", type=float, default=3.0, help="Seconds between labels at human pace.")
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes.")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker.")
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="prefloop-bench-"))
    _setup_django(data_dir)
    from bench.report import cpu_line

    t0 = time.perf_counter()
    sessions = _seed(args.pairs, 2 * args.annotators + 1)
    print(f"seeded {args.pairs} pairs and {2 * args.annotators + 1} users in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    queries = _query_counts(sessions.pop())
    debug = os.environ.get("DEBUG", "0")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "prefloop.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(args.workers), "--threads", str(args.threads), "--worker-class", "gthread",
         "--keep-alive", "10", "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "DEBUG": debug},
    )
    try:
        _wait_until_serving(port, args.workers)
        n = args.annotators
        print(f"(a) {n} annotators, no pause, {args.seconds:.0f} s ...", file=sys.stderr)
        fast, fast_errors = _drive([Annotator(port, s) for s in sessions[:n]], args.seconds, 0.0)
        print(f"(b) {n} annotators, one label per {args.pace:.0f} s each, {args.human_seconds:.0f} s ...",
              file=sys.stderr)
        human, human_errors = _drive([Annotator(port, s) for s in sessions[n:]], args.human_seconds, args.pace)
    finally:
        server.terminate()
        server.wait(timeout=30)
    checks = _database_checks()

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nCPU: {cpu_line()}, load average {load}; server: gunicorn "
          f"{args.workers} workers x {args.threads} threads, DEBUG {'on' if debug.strip().lower() in {'1', 'true', 'yes', 'on'} else 'off'}, "
          f"SQLite (WAL, IMMEDIATE); {n} annotators; request = submit label + next pair")
    print("dtype: none (no model runs in this benchmark: it measures the labelling web path)")
    print("SQL queries per request: " + ", ".join(f"{k} {v}" for k, v in queries.items()))
    from bench.report import P99_MIN_SAMPLES, p99

    print(f"{'run':<26}{'labels':>8}{'labels/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
    for name, values, seconds, errors in (("(a) no pause", fast, args.seconds, fast_errors),
                                          (f"(b) one per {args.pace:.0f} s each", human, args.human_seconds,
                                           human_errors)):
        if not values:
            print(f"{name:<26}{0:>8}{'-':>10}{'-':>9}{'-':>9}{'-':>9}{len(errors):>8}")
            continue
        high = p99(values)
        print(f"{name:<26}{len(values):>8}{len(values) / seconds:>10.1f}{statistics.median(values) * 1000:>9.1f}"
              f"{'—' if high is None else f'{high * 1000:.1f}':>9}{max(values) * 1000:>9.1f}{len(errors):>8}")
    if min(len(fast), len(human)) < P99_MIN_SAMPLES:
        print(f"p99 —: fewer than {P99_MIN_SAMPLES} labels in that run, where a 99th percentile is the longest one "
              "or next to it")
    for key, value in checks.items():
        print(f"{key:<26}{value:>8}")
    for err in (fast_errors + human_errors)[:5]:
        print("error:", err)
    bad = checks["duplicate labels"] or checks["over-assigned pairs"] or checks["counter mismatches"]
    if not fast or not human or not checks["labels"]:
        # an empty run measures nothing: its blank rows must not read as a server that was fast and never failed
        print(f"FAILED: a run recorded no label ((a) {len(fast)} key presses, (b) {len(human)}, {checks['labels']} "
              f"labels in the database): the figures above measure nothing (a pool of {args.pairs} pairs the first "
              "run empties leaves none for the second: raise --pairs)", file=sys.stderr)
        return 1
    return 1 if bad or fast_errors or human_errors else 0


if __name__ == "__main__":
    sys.exit(main())
