"""The client: one method per API call, errors raised as APIError with the server's message."""
from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

JOB_KINDS = ("generation", "training", "compare", "loop", "import", "export")
DOWNLOAD_CHUNK = 2**20  # bytes read and written at a time by download_export
PUSH_BATCH = 5000  # rows per request at most (a push of more is sent in several)
PUSH_BYTES = 4 * 2**20  # a request's rows, as JSON, at most: under the server's 5 MiB body limit, whatever the rows
_ROW = "api: line "  # how the server names a pushed row ("api: line 3: ..."): the Nth of its request


class APIError(Exception):
    """A refused or failed request: `status` is the HTTP status, `detail` the server's message, `problems` the rows
    it named (a refused push), `errors` the fields (a refused request body) and `job` the job already doing what was
    asked (a 409 for a comparison set or loop run started again while the first is active), else None."""

    def __init__(self, status: int, detail: str, body: dict | None = None):
        super().__init__(f"{status}: {detail}")
        self.status, self.detail, self.body = status, detail, body or {}
        self.problems: list[str] = list(self.body.get("problems", []))
        self.errors: list[dict] = list(self.body.get("errors", []))
        self.job: dict | None = self.body.get("job")

    def __reduce__(self):
        # Exception pickles by its args (here the one message), which __init__ does not take: an error raised in a
        # ProcessPoolExecutor's worker could not be unpickled in the parent (TypeError: missing 'detail'), and the
        # pool broke instead of raising it.
        return type(self), (self.status, self.detail, self.body)


class JobFailed(Exception):
    """A job Client.wait waited for ended failed: `job` is its last state, with the reason in job["error"]."""

    def __init__(self, job: dict):
        super().__init__(f"{job.get('kind', 'the')} job {job.get('id')} failed: {job.get('error') or job.get('stage')}")
        self.job = job

    def __reduce__(self):
        return type(self), (self.job,)


class APIConnectionError(APIError):
    """The request got no answer: the server could not be reached, the connection broke, or no answer came within
    the client's `timeout`. `status` is 0. A write that fails so may or may not have been carried out."""

    def __init__(self, detail: str):
        super().__init__(0, detail)

    def __reduce__(self):
        return type(self), (self.detail,)


TRANSIENT = (0, 502, 503, 504)  # no answer, or a proxy's while the server restarts: `wait` polls again


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would send the token on to wherever a redirect points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class Client:
    """Client(url, token): `url` is where PrefLoop is served (https://host), `token` one of your API tokens."""

    def __init__(self, url: str, token: str, *, timeout: float = 60.0):
        # a URL no request can use ("localhost:8000", without its http://) failed only at the first request, and
        # `wait` took it for a server not reachable yet and tried it again until its deadline (an hour by default)
        self.base = _checked_url(url) + "/api/v1"
        # A token read from a file (Path("token").read_text()) ends in a newline, which http.client refused at the
        # first request with a ValueError quoting the whole header, token and all, into whatever log caught it.
        # Spaces and line ends around it are no part of any token; a character left that no token holds (tokens are
        # printable ASCII: a control character, or one http.client cannot send and fails on as raw) is refused here,
        # showing the token's start only.
        token = token.strip()
        bad = next((char for char in token if not "!" <= char <= "~"), None)
        if bad is not None:
            raise ValueError(f"the token {_shown(token)} holds the character {bad!r}, which no token does: give the "
                             "token as its page showed it")
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # the token never in a repr (a traceback's locals, a debugger, a logged object)
        return f"Client({self.base[:-len('/api/v1')]!r}, {_shown(self.token)})"

    # ---- transport ------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None, *,
                content: tuple[bytes, str] | None = None) -> Any:
        """One call; the parsed JSON answer (None for 204), or APIError. `path` is relative to the API (/versions),
        or as the API writes its own addresses (/api/v1/training/1/metrics). `content`: a body of its own (bytes,
        content type) in place of JSON."""
        resp, url = self._open(method, path, body, query, content=content)
        with resp:
            # the API's own file (an export's download_url), not read: a one-row JSONL file read as JSON was that
            # row, and a longer one "not PrefLoop's API"
            if resp.headers.get("Content-Disposition", "").startswith("attachment"):
                raise APIError(resp.status, f"{url} answered a file, not JSON: fetch an export's file with "
                                            "download_export(job, path)")
            raw = _read(resp, method, url, self.timeout)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise APIError(resp.status, f"{url} did not answer with JSON: is {self.base} PrefLoop's API?") from None

    def _open(self, method: str, path: str, body: Any = None, query: dict | None = None, *,
              content: tuple[bytes, str] | None = None, accept: str = "application/json"):
        """(the open answer, to be read with _read, and its url), or APIError: a refusal with the server's message,
        APIConnectionError for no answer."""
        if path.startswith("/api/v1/"):
            path = path[len("/api/v1"):]
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: _query_value(v) for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Authorization": f"Bearer {self.token}", "Accept": accept}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if content is not None:
            data, headers["Content-Type"] = content
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            return _OPENER.open(req, timeout=self.timeout), url
        except urllib.error.HTTPError as exc:
            try:
                raw = exc.read()
            except (OSError, http.client.HTTPException) as broke:  # TimeoutError is an OSError
                # the status came, its message did not (cut short, or stalled past `timeout`): a proxy's 502 or 503
                # is still one `wait` polls again after, not a bare TimeoutError taken for the job's own
                raise APIError(exc.code, f"{method} {url} answered {exc.code}, but its message broke off "
                                         f"({type(broke).__name__}): it could not be read") from None
            finally:
                exc.close()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {"detail": f"{url} answered {exc.code} without JSON: is {self.base} PrefLoop's API?"}
            payload = payload if isinstance(payload, dict) else {"detail": str(payload)}
            if 300 <= exc.code < 400:
                payload = {"detail": f"redirected to {exc.headers.get('Location')}: is {self.base} PrefLoop's API "
                                     "(https, the right host and path)?"}
            raise APIError(exc.code, str(payload.get("detail", exc.reason)), payload) from None
        except TimeoutError:
            raise APIConnectionError(f"{method} {url}: no answer within {self.timeout:g} s") from None
        except urllib.error.URLError as exc:
            raise APIConnectionError(f"{method} {url}: could not connect ({exc.reason})") from None
        except (OSError, http.client.HTTPException) as exc:
            raise APIConnectionError(f"{method} {url}: the connection broke ({type(exc).__name__}: {exc})") from None

    def get(self, path: str, **query) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body if body is not None else {})

    def patch(self, path: str, body: Any = None) -> Any:
        return self.request("PATCH", path, body=body if body is not None else {})

    # ---- data ----------------------------------------------------------------------------------------------

    def push_prompts(self, rows: Iterable[dict], *, split: str = "train", tag: str = "") -> dict:
        return self._push("/prompts", rows, split=split, tag=tag)

    def push_pairs(self, rows: Iterable[dict], *, round: int | None = None, labels_needed: int | None = None) -> dict:
        return self._push("/pairs", rows, round=round, labels_needed=labels_needed)

    def push_preferences(self, rows: Iterable[dict], *, format: str = "auto", round: int | None = None) -> dict:
        """Labelled preferences (TRL's prompt/chosen/rejected, HH-RLHF, UltraFeedback, ...). Every row of a request
        (5,000 rows or 4 MiB at most: a larger push is sent in several) is checked before any is written: one bad row
        refuses its request and APIError.problems names its row ("line N" is row N of the rows given)."""
        return self._push("/preferences", rows, format=format, round=round)

    def _push(self, path: str, rows: Iterable[dict], **options) -> dict:
        """The rows in as few requests as fit: PUSH_BATCH rows and PUSH_BYTES of them a request at most (5,000 rows
        of 1 KB were over the server's 5 MiB body limit: 413). The answers are added up, their row numbers counted
        from the first row given; a refused request's rows are named so too, and the requests before it stay stored
        (the same rows pushed again add the rest: rows already stored are skipped)."""
        settings = json.dumps({k: v for k, v in options.items() if v is not None}).encode("utf-8")
        total: dict[str, Any] = {"created": 0, "skipped": 0, "set_aside": [], "disagreeing": [], "same_answers": [],
                                 "held_back": []}
        encoded = [json.dumps(row).encode("utf-8") for row in rows]  # a row JSON cannot hold fails before any is sent
        sent = 0
        for batch in _batches(encoded):
            body = b'{"rows": [' + b", ".join(batch) + b"]" + (b", " + settings[1:] if settings != b"{}" else b"}")
            try:
                answer = self.request("POST", path, content=(body, "application/json"))
            except APIError as exc:
                raise _counted_from(exc, sent) from None
            for name, value in answer.items():
                if isinstance(value, list) and isinstance(total.get(name), list):
                    total[name] += [n + sent if isinstance(n, int) else n for n in value]
                elif isinstance(value, int) and isinstance(total.get(name), int):
                    total[name] += value
                else:
                    total.setdefault(name, value)
            sent += len(batch)
        if not sent:  # no rows: asked once all the same, as the server answers it
            return self.post(path, {"rows": [], **json.loads(settings)})
        return total

    def import_file(self, path: str | Path, kind: str, *, format: str = "auto", split: str = "train", tag: str = "",
                    round: int | None = None) -> dict:
        """Upload a JSONL, CSV or Parquet file of prompts, pairs or preferences (`kind`) as an import job, as the
        Import page does: up to the server's import limits (200,000 rows by default), as one job.
        Returns the job; `wait` for it.
        Its rows are checked first (one bad row stores nothing: the job fails with details["problems"]), then
        written; a cancelled job keeps the rows it wrote, and the same file again adds the rest."""
        path = Path(path)
        fields = {"kind": kind, "format": format, "split": split, "tag": tag, "round": "" if round is None else str(round)}
        for name, value in fields.items():  # a lone surrogate cannot be sent as UTF-8: refused as the server would
            if not _utf8(value):
                message = "is not valid Unicode text (a lone surrogate)"
                detail = f"{name}: {message}; the file was not sent"
                raise APIError(400, detail, {"detail": detail, "errors": [{"field": name, "message": message}]})
        return self.request("POST", "/jobs/import", content=_multipart(fields, "file", path.name, path.read_bytes()))

    def preferences(self, *, round: int | None = None, min_agreement: float | None = None,
                    include_automatic: bool = True, soft_labels: bool = False, page_size: int = 500) -> list[dict]:
        """Every decided preference (TRL rows, as the export page writes them), all pages."""
        return list(self.iter_preferences(round=round, min_agreement=min_agreement,
                                          include_automatic=include_automatic, soft_labels=soft_labels,
                                          page_size=page_size))

    def iter_preferences(self, *, page_size: int = 500, **filters) -> Iterator[dict]:
        """Page after page by the last pair id seen (`after`), so a label undone or added meanwhile on a pair pulled or
        still ahead neither skips a row nor repeats one; an older pair decided meanwhile (behind the last id seen)
        comes in the next pull."""
        after: int | None = None
        page: int | None = 1
        while True:
            answer = self.get("/preferences", page_size=page_size, **filters,
                              **({"page": page} if after is None else {"after": after}))
            yield from answer["results"]
            if "conversational" in answer:  # every page in the first page's shape, whatever is labelled meanwhile
                filters["conversational"] = answer["conversational"]
            if "next_after" not in answer:  # a server from before `after`: by page number
                page = answer["next_page"]
                if page is None:
                    return
                continue
            after = answer["next_after"]
            if after is None:
                return

    # ---- labelling rounds ----------------------------------------------------------------------------------

    def labelling_rounds(self) -> list[dict]:
        """Every labelling round with its settings and pair counts, highest round number first."""
        return self.get("/labelling-rounds")

    def labelling_round(self, number: int) -> dict:
        return self.get(f"/labelling-rounds/{int(number)}")

    def create_round(self, number: int | None = None, **settings) -> dict:
        """A new labelling round (guidelines, labels_per_pair, gold_rate, queue_order, route_judge, ...): the rounds
        page's defaults for what is left out; `number` left out: one more than the highest."""
        return self.post("/labelling-rounds", {**({"number": number} if number is not None else {}), **settings})

    def change_round(self, number: int, **settings) -> dict:
        """Change only the settings given; a new labels_per_pair reaches the round's pairs, as on its page."""
        return self.patch(f"/labelling-rounds/{int(number)}", settings)

    # ---- versions ------------------------------------------------------------------------------------------

    def versions(self) -> list[dict]:
        return self.get("/versions")

    def version(self, version_id: int) -> dict:
        return self.get(f"/versions/{int(version_id)}")

    def register_version(self, name: str, path: str, *, kind: str = "full", parent: int | None = None,
                         base: int | None = None, make_current: bool = False) -> dict:
        """Register a checkpoint folder on the server (or, kind "lora", an adapter with its `base` version) as a
        version: trained elsewhere, to generate with, compare and train from. Not current unless `make_current`."""
        body = {"name": name, "path": str(path), "kind": kind, "make_current": make_current,
                **({"parent": int(parent)} if parent is not None else {}),
                **({"base": int(base)} if base is not None else {})}
        return self.post("/versions", body)

    def promote(self, version_id: int, reason: str = "") -> dict:
        """Make a version current: a candidate that has not passed the gate needs a reason (promoted by hand); any
        other version is a rollback. Recorded either way."""
        return self.post(f"/versions/{int(version_id)}/promote", {"reason": reason})

    def check_gate(self, version_id: int) -> dict:
        """Apply the promotion gate to a round's candidate: {"passed", "reason", "current"}; it becomes current when
        it passes."""
        return self.post(f"/versions/{int(version_id)}/gate")

    def leaderboard(self, *, automatic: bool = False) -> dict:
        return self.get("/leaderboard", automatic=automatic)

    def round_metrics(self, number: int) -> dict:
        return self.get(f"/rounds/{int(number)}/metrics")

    def training_metrics(self, run_id: int) -> dict:
        """One training run's metrics, summary and every step's (a training job's details["metrics_url"])."""
        return self.get(f"/training/{int(run_id)}/metrics")

    # ---- jobs ----------------------------------------------------------------------------------------------

    def start_generation(self, n_prompts: int, **options) -> dict:
        return self.post("/jobs/generation", {"n_prompts": n_prompts, **options})

    def start_training(self, **options) -> dict:
        return self.post("/jobs/training", options)

    def start_compare(self, version_a: int, version_b: int, **options) -> dict:
        return self.post("/jobs/compare", {"version_a": version_a, "version_b": version_b, **options})

    def start_loop(self, rounds: int, pairs: int, judge: str, **options) -> dict:
        return self.post("/jobs/loop", {"rounds": rounds, "pairs": pairs, "judge": judge, **options})

    def start_export(self, format: str = "jsonl", round: int | None = None, min_agreement: float | None = None,
                     include_automatic: bool = True, soft_labels: bool = False, license: str | None = None) -> dict:
        """Export the decided pairs as the Export page does, as a job: `format` jsonl (TRL rows), parquet, or hf (a
        Hugging Face data set folder, zipped). Returns the job; `wait` for it, then `download_export` its file."""
        body = {"format": format, "include_automatic": include_automatic, "soft_labels": soft_labels,
                **({"round": round} if round is not None else {}),
                **({"min_agreement": min_agreement} if min_agreement is not None else {}),
                **({"license": license} if license is not None else {})}
        return self.post("/jobs/export", body)

    def download_export(self, job: dict | int, path: str | Path) -> Path:
        """Write a finished export's file to `path` (a new file, or an existing folder to write it inside under the
        job's file name); returns where it was written. An existing file is never overwritten (FileExistsError,
        nothing asked of the server), and a download that breaks off leaves nothing at the path. APIError 409 while
        the job has not succeeded."""
        if isinstance(job, dict):
            kind, job_id = _job_of(job)
            if kind != "export":
                raise ValueError(f"{kind} job {job_id} is not an export: only an export job has a file")
        else:
            job_id = int(job)
        as_folder = str(path).endswith(("/", os.sep))  # "downloads/" names a folder (Path drops the slash)
        path = Path(path)
        if as_folder and path.exists() and not path.is_dir():
            raise FileExistsError(f"{path} is a file, not a folder (a path ending in / names a folder)")
        if as_folder and not path.is_dir():
            raise FileNotFoundError(f"no such folder {path}/ (a path ending in / names a folder): make it first")
        if path.is_dir():
            path = path / Path(self.job("export", job_id)["details"]["file_name"]).name
        if path.exists():
            raise FileExistsError(f"{path} exists already: a download never overwrites a file; give a new path")
        if not path.parent.is_dir():  # said before the server is asked for the file
            raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist: make it first")
        resp, url = self._open("GET", f"/jobs/export/{job_id}/file", accept="application/octet-stream")
        with resp:
            try:
                out = path.open("xb")  # created here, or refused: a file made meanwhile is not overwritten either
            except FileExistsError:
                raise FileExistsError(f"{path} exists already: a download never overwrites a file") from None
            try:
                with out:
                    while chunk := _read(resp, "GET", url, self.timeout, DOWNLOAD_CHUNK):
                        out.write(chunk)
                if getattr(resp, "length", None):  # bytes still owed of its Content-Length: the answer ended early
                    raise APIConnectionError(f"GET {url}: the connection broke {resp.length:,} bytes before the end")
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        return path

    def job(self, kind: str, job_id: int) -> dict:
        return self.get(f"/jobs/{_kind(kind)}/{int(job_id)}")

    def jobs(self, kind: str, *, active: bool | None = None, before: int | None = None) -> list[dict]:
        """The 50 newest jobs of a kind (newest first); `active` True: only those at work, False: only ended ones;
        `before`: only older than that id (the next page: the last id of this one)."""
        query = {"kind": _kind(kind), **({} if active is None else {"active": "true" if active else "false"}),
                 **({} if before is None else {"before": int(before)})}
        return self.get("/jobs", **query)

    def cancel(self, job_or_kind: dict | str, job_id: int | None = None) -> dict:
        kind, job_id = _job_ref(job_or_kind, job_id)
        return self.post(f"/jobs/{kind}/{job_id}/cancel")

    def wait(self, job_or_kind: dict | str, job_id: int | None = None, *, timeout: float = 3600.0,
             poll: float = 2.0, on_progress: Callable[[dict], None] | None = None, check: bool = True) -> dict:
        """Poll the job until it is no longer queued or running; its last state. A job that failed raises JobFailed
        (its state in `.job`, its reason in `.job["error"]`) unless `check` is False: returned like any other end,
        a script went on after a failed round as if it had trained. A cancelled job is returned (someone chose to
        stop it; its "status" says so). TimeoutError after `timeout` s (the job keeps running: cancel it if it should
        stop). A poll that gets no answer, or a proxy's 502/503/504, is tried again until then (a server
        restarting, a slow answer); one still failing at the deadline is raised as it is (APIConnectionError), not
        as TimeoutError: the job may well have ended."""
        if not (poll >= 0 and timeout >= 0):  # a negative poll polled as fast as it could (time.sleep refused it)
            raise ValueError(f"wait(timeout={timeout!r}, poll={poll!r}): both are seconds, 0 or more")
        kind, job_id = _job_ref(job_or_kind, job_id)
        deadline = time.monotonic() + timeout
        while True:
            try:
                state = self.job(kind, job_id)
            except APIError as exc:
                if exc.status not in TRANSIENT or time.monotonic() >= deadline:
                    raise
                _sleep_until(deadline, poll)
                continue
            if on_progress:
                on_progress(state)
            if not state["active"]:
                if check and state["status"] == "failed":
                    raise JobFailed(state)
                return state
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{kind} job {job_id} still {state['status']} after {timeout:g} s")
            _sleep_until(deadline, poll)

    # ---- labelling -----------------------------------------------------------------------------------------

    def next_pair(self) -> dict | None:
        """The pair leased to you now, or None when nothing is left to label."""
        return self.post("/label/next")

    def lease(self, pair: int) -> dict:
        """Lease one chosen pair, for staff and automatic labellers whose scripts pick their pairs (a person's token
        gets 403); the queue's rules hold (409 otherwise)."""
        return self.post("/label/lease", {"pair": pair})

    def label(self, lease: int, side: str, **options) -> dict:
        """Label the pair leased to you, named by its lease (the "lease" of next_pair's or lease's answer); options
        (strength, comment, seconds) given as None are left out, as the pushes leave them."""
        return self.post("/label/submit", {"lease": lease, "side": side,
                                           **{k: v for k, v in options.items() if v is not None}})

    def skip(self, lease: int) -> dict:
        return self.post("/label/skip", {"lease": lease})

    def undo(self, lease: int | None = None) -> dict:
        """Take back your last label (within a minute); its pair is leased to you again. With `lease` (as label()
        answered it), that lease's label, and a retry undoes nothing more: the same lease answers, leased again."""
        return self.post("/label/undo", {} if lease is None else {"lease": lease})

    # ---- blind votes ---------------------------------------------------------------------------------------

    def open_sets(self) -> list[dict]:
        """The answered blind sets, newest first (50 at most), with your votes on each: [{"set", "comparisons",
        "voted", "created"}], naming no version."""
        return self.get("/compare/sets")

    def next_comparison(self, set_id: int) -> dict:
        """The next comparison of a blind set for you to vote on: {"set", "voted", "count", "left_out",
        "comparison", "prompt", "left", "right"}, naming no version; "comparison" is None when none is left."""
        return self.get(f"/compare/sets/{int(set_id)}/next")

    def vote(self, comparison: int, side: str) -> dict:
        """Vote on a comparison: "left", "right", "tie" or "both_bad"; then which version was on which side
        {"comparison", "side", "recorded", "left_version", "right_version"}. A second vote changes nothing
        ("recorded" False, "side" the first one's)."""
        return self.post(f"/compare/comparisons/{int(comparison)}/vote", {"side": side})

    def label_progress(self) -> dict:
        """Your labels in all and today, and the open pairs left for you: {"done", "today", "remaining"}."""
        return self.get("/label/progress")


def _batches(rows: list[bytes]) -> Iterator[list[bytes]]:
    """Rows (each as JSON) in lists of PUSH_BATCH at most and PUSH_BYTES at most, a row over PUSH_BYTES alone (the
    server then names the limit)."""
    batch: list[bytes] = []
    size = 0
    for row in rows:
        if batch and (len(batch) >= PUSH_BATCH or size + len(row) + 2 > PUSH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += len(row) + 2  # and its ", "
    if batch:
        yield batch


def _counted_from(exc: APIError, sent: int) -> APIError:
    """A refused push's error with its rows named from the first row given ("api: line 3" of the request after
    5,000 rows sent is row 5,003), saying what the requests before it stored."""
    if not sent:
        return exc

    def counted(text: str) -> str:
        head, *named = text.split(_ROW)
        for i, rest in enumerate(named):
            digits = len(rest) - len(rest.lstrip("0123456789"))
            if digits:
                named[i] = f"{int(rest[:digits]) + sent}{rest[digits:]}"
        return _ROW.join([head, *named])

    detail = (f"{counted(exc.detail)} (rows 1 to {sent:,}, sent before in requests of their own, were stored; "
              "pushing the same rows again adds the rest)")
    if isinstance(exc, APIConnectionError):
        return APIConnectionError(detail)
    body = {**exc.body, "detail": detail, "problems": [counted(p) for p in exc.problems]}
    return APIError(exc.status, detail, body)


def _read(resp, method: str, url: str, timeout: float, size: int | None = None) -> bytes:
    """The answer's body (`size` bytes of it at most, when given), or APIConnectionError when it breaks off or stalls
    past `timeout`."""
    try:
        return resp.read(size)
    except TimeoutError:
        raise APIConnectionError(f"{method} {url}: no answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise APIConnectionError(f"{method} {url}: the connection broke ({type(exc).__name__}: {exc})") from None


def _shown(token: str) -> str:
    """A token as an error or a repr may show it: its start as the account page lists it ("pfl_" and 6 more), and
    never more than half of it (a short or mangled one), so never the whole."""
    return repr(token[:min(10, len(token) // 2)] + "...")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _multipart(fields: dict[str, str], file_field: str, file_name: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with text fields and one file; (body, content type)."""
    boundary = f"prefloop-{uuid.uuid4().hex}"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    quoted = file_name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
    # a name the file system gave in bytes no encoding reads (lone surrogates) is sent with "?" in their place
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{quoted}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode("utf-8", "replace") + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _query_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _kind(kind: str) -> str:
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}: expected one of {', '.join(JOB_KINDS)}")
    return kind


def _checked_url(url: str) -> str:
    """`url` without the spaces around it and its last slash, or a ValueError: one no request can use (no http:// or
    https://, no host, a port that is no number, a space or control character inside, which urlsplit drops
    silently and the request does not)."""
    raw = url.strip()
    problem = ValueError(f"url {url!r}: expected where PrefLoop is served, as http://host:port or https://host")
    if any(char.isspace() or not char.isprintable() for char in raw):
        raise problem
    try:
        parts = urllib.parse.urlsplit(raw)
        parts.port  # noqa: B018 (read for its check: a port that is no number or out of range raises)
    except ValueError:
        raise problem from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise problem
    return raw.rstrip("/")


def _sleep_until(deadline: float, poll: float) -> None:
    """Sleep `poll` s, or until `deadline` when that comes first: a poll longer than the time left overran the
    timeout by up to a whole poll (timeout=60, poll=600 waited ten minutes)."""
    time.sleep(max(0.0, min(poll, deadline - time.monotonic())))


def _job_of(job: dict) -> tuple[str, int]:
    """A job dict's kind and id, as a start_* call or `job` returns them; a ValueError for a dict without them (a
    KeyError traceback before)."""
    missing = [key for key in ("kind", "id") if key not in job]
    if missing:
        raise ValueError(f"a job as a start_* call or job() returns it holds its kind and id; this one has no "
                         f"{' and no '.join(missing)} (give the kind and the id instead)")
    return _kind(job["kind"]), int(job["id"])


def _job_ref(job_or_kind: dict | str, job_id: int | None) -> tuple[str, int]:
    if isinstance(job_or_kind, dict):
        return _job_of(job_or_kind)
    if job_id is None:
        raise ValueError("give a job (as returned by a start_* call) or a kind and an id")
    return _kind(job_or_kind), int(job_id)
