"""The versions API's mean answer length is the pages': every stored answer of the version. It read a stored figure
that only a generation job's end or a round's measuring writes, so a comparison's answers never counted there, and
a version only ever compared had none."""
import pytest

from compare import services
from generation.length import version_length
from generation.services import update_mean_length
from tests.compare.conftest import make_prompt, make_response, make_version
from tests.compare.test_services import fake_answerer

pytestmark = pytest.mark.django_db


def test_the_apis_mean_answer_length_counts_every_stored_answer(client, staff):
    base = make_version("base")
    child = make_version("round-1", parent=base, is_current=True)
    for _ in range(2):  # a generation job's answers, 100 tokens each; its end writes the stored mean
        make_response(make_prompt(split="train"), base, tokens=100)
    update_mean_length(base)
    for _ in range(6):
        make_prompt()  # eval prompts, which the comparison answers in 3 tokens each
    job = services.run_compare_job(services.start_compare_job(child, base, limit=10, seed=7, enqueue=False).pk,
                                   answer=fake_answerer([]))
    assert job.status == "succeeded"
    client.force_login(staff)
    listed = {v["name"]: v["mean_response_tokens"] for v in client.get("/api/v1/versions").json()}
    assert listed["base"] == pytest.approx(version_length(base).mean) and listed["base"] < 100
    assert listed["round-1"] == pytest.approx(version_length(child).mean)  # compared only: it had none
    one = client.get(f"/api/v1/versions/{base.pk}").json()
    assert one["mean_response_tokens"] == listed["base"]
