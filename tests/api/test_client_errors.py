"""The client's errors and gaps: an answer whose message breaks off, pushes larger than one request, arguments it
cannot send, options left None, the calls it had no method for; and refusals the server named without `errors`."""
from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from generation.models import ModelVersion, Prompt
from prefloop_client import APIConnectionError, APIError, Client
from prefloop_client import client as client_module
from training.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)
ENDED_JOB = {"kind": "generation", "id": 1, "status": "succeeded", "active": False, "progress": 1.0}


class FakeServer:
    """A tiny HTTP server in a thread that answers each request with the next of `answers`: "cut" (a 502 whose
    body breaks off: http.client's IncompleteRead), "stall" (a 503 whose body never comes: the socket's timeout), or
    a dict, sent as a whole 200 JSON answer. It stands for a proxy in front of a server that is restarting."""

    def __init__(self):
        self.answers: list = []
        self.paths: list[str] = []
        self.release = threading.Event()  # ends the stalled answers when the test is done
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802  (http.server's name)
                server.paths.append(self.path)
                answer = server.answers.pop(0)
                if isinstance(answer, dict):
                    body = json.dumps(answer).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(502 if answer == "cut" else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "100")
                self.end_headers()
                if answer == "cut":
                    self.wfile.write(b'{"detail": "ba')  # 14 of the 100 bytes promised, then the connection closes
                else:
                    self.wfile.flush()
                    server.release.wait(10)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server():
    server = FakeServer()
    yield server
    server.close()


@pytest.mark.parametrize(("answer", "status"), [("cut", 502), ("stall", 503)])
def test_an_error_answer_whose_message_breaks_off_is_the_clients_error(fake_server, answer, status):
    """exc.read() ran outside the try: the cut 502 raised http.client.IncompleteRead, the stalled 503 a builtin
    TimeoutError, neither an APIError a caller catches."""
    fake_server.answers = [answer]
    with pytest.raises(APIError) as broke:
        Client(fake_server.url, "pfl_test", timeout=0.5).job("generation", 1)
    assert broke.value.status == status and "its message broke off" in broke.value.detail, broke.value.detail


def test_wait_polls_again_after_a_broken_503_or_502_until_the_job_ends(fake_server):
    """wait(timeout=30) raised TimeoutError after the first stalled poll (1 s): taken for "the job is still
    running", the docs' only meaning of it."""
    fake_server.answers = ["stall", "cut", "stall", ENDED_JOB]
    started = time.monotonic()
    state = Client(fake_server.url, "pfl_test", timeout=0.5).wait("generation", 1, timeout=30, poll=0.01)
    assert state["status"] == "succeeded" and len(fake_server.paths) == 4
    assert time.monotonic() - started < 20


def test_wait_raises_the_last_failure_at_its_deadline_not_timeout_error(fake_server):
    fake_server.answers = ["stall"] * 20
    with pytest.raises(APIError) as failed:
        Client(fake_server.url, "pfl_test", timeout=0.3).wait("generation", 1, timeout=1, poll=0.01)
    assert failed.value.status == 503 and not isinstance(failed.value, APIConnectionError)
    assert len(fake_server.paths) >= 2, "it gave up after the first poll"


def test_a_push_of_more_than_one_request_holds_is_split_by_size_and_count(staff_api):
    """5,000 rows of 1 KB are over the server's 5 MiB body limit (a 413), and more than 5,000 were refused by the
    client: 5,200 rows of 1.1 KB are sent in as many requests as they need, and all are stored."""
    rows = [{"prompt": f"{i:05d} " + "x" * 1100} for i in range(5200)]
    pushed = staff_api.push_prompts(rows)
    assert pushed["created"] == 5200 and pushed["skipped"] == 0
    assert Prompt.objects.count() == 5200


def test_a_split_push_names_rows_from_the_first_row_given(staff_api, monkeypatch):
    """Each request's rows are numbered from 1 by the server: the answers and a refusal are counted from the first
    row of the whole push, so "line N" is still row N of the caller's list."""
    monkeypatch.setattr(client_module, "PUSH_BATCH", 2)
    pairs = [{"prompt": f"Q{i}?", "response_a": f"a{i}", "response_b": f"b{i}"} for i in range(5)]
    pairs[3]["response_b"] = pairs[3]["response_a"]  # row 4: both answers one text
    pushed = staff_api.push_pairs(pairs, round=1)
    assert (pushed["created"], pushed["same_answers"]) == (4, [4])
    prompts = [{"prompt": "one"}, {"prompt": "two"}, {"prompt": "three"}, {"prompt": ""}, {"prompt": "five"}]
    with pytest.raises(APIError) as refused:
        staff_api.push_prompts(prompts)
    assert refused.value.status == 400 and refused.value.problems[0].startswith("api: line 4: "), refused.value.problems
    assert "api: line 4: " in refused.value.detail and "rows 1 to 2" in refused.value.detail
    assert sorted(Prompt.objects.values_list("text", flat=True)) == sorted(
        ["one", "two", *(f"Q{i}?" for i in range(5) if i != 3)])  # the request before the refused one stays stored


def test_an_import_field_that_is_not_valid_unicode_is_refused_by_name_not_a_unicode_error(staff_api, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "q"}\n')
    with pytest.raises(APIError) as refused:
        staff_api.import_file(path, "prompts", tag="\ud800")
    assert refused.value.status == 400 and refused.value.errors[0]["field"] == "tag"
    assert "lone surrogate" in refused.value.detail


def test_label_options_given_as_none_are_left_out(staff_api, annotator_api):
    """label(..., strength=None) sent "strength": null, refused with a 400; the pushes drop None options."""
    staff_api.push_pairs([{"prompt": "Q?", "response_a": "a", "response_b": "b"}])
    lease = annotator_api.next_pair()["lease"]
    assert annotator_api.label(lease, "left", strength=None, comment=None, seconds=None)["side"] == "left"
    assert annotator_api.label_progress()["done"] == 1  # GET /label/progress had no method


def test_every_get_the_api_serves_has_a_method(staff_api):
    base = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    run = TrainingRun.objects.create(input_version=base, reference_version=base)
    assert staff_api.version(base.pk)["name"] == "base"
    assert staff_api.training_metrics(run.pk)["run"] == run.pk


@pytest.mark.parametrize("overlap", [0, -1])
def test_a_round_setting_the_form_refuses_lists_its_field_in_errors(staff_api, overlap):
    """-1 (refused by the body's schema) listed errors: [{field, message}]; 0 (refused by the rounds page's form)
    gave only `detail`."""
    staff_api.create_round(1)
    for call in (lambda: staff_api.change_round(1, labels_per_pair=overlap),
                 lambda: staff_api.create_round(2, labels_per_pair=overlap)):
        with pytest.raises(APIError) as refused:
            call()
        assert refused.value.status == 400 and [e["field"] for e in refused.value.errors] == ["labels_per_pair"]
    assert [r["number"] for r in staff_api.labelling_rounds()] == [1]
    assert staff_api.labelling_round(1)["labels_per_pair"] == 1


@pytest.mark.parametrize(("options", "field"), [({"format": "xml"}, "format"), ({"round": -1}, "round")])
def test_an_upload_field_the_import_form_refuses_lists_it_in_errors(staff_api, tmp_path, options, field):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(APIError) as refused:
        staff_api.import_file(path, "preferences", **options)
    assert refused.value.status == 400 and [e["field"] for e in refused.value.errors] == [field]
    assert f"{field}: " in refused.value.detail


@pytest.mark.parametrize("reason", ["x" * 2001, 5])
def test_the_promote_bodys_field_is_named_as_sent_not_body_reason(staff_api, reason):
    with pytest.raises(APIError) as refused:
        staff_api.post("/versions/1/promote", {"reason": reason})
    assert refused.value.status == 400 and [e["field"] for e in refused.value.errors] == ["reason"]
    assert "body.reason" not in refused.value.detail
