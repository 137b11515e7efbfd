"""Pairs chosen by a judge: each prompt's K samples ranked in a round robin, the best against the worst."""
import re

import pytest
from django.core.management import call_command

from annotate.models import Pair
from generation import services as gen
from generation.backends.base import SamplingConfig
from generation.models import Prompt, Response
from tests.loop import judges_for_tests

LONGER = "judges.rules:longer_text"
RULE = "judges.rules:length_target"  # a built-in, offered on the page
SAMPLING = SamplingConfig(n=4, temperature=1.0, top_p=1.0, max_new_tokens=12, seed=0)


def _ask_the_judge_always(first_cut: bool, second_cut: bool, judged: str) -> str:
    """For tests of what the judge decides: the cut rule overrules it where a sample was cut at the token limit and
    the other not, and which samples finish follows their seeds, drawn from prompt ids, which on PostgreSQL (ids not
    rolled back) depend on the tests run before."""
    return judged


@pytest.fixture
def base(db, tiny_model_dir, listed_test_judges):
    judges_for_tests.CALLS["n"] = 0
    for k in range(4):
        Prompt.objects.create(text=f"Question {k}: name {k} birds.", split="train")
    return gen.register_version("base", tiny_model_dir)


def test_the_judges_best_meets_its_worst(base):
    job = gen.start_generation_job(base, n_prompts=4, config=SAMPLING, pairing="judge", judge=LONGER, enqueue=False)
    job = gen.run_generation_job(job.pk)
    assert job.status == "succeeded", job.error
    assert job.params["judge"] == LONGER
    pairs = list(Pair.objects.filter(job=job).select_related("response_a", "response_b"))
    assert len(pairs) == job.pairs_made == 4
    def rank(r):  # the judge prefers the longer text; a sample cut at the token limit loses to a finished one
        return (r.finish_reason != "length", len(r.text.strip()))

    for pair in pairs:
        ranks = [rank(r) for r in Response.objects.filter(job=job, prompt=pair.prompt)]
        assert len(ranks) == 4
        assert sorted([rank(pair.response_a), rank(pair.response_b)]) == [min(ranks), max(ranks)]


def test_the_judges_pick_is_stored_on_either_side(base):
    """Stored best first, a label's stored choice ("a", which the API answers a key press with) told the person the
    judge's pick, to agree with it on an undo; the sides are drawn, seeded, when the pair is stored."""
    for i in range(12):
        Prompt.objects.create(text=f"question {i}: say something about the number {i}.")
    job = gen.start_generation_job(base, n_prompts=12, config=SAMPLING, pairing="judge", judge=LONGER, enqueue=False)
    assert gen.run_generation_job(job.pk).status == "succeeded"
    best_first = []
    for pair in Pair.objects.filter(job=job).select_related("response_a", "response_b"):
        a, b = pair.response_a, pair.response_b
        best_first.append((a.finish_reason != "length", len(a.text.strip())) > (b.finish_reason != "length",
                                                                                 len(b.text.strip())))
    assert len(best_first) >= 10 and 0 < sum(best_first) < len(best_first)


def test_the_stage_says_the_judge_ranks_while_it_does(base, monkeypatch):
    """Sampling done, a judge's K(K-1)/2 calls a prompt (seconds each for an LLM judge) ran under the stage
    "sampling prompts a-b", with the bar still."""
    judges_for_tests.STAGES.clear()
    monkeypatch.setattr(gen, "cut_rule", _ask_the_judge_always)
    job = gen.start_generation_job(base, n_prompts=2, config=SamplingConfig.from_dict(dict(SAMPLING.to_dict(), n=2)),
                                   pairing="judge", judge="tests.loop.judges_for_tests:notes_the_stage", enqueue=False)
    assert gen.run_generation_job(job.pk).status == "succeeded"
    assert judges_for_tests.STAGES == [f"the judge ranks the samples of this chunk's prompt {k} of 2" for k in (1, 2)]


def test_the_bar_moves_with_each_prompt_the_judge_ranks(base, monkeypatch):
    """Each chunk's whole share of the bar went to sampling: it stood still while the judge made its K(K-1)/2 calls
    a prompt, and the time left, measured from the bar's rate, said nothing of them."""
    from jobs import lifecycle

    monkeypatch.setattr(gen, "CHUNK_ROWS", 8)  # 2 prompts of 4 samples a chunk
    reports, stage, real = [], {"now": ""}, lifecycle.Tracker.report

    def spy(self, *args, **kwargs):
        stage["now"] = kwargs.get("stage") or stage["now"]
        if kwargs.get("progress") is not None and kwargs.get("done") is None:  # not a chunk's end
            reports.append((stage["now"], kwargs["progress"]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(lifecycle.Tracker, "report", spy)
    job = gen.start_generation_job(base, n_prompts=4, config=SAMPLING, pairing="judge", judge=LONGER, enqueue=False)
    assert gen.run_generation_job(job.pk).status == "succeeded"
    judging = [k for k, (now, _) in enumerate(reports) if now.startswith("the judge ranks")]
    assert len(judging) == 4, reports  # one report a prompt ranked
    for k in judging:
        assert reports[k][1] > reports[k - 1][1], reports  # each ranked prompt moves the bar
    assert reports[judging[-1]][1] == 1.0


def test_a_failing_judge_fails_the_job_naming_the_judge_and_the_responses(base, monkeypatch):
    monkeypatch.setattr(gen, "CHUNK_ROWS", 4)  # 2 prompts of 2 samples a chunk
    # one judge call per prompt: a sample cut at the token limit against a finished one is decided without the
    # judge, and which samples finish depends on their seeds, drawn from the prompts' ids, so on the tests run
    # before (on PostgreSQL, whose ids are not rolled back, the third call never came)
    monkeypatch.setattr(gen, "cut_rule", _ask_the_judge_always)
    config = SamplingConfig.from_dict(dict(SAMPLING.to_dict(), n=2))
    job = gen.start_generation_job(base, n_prompts=4, config=config, pairing="judge",
                                   judge="tests.loop.judges_for_tests:fails_on_third", enqueue=False)
    with pytest.raises(Exception, match="judge service unreachable"):
        gen.run_generation_job(job.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert "judge 'tests.loop.judges_for_tests:fails_on_third' on prompt " in job.error
    # the two samples, in the order the judge saw them (drawn per prompt)
    assert re.search(r"samples (0 and 1|1 and 0) raised ConnectionError: judge service unreachable", job.error)
    # the first chunk (two prompts) is stored with its pairs; the failing chunk left nothing half-stored
    assert Response.objects.filter(job=job).count() == 4
    assert Pair.objects.filter(job=job).count() == 2


@pytest.mark.parametrize("pairing, judge, message", [
    ("judge", "", "pairing 'judge' needs a judge"),
    ("random", LONGER, "a judge ranks samples only with pairing 'judge'"),
    ("judge", "judges.rules:nothing", "judge 'judges.rules:nothing' is not allowed"),
    ("judge", "subprocess:Popen?args=true", "judge 'subprocess:Popen.args=true' is not allowed"),
])
def test_bad_judge_settings_are_refused_before_sampling(base, pairing, judge, message):
    with pytest.raises(gen.GenerationError, match=message):
        gen.start_generation_job(base, n_prompts=2, config=SAMPLING, pairing=pairing, judge=judge, enqueue=False)
    assert not Response.objects.exists()


def test_more_samples_than_a_judge_should_rank_are_refused(base):
    config = SamplingConfig.from_dict(dict(SAMPLING.to_dict(), n=9))
    with pytest.raises(gen.GenerationError, match="ranks at most 8 samples per prompt .got 9: that would be 36 judge"):
        gen.start_generation_job(base, n_prompts=2, config=config, pairing="judge", judge=LONGER, enqueue=False)


def test_a_judge_that_tells_no_sample_apart_leaves_a_random_pair(base):
    config = SamplingConfig.from_dict(dict(SAMPLING.to_dict(), n=4))
    chosen = set()
    for seed in range(3):
        Pair.objects.all().delete()
        Response.objects.all().delete()
        job = gen.start_generation_job(base, n_prompts=4, config=SamplingConfig.from_dict(dict(config.to_dict(),
                                       seed=seed)), pairing="judge", judge="judges.rules:not_degenerate", enqueue=False)
        job = gen.run_generation_job(job.pk)
        assert job.status == "succeeded" and job.pairs_made == 4
        chosen |= {(p.response_a.sample_index, p.response_b.sample_index) for p in Pair.objects.filter(job=job)}
    assert len(chosen) > 1  # not always samples 0 and 1


def test_generate_pairs_command_takes_a_judge(base, capsys):
    call_command("generate_pairs", prompts=2, samples=3, pairing="judge", judge=LONGER, max_new_tokens=8)
    assert "2 pairs queued for labelling" in capsys.readouterr().out
    assert Pair.objects.count() == 2


def test_the_generate_page_asks_for_the_judge_when_pairing_by_one(client, staff, base):
    from django.urls import reverse

    from generation.models import GenerationJob

    client.force_login(staff)
    form = {"prompts": 2, "samples": 3, "split": "train", "pairing": "judge", "temperature": 1.0, "top_p": 1.0,
            "max_new_tokens": 8, "seed": 0}
    page = client.post(reverse("generation:jobs"), form)
    assert page.status_code == 200 and "Choose the judge that ranks the samples." in page.content.decode()
    assert not GenerationJob.objects.exists()
    assert RULE in page.content.decode()  # offered as a choice
    page = client.post(reverse("generation:jobs"), dict(form, judge=RULE))
    assert page.status_code == 302
    job = GenerationJob.objects.get()
    assert job.params["pairing"] == "judge" and job.params["judge"] == RULE


@pytest.mark.parametrize(("judge", "said"), [("tests.judges.test_contract:shouts", "returned 'A'"),
                                              ("tests.judges.test_contract:explodes", "model server down")])
def test_generate_pairs_with_a_failing_judge_ends_in_one_line(base, monkeypatch, judge, said):
    """A judge that fails (returns no verdict, raises) ended generate_pairs in a traceback, where the other
    commands say one line (found by an outside review); the job is failed and says why."""
    from django.core.management import CommandError

    from generation.models import GenerationJob

    monkeypatch.setattr(gen, "cut_rule", _ask_the_judge_always)
    with pytest.raises(CommandError) as refused:
        call_command("generate_pairs", prompts=2, samples=2, pairing="judge", judge=judge, max_new_tokens=6)
    job = GenerationJob.objects.get()
    assert str(refused.value).startswith(f"generate_pairs: job {job.pk} failed: ") and said in str(refused.value)
    assert job.status == "failed" and said in job.error
