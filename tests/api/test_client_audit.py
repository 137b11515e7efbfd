"""The client audit's findings, each as the attack or the mistake that found it: a token read from a file, an error
sent across processes, a body or an upload field the API took without a word, two targets of which one was dropped,
a malformed upload answered "Bad Request", and the docs' client example that failed as written."""
from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import pytest

from annotate.models import Label
from compare.models import CompareJob
from generation.models import ModelVersion, Prompt
from loop.models import LoopRun
from prefloop_client import APIConnectionError, APIError, Client
from tests.annotate.factories import make_pair
from tests.api.conftest import http
from training.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _refused(client: Client, path: str, body: dict) -> APIError:
    with pytest.raises(APIError) as caught:
        client.post(path, body)
    assert caught.value.status == 400, caught.value
    return caught.value


# ---- the token --------------------------------------------------------------------------------------------------


def test_a_token_read_from_a_file_works_and_is_never_shown_whole(live_server, staff, token_for, tmp_path):
    """Path("token").read_text() ends in a newline: http.client refused the header with a raw ValueError that quoted
    the whole token, into whatever log caught it."""
    token = token_for(staff)
    (tmp_path / "token").write_text(token + "\n")
    client = Client(live_server.url, (tmp_path / "token").read_text())
    assert client.versions() == []
    assert token not in repr(client) and token[:10] in repr(client)
    for mangled in (token[:20] + "\n" + token[20:], token + "\x00", token[:20] + "\u2026" + token[20:]):
        with pytest.raises(ValueError) as caught:
            Client(live_server.url, mangled)
        shown = f"{caught.value!r} {caught.value}"
        assert token[:10] in shown and token[10:20] not in shown, shown


# ---- errors across processes ------------------------------------------------------------------------------------


def test_errors_survive_pickling_as_a_process_pool_sends_them():
    """Exception pickles by its args, which APIError's __init__ does not take: the parent of a ProcessPoolExecutor
    could not unpickle a worker's error, and the pool broke instead of raising it."""
    err = APIError(409, "pair 3 is not leased to you", {"detail": "pair 3 is not leased to you", "problems": ["x"]})
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), back.status, back.detail, back.problems, str(back)) == (
        APIError, 409, "pair 3 is not leased to you", ["x"], str(err))
    gone = pickle.loads(pickle.dumps(APIConnectionError("GET /versions: no answer within 60 s")))
    assert (type(gone), gone.status, gone.detail) == (APIConnectionError, 0, "GET /versions: no answer within 60 s")


# ---- what the API took without a word ---------------------------------------------------------------------------


def test_cancel_refuses_a_body_field_it_does_not_take(live_server, staff, token_for):
    """docs/api.md: a body field an operation does not take is refused on every operation. Cancel took any body,
    even one that is not JSON, and cancelled the run ({"dry_run": true} included)."""
    base = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    run = TrainingRun.objects.create(input_version=base, reference_version=base)
    auth = {"Authorization": f"Bearer {token_for(staff)}"}
    url = f"{live_server.url}/api/v1/jobs/training/{run.pk}/cancel"
    got = http("POST", url, '{"dry_run": true}', auth)
    assert got.status == 400 and "dry_run" in got.body["detail"], got
    assert http("POST", url, "{not json", auth).status == 400
    run.refresh_from_db()
    assert run.status == "queued"
    assert http("POST", url, "{}", auth).body["status"] == "cancelled"  # no body, or an empty one, as before


def _multipart(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, str]:
    body = b""
    for name, file_name, value in parts:
        head = f'Content-Disposition: form-data; name="{name}"' + (f'; filename="{file_name}"' if file_name else "")
        body += b"--bnd\r\n" + head.encode() + b"\r\n\r\n" + value + b"\r\n"
    return body + b"--bnd--\r\n", "multipart/form-data; boundary=bnd"


ROW = b'{"prompt": "q", "response_a": "a", "response_b": "b"}\n'


@pytest.mark.parametrize(("parts", "refused"), [
    ([("kind", None, b"prompts"), ("kind", None, b"pairs"), ("file", "x.jsonl", ROW)], "kind: given 2 times"),
    ([("kind", None, b"pairs"), ("file", "x.jsonl", ROW), ("file", "y.jsonl", b'{"prompt": "other"}\n')],
     "file: given 2 times"),
])
def test_an_upload_field_or_file_given_twice_is_refused_not_last_wins(live_server, staff, token_for, parts, refused):
    """kind=prompts then kind=pairs imported pairs: the last one given won without a word, as `?round=1&round=2`
    did before a query parameter given twice was refused."""
    body, content_type = _multipart(*parts)
    got = http("POST", f"{live_server.url}/api/v1/jobs/import", body,
               {"Authorization": f"Bearer {token_for(staff)}", "Content-Type": content_type})
    assert got.status == 400 and got.body["detail"] == f"{refused}; give it once", got
    assert http("GET", f"{live_server.url}/api/v1/jobs?kind=import",
                headers={"Authorization": f"Bearer {token_for(staff)}"}).body == []


@pytest.mark.parametrize(("body", "content_type", "reason"), [
    (b"--x\r\n", "multipart/form-data", "boundary"),
    (b'--bnd\r\nContent-Disposition: form-data; name="kind"\r\nX-Long: ' + b"a" * 2000 + b"\r\n\r\nprompts\r\n"
     b"--bnd--\r\n", "multipart/form-data; boundary=bnd", "header size"),
])
def test_a_malformed_upload_says_what_is_wrong(live_server, staff, token_for, caplog, body, content_type, reason):
    """No boundary, or a part's headers over Django's limit: the answer was {"detail": "Bad Request"}, and the
    server logged a traceback as if it had failed."""
    with caplog.at_level(logging.WARNING, logger="django.request"):
        got = http("POST", f"{live_server.url}/api/v1/jobs/import", body,
                   {"Authorization": f"Bearer {token_for(staff)}", "Content-Type": content_type})
    assert got.status == 400 and got.body["detail"].startswith("the upload is not valid multipart/form-data: "), got
    assert reason in got.body["detail"], got
    assert not [r for r in caplog.records if r.exc_info], "a refused upload is not the server failing"


# ---- two targets, one dropped -----------------------------------------------------------------------------------


def test_a_label_naming_both_a_lease_and_a_pair_is_refused(staff_api):
    """The lease's pair was labelled and `pair` dropped: a script that named another pair labelled the wrong one.
    Refused even when both name the same pair: an answer that told whether they agree would tell which pair a
    lease stands for."""
    first, second = make_pair(), make_pair()
    lease = staff_api.lease(first.pk)["lease"]
    for pair in (second.pk, first.pk):
        for operation, more in (("/label/submit", {"side": "left"}), ("/label/skip", {})):
            err = _refused(staff_api, operation, {"lease": lease, "pair": pair, **more})
            assert "lease or pair, not both" in err.detail, err
    assert not Label.objects.exists()
    assert staff_api.label(lease, "left")["lease"] == lease  # either alone, as before
    assert list(Label.objects.values_list("pair_id", flat=True)) == [first.pk]


def test_a_comparison_given_two_sources_of_prompts_is_refused(staff_api):
    """prompt_ids won over text, and either over limit, without a word: a typed prompt asked for was not
    compared."""
    a = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    b = ModelVersion.objects.create(name="r1", path="/y", parent=a, round=1)
    prompt = Prompt.objects.create(text="an eval prompt", split=Prompt.EVAL)
    for options, named in (({"prompt_ids": [prompt.pk], "text": "What is 2+2?"}, "prompt_ids and text"),
                           ({"prompt_ids": [prompt.pk], "limit": 8}, "prompt_ids and limit"),
                           ({"text": "What is 2+2?", "limit": 3}, "text and limit")):
        err = _refused(staff_api, "/jobs/compare", {"version_a": a.pk, "version_b": b.pk, **options})
        assert named in err.detail and "give one of" in err.detail, err
    assert not CompareJob.objects.exists()
    # one of them alone, as before (a blank text is no text)
    assert CompareJob.objects.get(pk=staff_api.start_compare(a.pk, b.pk, prompt_ids=[prompt.pk], text=" ")["id"]
                                  ).prompt_ids == [prompt.pk]
    assert staff_api.start_compare(a.pk, b.pk, limit=1, seed=1)["details"]["total"] == 2  # (seed 0: the same set)


def test_a_set_or_loop_started_again_while_the_first_is_active_is_a_409_naming_that_job(staff_api):
    """A script whose request was answered but whose answer was lost sends it again: the refusal hands back the job
    already at work, so the script goes on with it (it got a 400 with the id only inside a sentence)."""
    a = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    b = ModelVersion.objects.create(name="r1", path="/y", parent=a, round=1)
    Prompt.objects.create(text="an eval prompt", split=Prompt.EVAL)
    Prompt.objects.create(text="a train prompt", split=Prompt.TRAIN)
    for start, model in ((lambda: staff_api.start_compare(a.pk, b.pk, limit=1), CompareJob),
                         (lambda: staff_api.start_loop(1, 4, "judges.rules:length_target"), LoopRun)):
        first = start()
        with pytest.raises(APIError) as caught:
            start()
        err = caught.value
        assert err.status == 409 and f"{first['id']} " in err.detail and "already" in err.detail, err
        assert err.job["id"] == first["id"] and err.job["kind"] == first["kind"] and err.job["active"], err.job
        assert model.objects.count() == 1


# ---- the docs -----------------------------------------------------------------------------------------------------


class _Ending(Client):
    """The docs' client, whose waits end at once: each job is cancelled first, standing in for the job ending."""

    def wait(self, job_or_kind, job_id=None, **options):
        job = job_or_kind if isinstance(job_or_kind, dict) else self.job(job_or_kind, job_id)
        if job["active"]:
            self.cancel(job)
        return super().wait(job_or_kind, job_id, **options)


def test_the_docs_client_example_runs_as_written(live_server, staff, token_for, tmp_path, monkeypatch):
    """It cancelled a job `wait` had just seen end (always a 409), and pushed a preference with `round=1` for a pair
    already in round 7, where it is recorded and the round given ignored."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = DOCS.read_text()
    block = re.search(r"## The Python client\n.*?```python\n(.*?)```", text, re.DOTALL)
    made = 'Client("https://prefloop.example.org", "pfl_...")'
    assert made in block[1]
    ModelVersion.objects.create(name="base", path="/x", is_current=True)
    monkeypatch.chdir(tmp_path)
    pq.write_table(pa.table({"prompt": ["1+1?"], "chosen": ["2"], "rejected": ["3"]}), "hh-train.parquet")
    names = {"_client": _Ending(live_server.url, token_for(staff))}
    code = "\n" * text.count("\n", 0, block.start(1)) + block[1].replace(made, "_client")  # its lines as in the docs
    exec(compile(code, str(DOCS), "exec"), names)  # noqa: S102  (the docs' own example)
    assert [row["prompt"] for row in names["rows"]] == ["3+3?"]  # round 7's decided pair: 2+2? awaits its labels
    assert names["job"]["status"] == "cancelled" and names["pair"]["round"] == 7
