"""Every dashboard figure pinned to its definition on fixed data: what each headline number is, what it is measured
on and on how many items; KL never negative; one mean answer length on every page that shows one."""
import re

import pytest
from django.urls import reverse

from compare.leaderboard import build_board
from compare.services import record_vote
from generation.length import mean_tokens, version_length
from generation.models import Response
from training import dashboard
from training.evaluation import _mean_kl
from training.models import TrainingRun

from .conftest import make_comparison, make_prompt

METRICS = {"heldout/pairs": 12, "heldout/reward_accuracy": 0.75, "heldout/margin": 0.031, "sampled/answers": 8,
           "kl_to_reference": 0.42, "sampled/mean_tokens": 97.5, "sampled/truncated": 3, "rewards/margin": 0.5,
           "rewards/accuracy": 1.0, "loss": 0.41, "mean_loss": 0.55, "pairs": 40}


def test_each_headline_figure_says_what_it_is_measured_on():
    figures = [(f.title, f.value, f.measured_on) for f in dashboard.headline(METRICS, batch_size=4)]
    assert figures == [
        ("Held-out accuracy", 0.75, "12 held-out pairs"),
        ("Held-out margin", 0.031, "12 held-out pairs"),
        ("KL to reference", 0.42, "nats per answer, the next-token KL over the vocabulary summed over its positions; 8 eval answers"),
        ("Answer tokens", 97.5, "mean; 8 eval answers, 3 cut off"),
        ("Reward margin", 0.5, "last training batch of up to 4 pairs"),
        ("Reward accuracy", 1.0, "last training batch of up to 4 pairs"),
        ("Loss", 0.41, "last training batch of up to 4 pairs"),
    ]


def test_the_batch_figures_name_the_pairs_of_the_optimiser_step_not_one_batch():
    """With batches summed before each step (grad_accum) or several processes, a step learns from more pairs than
    one batch; the label said "of up to {batch_size}" whatever they were."""
    step = dict(METRICS, step_pairs=32)
    assert [f.measured_on for f in dashboard.headline(step, batch_size=4)][-3:] == [
        "last optimiser step, 32 pairs"] * 3


def test_the_kl_figure_is_the_mean_of_each_answers_summed_kl():
    # per position KL of two answers (training.dpo.logps.position_kl; tests/training/test_kl.py checks those)
    assert _mean_kl([[0.5, 0.25], [1.0]]) == pytest.approx((0.75 + 1.0) / 2)


def test_the_run_dashboard_shows_each_figure_with_its_label(client, staff, versions):
    base, child = versions
    run = TrainingRun.objects.create(input_version=base, output_version=child, status=TrainingRun.SUCCEEDED,
                                     metrics=METRICS, params={"batch_size": 4})
    client.force_login(staff)
    page = client.get(reverse("training:run", args=[run.pk])).content.decode()
    cards = re.findall(r'data-metric="([^"]+)">([^<]+)</div><div class="muted measured-on"><small>([^<]+)<', page)
    assert [(t, float(v), m) for t, v, m in cards] == [
        (f.title, pytest.approx(f.value, rel=1e-3), f.measured_on) for f in dashboard.headline(METRICS, 4)]


def test_one_mean_answer_length_on_every_page(client, staff, versions):
    base, child = versions
    child.mean_response_tokens = 122.3  # a stale stored figure must not reach any page
    child.save()
    prompt = make_prompt()
    for tokens, reason in ((10, "stop"), (20, "stop"), (31, "length")):
        Response.objects.create(prompt=prompt, version=child, text=f"answer of {tokens}", token_count=tokens,
                                finish_reason=reason)
    comparison = make_comparison(child, base, tokens=(41, 10))  # one more answer of each version
    record_vote(comparison, staff, "a")
    expected = mean_tokens(Response.objects.filter(version=child))
    assert expected == pytest.approx((10 + 20 + 31 + 41) / 4)
    length = version_length(child)
    assert (length.mean, length.answers, length.truncated) == (pytest.approx(expected), 4, 1)
    assert length.label == "mean over 4 answers, 1 cut off at the token limit"
    assert dashboard.mean_tokens(child) == pytest.approx(expected)
    assert {r.version: r.mean_tokens for r in build_board(bootstrap=20).rows}[child.name] == pytest.approx(expected)

    client.force_login(staff)
    shown = f"{expected:.4g}"
    for url in (reverse("compare:rounds"), reverse("compare:leaderboard")):
        page = client.get(url).content.decode()
        row = re.search(rf'<tr data-version="{child.name}">(.*?)</tr>', page, re.S).group(1)
        assert re.search(rf'class="num mean-tokens">{re.escape(shown)}\b', row), url
        assert length.label in row, url
    generate = client.get(reverse("generation:jobs")).content.decode()
    assert f'class="mean-tokens">{expected:.1f} <small class="muted">{length.label}</small>' in generate
    assert "122.3" not in generate


def test_cut_off_answers_carry_their_mark_on_the_blind_vote_page(client, annotator, versions):
    from .conftest import make_job

    base, child = versions
    job = make_job(base, child, n=1)
    comparison = job.comparisons.get()
    Response.objects.filter(pk=comparison.response_b_id).update(finish_reason="length")
    client.force_login(annotator)
    page = client.get(reverse("compare:job", args=[job.pk])).content.decode()
    side = "left" if not comparison.left_is_a else "right"  # where B's answer is shown
    panel = re.search(rf'data-side="{side}">(.*?)</article>', page, re.S).group(1)
    other = re.search(rf'data-side="{"right" if side == "left" else "left"}">(.*?)</article>', page, re.S).group(1)
    assert "cut off at the token limit" in panel and "cut off" not in other
