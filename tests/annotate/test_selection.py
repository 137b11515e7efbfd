"""Queue order by what a label would teach: the serving order on fixed margins, near duplicates held back, and the
margins the scoring service stores checked against a direct computation on the tiny model."""
from __future__ import annotations

import pytest

from annotate import services
from annotate.models import Label, Pair, Route

from .factories import make_pair, make_prompt, make_round, make_user

pytestmark = pytest.mark.django_db


def _served(user) -> list[Pair]:
    order = []
    while (lease := services.next_pair_for(user)) is not None:
        order.append(lease.pair)
        services.record_label(lease, user, "left")
    return order


def _judge():
    from annotate.judging import judge_account

    return judge_account("judges.rules:length_target")


def test_random_order_serves_oldest_first_whatever_the_margins():
    round_ = make_round(queue_order="random")
    pairs = [make_pair(round=round_, margin=m) for m in (3.0, 0.01, -2.0)]
    assert _served(make_user()) == pairs


def test_uncertain_order_serves_the_smallest_margin_first_then_the_unscored():
    round_ = make_round(queue_order="uncertain")
    wide, unscored, narrow, middle = (make_pair(round=round_, margin=m) for m in (-4.0, None, 0.05, 1.5))
    assert _served(make_user()) == [narrow, middle, wide, unscored]


def test_disagreement_order_serves_first_where_the_judge_and_the_margin_disagree():
    round_ = make_round(queue_order="disagreement")
    agree = make_pair(round=round_, margin=0.2, labels_needed=2)  # judge says a, version prefers a
    small_clash = make_pair(round=round_, margin=0.3, labels_needed=2)  # judge says b, version prefers a
    big_clash = make_pair(round=round_, margin=-2.5, labels_needed=2)  # judge says a, version prefers b
    unjudged = make_pair(round=round_, margin=0.01, labels_needed=2)
    judge = _judge()
    for pair, choice in ((agree, "a"), (small_clash, "b"), (big_clash, "a")):
        services.label_pair(pair.pk, judge, "left" if choice == "a" else "right")
    assert Label.objects.filter(annotator=judge, is_automatic=True).count() == 3
    # the most confident disagreement first, then the rest by the smallest margin
    assert _served(make_user()) == [big_clash, small_clash, unjudged, agree]


def test_near_duplicates_never_reach_people():
    from annotate.selection import prepare_queue
    from generation.models import ModelVersion

    round_ = make_round(queue_order="uncertain")
    twin = make_pair(round=round_, text_a="Paris is the capital of France.", text_b="paris is the capital of france",
                     margin=0.0)
    other = make_pair(round=round_, text_a="Paris.", text_b="It is Lyon, I think.", margin=1.0)
    base = ModelVersion.objects.create(name="base", path="/nowhere")
    other.margin_version = base
    other.save()
    prepared = prepare_queue(base, rounds=[round_])  # the other pair is scored under base already: no model runs
    assert prepared.held_back == 1 and prepared.scored == 0
    twin.refresh_from_db()
    assert twin.route == Route.DUPLICATE
    assert _served(make_user()) == [other]
    assert _served(_judge()) == []


def test_a_closed_round_serves_nothing():
    from django.utils import timezone

    closed = make_round(queue_order="uncertain", closed_at=timezone.now(), closed_reason="enough")
    make_pair(round=closed)
    still = make_pair(round=make_round())
    assert _served(make_user()) == [still]


def _direct_logp(model, tokenizer, prompt: str, text: str) -> float:
    """log p(text | prompt) summed over the answer's tokens, straight from the model's logits in fp32."""
    import torch

    from prefcore.chat import prompt_token_ids, response_token_ids

    head, tail = prompt_token_ids(tokenizer, prompt), response_token_ids(tokenizer, text)
    ids = torch.tensor([head + tail])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.float()[0, :-1], dim=-1)
    picked = logp[torch.arange(len(head) - 1, ids.shape[1] - 1), ids[0, len(head):]]
    return float(picked.sum())


def test_the_stored_margins_are_the_implicit_reward_margins_of_the_version(tiny_model_dir, tmp_path, settings):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from annotate.selection import margin_config, prepare_queue
    from generation.models import ModelVersion
    from tests.tiny import build_tiny_model
    from training.models import ReferenceLogp

    settings.PREFLOOP_DTYPE = "float32"
    other_dir = build_tiny_model(tmp_path / "other", seed=7)  # same tokenizer, other weights
    base = ModelVersion.objects.create(name="base", path=str(tiny_model_dir))
    trained = ModelVersion.objects.create(name="r1", path=str(other_dir), parent=base, round=1)
    round_ = make_round(queue_order="uncertain")
    texts = [("The capital of France is Paris.", "I do not know."), ("Waves fold into foam.", "def add(a, b):"),
             ("Thank you!", "The quick brown fox jumps over the lazy dog.")]
    pairs = [make_pair(round=round_, text_a=a, text_b=b) for a, b in texts]

    prepared = prepare_queue(trained, rounds=[round_])
    assert prepared.scored == 3

    beta = margin_config().beta
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    models = {v: AutoModelForCausalLM.from_pretrained(v.path, dtype="float32").eval() for v in (base, trained)}
    for pair in pairs:
        pair.refresh_from_db()
        lp = {v: [_direct_logp(m, tokenizer, pair.prompt.text, r.text) for r in (pair.response_a, pair.response_b)]
              for v, m in models.items()}
        expected = beta * ((lp[trained][0] - lp[base][0]) - (lp[trained][1] - lp[base][1]))
        assert pair.margin_version == trained
        assert pair.margin == pytest.approx(expected, abs=1e-4)
        assert pair.margin != 0.0
    # both versions' log-probs of every answer are cached for training and the next scoring
    assert ReferenceLogp.objects.filter(dtype="float32").count() == 12

    # scored under the base itself, every margin is 0: a version is its own reference
    assert prepare_queue(base, rounds=[round_]).scored == 3
    assert set(Pair.objects.filter(round=round_).values_list("margin", flat=True)) == {0.0}


def test_the_quality_page_shows_each_rounds_order_and_what_it_chose(client):
    import re

    from django.urls import reverse

    round_ = make_round(queue_order="uncertain", labels_per_pair=1)
    for m in (0.1, 0.3, 2.0, -4.0):
        make_pair(round=round_, margin=m)
    person = make_user()
    for _ in range(2):  # the two smallest margins
        lease = services.next_pair_for(person)
        services.record_label(lease, person, "left")
    client.force_login(make_user(is_staff=True))
    html = client.get(reverse("annotate:quality")).content.decode()
    row = re.search(rf'data-round="{round_.number}">(.*?)</tr>', html, re.S).group(1)
    assert 'data-order="uncertain"' in row
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert cells[2:6] == ["4", "1.600", "2", "0.200"]  # pool of 4 at mean |margin| 1.6; people labelled 0.1 and 0.3


def test_score_margins_names_a_missing_version_or_round_and_holds_back_duplicates():
    import io

    from django.core.management import CommandError, call_command

    from generation.models import ModelVersion

    with pytest.raises(CommandError, match="no current version"):
        call_command("score_margins")
    base = ModelVersion.objects.create(name="base", path="/nowhere", is_current=True)
    with pytest.raises(CommandError, match="no version named 'v9'"):
        call_command("score_margins", under="v9")
    with pytest.raises(CommandError, match="--round 999: no such round"):
        call_command("score_margins", round=[999])
    round_ = make_round(queue_order="random")  # a random round needs no margins: no model is loaded
    make_pair(round=round_, text_a="Paris is the capital of France.", text_b="paris is the capital of france")
    out = io.StringIO()
    call_command("score_margins", round=[round_.number], stdout=out)
    assert '"held_back": 1' in out.getvalue() and '"scored": 0' in out.getvalue()
    assert base.name in out.getvalue()


def test_a_generation_job_ends_by_scoring_its_rounds_margins_under_the_current_version(tiny_model_dir, tmp_path,
                                                                                        settings):
    from generation import services as gen
    from generation.backends.base import SamplingConfig
    from generation.models import Prompt
    from tests.tiny import build_tiny_model

    settings.PREFLOOP_DTYPE = "float32"
    base = gen.register_version("base", tiny_model_dir)
    trained = gen.register_version("r1", build_tiny_model(tmp_path / "r1", seed=3), parent=base)  # now current
    make_round(number=trained.round + 1, queue_order="uncertain")
    for i in range(3):
        Prompt.objects.create(text=f"question {i}: name a colour.", split="train")
    config = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0)
    job = gen.run_generation_job(gen.start_generation_job(trained, n_prompts=3, config=config, enqueue=False).pk)
    assert job.status == "succeeded", job.error
    pairs = list(Pair.objects.filter(job=job).exclude(route=Route.DUPLICATE))
    assert pairs and all(p.margin_version == trained and p.margin is not None for p in pairs)
    assert any(p.margin != 0.0 for p in pairs)
    assert f"margins scored under {trained.name!r}" in job.log


def test_an_answer_in_a_cut_pair_and_a_whole_one_is_scored_for_each_pair_and_only_the_whole_pair_is_cached(
        tiny_model_dir):
    """A pair too long for max_length cuts its prompt by its longer answer, so the same answer is scored on fewer
    tokens there than beside a short partner. Its log-prob is each pair's own, from the cache too."""
    from annotate.selection import version_logps
    from generation.models import ModelVersion
    from training.dpo.config import DPOConfig
    from training.dpo.data import PreferencePair
    from training.dpo.trainer import Scorer
    from training.models import ReferenceLogp

    base = ModelVersion.objects.create(name="base", path=str(tiny_model_dir))
    prompt = make_prompt("Tell me, in one short sentence and plainly, what colour the clear sky is at noon today.")
    shared = "The sky is blue."
    cut = make_pair(prompt, shared, " ".join(["and then it rains again over the hills"] * 8))
    whole = make_pair(prompt, shared, "Blue.")
    whole.response_a = cut.response_a  # the same stored answer in both pairs
    whole.save()
    config = DPOConfig(max_length=96, max_prompt_length=16, dtype="float32", batch_size=1)
    scorer = Scorer(tiny_model_dir, config)
    rows = [PreferencePair(prompt=p.prompt.as_input, chosen=p.response_a.text, rejected=p.response_b.text)
            for p in (cut, whole)]
    assert scorer.scored(rows)[1] == [True, False]
    own = [scorer.logps([row])[0] for row in rows]  # each pair scored alone
    assert own[0][0] != pytest.approx(own[1][0], abs=1e-3)  # the shared answer scores apart in the two pairs

    for _ in range(2):  # computed, then read back from the cache
        got = version_logps(base, [cut, whole], config)
        assert [list(v) for v in got] == [pytest.approx(list(v), abs=1e-4) for v in own]
    cached = dict(ReferenceLogp.objects.values_list("response_id", "logp"))
    assert cached == pytest.approx({whole.response_a_id: own[1][0], whole.response_b_id: own[1][1]}, abs=1e-4)
