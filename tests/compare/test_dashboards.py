"""The leaderboard and the rounds dashboard show the stored votes and metrics, with the drift warnings."""
import math
import re

import pytest
from django.urls import reverse

from annotate.judging import judge_account
from compare import services
from compare.leaderboard import build_board
from generation.models import Prompt
from tests.annotate.factories import make_user
from training import dashboard
from training.models import TrainingRun, TrainingStep

from .conftest import make_comparison, make_prompt, make_response, make_version

pytestmark = pytest.mark.django_db


def _cell(page: str, version: str, css: str) -> str:
    row = re.search(rf'<tr data-version="{re.escape(version)}">(.*?)</tr>', page, re.S).group(1)
    return re.search(rf'<td class="[^"]*\b{css}\b[^"]*">(.*?)</td>', row, re.S).group(1).strip()


def _votes(version_a, version_b, voter, outcomes, **kw):
    for outcome in outcomes:
        services.record_vote(make_comparison(version_a, version_b, **kw), voter, outcome)


def test_leaderboard_shows_the_fitted_ratings(client, annotator, versions):
    base, child = versions
    _votes(child, base, annotator, ["a", "a", "a", "b", "tie"])
    board = build_board(bootstrap=200)
    assert board.anchor == "zebrafinch-base" and board.votes == 5
    rating = {r.version: r for r in board.rows}["okapi-round-one"].rating
    assert rating == pytest.approx(1000 + 400 * math.log10((3.5 + 0.25) / (1.5 + 0.25)), abs=1e-6)

    client.force_login(annotator)
    page = client.get(reverse("compare:leaderboard")).content.decode()
    assert _cell(page, "okapi-round-one", "rating") == f"{rating:.0f}"
    assert _cell(page, "zebrafinch-base", "rating") == "1000"
    assert _cell(page, "okapi-round-one", "votes") == "5"
    assert "70%" in page  # win rate of round one against base: 3.5 of 5


def test_a_fit_is_reused_until_the_votes_change(annotator, versions, monkeypatch):
    """Each view refitted 1,000 bootstrap redraws twice (raw and length-controlled): seconds a view with many
    versions. The fit is kept under a digest of its votes and options, so a new vote refits and nothing is stale."""
    from compare import leaderboard, ratings

    base, child = versions
    leaderboard.cache.clear()  # the same votes in an earlier run of the suite left their fits there
    fits = []
    real = ratings.fit_ratings
    monkeypatch.setattr(ratings, "fit_ratings", lambda games, **kw: fits.append(kw) or real(games, **kw))
    _votes(child, base, annotator, ["a", "a", "b"])
    first = build_board(bootstrap=300, seed=7)
    assert len(fits) == 2 and build_board(bootstrap=300, seed=7) == first and len(fits) == 2  # the cached fits
    build_board(bootstrap=301, seed=7)
    assert len(fits) == 4  # other options: fitted again
    _votes(child, base, annotator, ["a"])
    after = build_board(bootstrap=300, seed=7)
    assert len(fits) == 6 and after.votes == 4 and after.rows != first.rows
    monkeypatch.setattr(leaderboard.cache, "get", lambda *a, **k: 1 / 0)  # a cache that is down
    assert build_board(bootstrap=300, seed=7).rows == after.rows and len(fits) == 8


def test_automatic_votes_are_excluded_unless_asked_for(client, annotator, versions):
    base, child = versions
    _votes(child, base, annotator, ["a"])
    judge = judge_account("judges.rules:shorter_text")
    for _ in range(3):
        comparison = make_comparison(child, base)
        services.record_vote(comparison, judge, "b", is_automatic=True, judge="judges.rules:shorter_text")
    client.force_login(annotator)
    people = client.get(reverse("compare:leaderboard")).content.decode()
    everyone = client.get(reverse("compare:leaderboard") + "?automatic=1").content.decode()
    assert _cell(people, "okapi-round-one", "votes") == "1"
    assert _cell(everyone, "okapi-round-one", "votes") == "4"
    assert int(_cell(everyone, "okapi-round-one", "rating")) < 1000 < int(_cell(people, "okapi-round-one", "rating"))


def test_length_controlled_rating_discounts_longer_answers(annotator, versions):
    base, child = versions
    # round one wins when its answer is longer, loses when shorter, and is usually longer
    _votes(child, base, annotator, ["a"] * 32, tokens=(30, 10))
    _votes(child, base, annotator, ["b"] * 8, tokens=(10, 30))
    _votes(child, base, annotator, ["a", "b"] * 4, tokens=(10, 10))
    board = build_board(bootstrap=100)
    row = {r.version: r for r in board.rows}["okapi-round-one"]
    assert board.lc_needs == 0 and board.votes == 48
    assert row.rating > 1100 and abs(row.lc_rating - 1000) < 0.5 * (row.rating - 1000)


def test_length_controlled_rating_needs_enough_votes_to_fit(client, annotator, versions):
    base, child = versions
    _votes(child, base, annotator, ["a"] * 5, tokens=(30, 10))
    _votes(child, base, annotator, ["b"], tokens=(10, 30))
    board = build_board(bootstrap=50)
    assert board.lc_needs == 40 and board.length_coef is None  # 20 votes per fitted parameter, 2 parameters
    assert all(r.lc_rating is None for r in board.rows)
    client.force_login(annotator)
    page = client.get(reverse("compare:leaderboard")).content.decode()
    assert "needs 40 votes" in page and "points per unit" not in page


def test_empty_leaderboard_says_so(client, annotator, versions):
    client.force_login(annotator)
    assert b"No votes between two versions yet" in client.get(reverse("compare:leaderboard")).content


def _run(input_version, output_version, *, status=TrainingRun.SUCCEEDED, metrics=None, losses=(0.69, 0.6, 0.5)):
    run = TrainingRun.objects.create(input_version=input_version, output_version=output_version, status=status,
                                     metrics=metrics or {}, done=len(losses), total=len(losses), pairs=32)
    for step, loss in enumerate(losses, 1):
        TrainingStep.objects.create(run=run, step=step, data={
            "loss": loss, "rewards/accuracies": 0.5 + step / 10, "rewards/margins": step / 20, "kl": step / 100,
            "rewards/chosen": -step / 10, "rewards/rejected": -step / 5, "lr": 1e-6, "note": "text is skipped",
        })
    return run


def test_run_dashboard_shows_the_stored_metrics(client, staff, versions):
    base, child = versions
    metrics = {"loss": 0.5123, "rewards/accuracies": 0.8125, "rewards/margins": 0.3456, "kl": 0.0123, "pairs": 32}
    run = _run(base, child, metrics=metrics)
    client.force_login(staff)
    page = client.get(reverse("training:run", args=[run.pk])).content.decode()
    for key, value in metrics.items():
        shown = re.search(rf'<table class="metrics summary">.*?data-key="{re.escape(key)}">([^<]*)<', page, re.S)
        assert float(shown.group(1)) == pytest.approx(value, rel=1e-4), key
    cards = re.findall(r'data-metric="([^"]+)">([^<]+)<', page)
    # The training batch's figures, margin and accuracy first; the trainer's per-batch "kl" stays in the table and
    # curves: the headline KL is measured on the new version's own answers (kl_to_reference).
    assert cards == [("Reward margin", "0.3456"), ("Reward accuracy", "0.8125"), ("Loss", "0.5123")]
    last = re.search(r'<table class="metrics last-step">.*?data-key="loss">([^<]*)<', page, re.S).group(1)
    assert float(last) == 0.5
    assert page.count("<svg") == 6  # margin, accuracy, loss, log-ratio, chosen/rejected, lr
    # the trainer's per-step "kl" (its name before it was renamed) is the mean log-ratio on the training pairs, which
    # goes negative: it was charted as "KL to reference", the title of the headline's true KL on sampled answers
    assert "Log-ratio to reference" in page and ">KL to reference<" not in page
    assert "Chosen rewards often go negative" in page
    assert "hx-trigger" not in page and "stayed at ln 2" not in page


def test_a_running_run_is_polled_and_a_flat_loss_warns(client, staff, versions):
    base, _ = versions
    run = _run(base, None, status=TrainingRun.RUNNING, losses=(0.6931, 0.6932, 0.6931, 0.6930, 0.6931))
    client.force_login(staff)
    partial = client.get(reverse("training:run", args=[run.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 2s"' in partial and "<html" not in partial
    assert "the loss stayed at ln 2" in partial


def test_a_running_run_can_be_cancelled_from_its_own_page(client, staff, versions):
    """The run's page showed a bar with no Cancel, no stage and no estimate; only the runs list could cancel."""
    base, _ = versions
    run = _run(base, None, status=TrainingRun.RUNNING, losses=(0.69, 0.61))
    TrainingRun.objects.filter(pk=run.pk).update(progress=0.996, stage="step 249 of 250")
    client.force_login(staff)
    page = client.get(reverse("training:run", args=[run.pk])).content.decode()
    cancel = reverse("training:cancel_run", args=[run.pk])
    assert f'hx-post="{cancel}"' in page and "step 249 of 250" in page and "99%" in page and "100%" not in page
    client.post(cancel, HTTP_HX_REQUEST="true")
    run.refresh_from_db()
    assert run.status == "cancelling"
    page = client.get(reverse("training:run", args=[run.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert f'hx-post="{cancel}"' not in page and "cancelling" in page


def test_a_run_without_a_summary_leads_with_its_latest_step(client, staff, versions):
    base, child = versions
    run = _run(base, child, metrics={}, losses=(0.69, 0.61))
    client.force_login(staff)
    page = client.get(reverse("training:run", args=[run.pk])).content.decode()
    assert re.findall(r'data-metric="([^"]+)">([^<]+)<', page)[:3] == [
        ("Reward margin", "0.1"), ("Reward accuracy", "0.7"), ("Loss", "0.61")]
    rounds = client.get(reverse("compare:rounds")).content.decode()
    assert "Loss <strong>0.61</strong>" in rounds


def test_the_flat_loss_warning_reads_the_preference_loss_where_a_run_logged_it(versions):
    base, child = versions
    run = _run(base, child, metrics={}, losses=(2.0,) * 6)  # total loss: ln 2 plus an NLL term
    for step in run.steps.all():
        step.data = {**step.data, "loss/preference": 0.6931}
        step.save()
    assert dashboard.run_warnings(run) == [dashboard.FLAT_WARNING]
    assert dashboard.run_warnings(_run(base, make_version("other", parent=base), metrics={}, losses=(2.0,) * 6)) == []


def test_flat_loss_rule():
    assert dashboard.loss_is_flat([0.6931] * 6)
    assert not dashboard.loss_is_flat([0.6931, 0.69, 0.6, 0.5, 0.45, 0.4])
    assert not dashboard.loss_is_flat([0.6931] * 3)  # too early to tell
    assert not dashboard.loss_is_flat([0.5, 0.4, 0.6931, 0.65])


def test_rounds_page_shows_each_version_and_warns_on_length_drift(client, annotator, versions):
    base, child = versions
    base.mean_response_tokens = 999.0  # a stale stored figure: pages measure the stored answers themselves
    base.save()
    grandchild = make_version("tapir-round-two", parent=child)
    make_response(make_prompt(), grandchild, tokens=155)
    _run(base, child, metrics={"rewards/margins": 0.25, "rewards/accuracies": 0.75})
    _votes(child, base, annotator, ["a", "a", "b"], tokens=(150, 100))
    client.force_login(annotator)
    page = client.get(reverse("compare:rounds")).content.decode()
    assert _cell(page, "zebrafinch-base", "mean-tokens").startswith("100")
    assert _cell(page, "okapi-round-one", "mean-tokens").startswith("150")
    assert "mean over 3 answers, 0 cut off at the token limit" in _cell(page, "okapi-round-one", "mean-tokens")
    assert _cell(page, "zebrafinch-base", "rating") == "1000"
    assert "okapi-round-one: answers are 50% longer than the parent" in page
    assert "tapir-round-two: answers are" not in page  # 3% longer is fine
    assert grandchild.name in page
    # the training runs' figures are staff's, as the run pages and the metrics API are: not shown to annotators
    assert "Reward margin" not in page and "Training runs" not in page
    client.force_login(make_user("lead", is_staff=True))
    page = client.get(reverse("compare:rounds")).content.decode()
    headline = re.search(r'<tr data-version="okapi-round-one">.*?class="headline">(.*?)</td>', page, re.S).group(1)
    assert "Reward margin <strong>0.25</strong>" in headline and "Reward accuracy <strong>0.75</strong>" in headline
    assert grandchild.name in page


def test_the_dashboards_first_address_redirects_to_the_training_app(client, staff, annotator, versions):
    base, child = versions
    run = _run(base, child, metrics={"loss": 0.5})
    client.force_login(staff)
    response = client.get(f"/compare/rounds/{run.pk}/")
    assert response.status_code == 301 and response["Location"] == f"/training/runs/{run.pk}/"
    assert client.get(response["Location"]).status_code == 200
    client.force_login(annotator)  # staff-only, like every page under /training/; the rounds page links it for staff
    assert client.get(response["Location"]).status_code == 403
    rounds = client.get("/compare/rounds/").content.decode()
    assert f"/training/runs/{run.pk}/" not in rounds


def test_votes_among_unrated_versions_are_not_counted_as_the_fits(client, annotator, versions):
    base, child = versions
    _votes(child, base, annotator, ["a"] * 5 + ["b"] * 3)
    island_a, island_b = make_version("island-a"), make_version("island-b")
    _votes(island_a, island_b, annotator, ["a"] * 3)  # no chain of votes to base: not rated
    board = build_board(bootstrap=20)
    assert sorted(board.unrated) == ["island-a", "island-b"]
    assert board.votes == 8  # the fit's votes, not 11
    assert board.lc_needs == 40  # 2 fitted parameters (round one's rating, the length coefficient), not 4 versions'
    client.force_login(annotator)
    page = client.get(reverse("compare:leaderboard")).content.decode()
    assert "ratings from 8 votes" in page and "needs 40 votes" in page


def test_a_win_rate_of_a_half_percent_rounds_up_as_every_page_rounds(annotator, versions):
    base, child = versions
    _votes(child, base, annotator, ["a"] * 10 + ["b"] * 6)  # 10 of 16 = 62.5%
    cells = dict(build_board(bootstrap=20).matrix)
    assert [c.percent for c in cells["okapi-round-one"] if c.rate is not None] == [63]  # round() gave 62


def test_the_rounds_page_shows_the_leaderboards_intervals(client, staff, annotator, versions):
    base, child = versions
    _votes(child, base, annotator, ["a"] * 11 + ["b"] * 7 + ["tie"] * 3 + ["both_bad"] * 2)
    client.force_login(staff)
    board = client.get(reverse("compare:leaderboard")).content.decode()
    rounds = client.get(reverse("compare:rounds")).content.decode()
    interval = _cell(board, "okapi-round-one", "interval")
    assert re.fullmatch(r"\d+ – \d+", interval) and _cell(rounds, "okapi-round-one", "interval") == interval


def test_a_judge_voting_again_on_the_same_answers_counts_once_on_the_board(versions):
    """A second set with the same seed and settings reuses its answers; a judge voting on both said one thing
    twice, and the automatic board counted it twice."""
    from compare.models import Comparison

    base, child = versions
    judge = judge_account("tests.rules:fixed")
    first = [make_comparison(child, base) for _ in range(3)]
    for comparison in first:
        services.record_vote(comparison, judge, "a")
        again = Comparison.objects.create(prompt=comparison.prompt, response_a=comparison.response_b,
                                          response_b=comparison.response_a, left_is_a=True)
        services.record_vote(again, judge, "b")  # the same verdict, the answers the other way round
    board = build_board(include_automatic=True, bootstrap=50)
    assert board.votes == 3
    assert {r.version: r.votes for r in board.rows}["okapi-round-one"] == 3


def test_length_growth_reads_answers_sampled_in_batches_of_another_size_as_the_same_settings(versions):
    """An answer reused by another job keeps the batch size it was sampled at (reuse ignores it: the batch changes
    no answer), and length growth read it as a setting: two versions' answers under one sampling key were "no prompt
    answered by both under the same settings". Found by an outside review."""
    from generation.backends.base import SamplingConfig
    from generation.length import length_growth
    from generation.models import Response
    from generation.services import sampling_key

    base, child = versions
    prompt = make_prompt()
    for version, batch_size, tokens in ((base, 128, 10), (child, 8, 20)):
        config = SamplingConfig(n=1, batch_size=batch_size)
        Response.objects.create(prompt=prompt, version=version, text="x", token_count=tokens,
                                sampling_params=dict(config.to_dict(), seed=7), sampling_key=sampling_key(config, 7))
    assert Response.objects.values("sampling_key").distinct().count() == 1
    measured = length_growth([(child.pk, base.pk)])[(child.pk, base.pk)]
    assert measured.prompts == 1 and measured.growth == pytest.approx(1.0)


def test_length_growth_compares_answers_to_the_same_prompts_under_the_same_settings(client, annotator, versions):
    """The rounds page called identical answers 131% longer: the parent's mean took in its labelling answers (256
    tokens allowed, long) and the child's its evaluation answers (128 allowed). Growth reads the prompts both answered
    under the same settings (the seed aside), each prompt once however many samples it has."""
    from generation.length import length_growth
    from generation.models import Response

    base, child = versions
    eval_settings = {"max_new_tokens": 128, "temperature": 0.7}
    for k in range(3):  # the same answers to the evaluation prompts, under different seeds
        prompt = make_prompt()
        for version, seed in ((base, 1), (child, 2)):
            Response.objects.create(prompt=prompt, version=version, text="same", token_count=40 + k,
                                    sampling_params=dict(eval_settings, seed=seed))
    labelling = make_prompt(split=Prompt.TRAIN)
    for i in range(4):  # the parent's long labelling samples: another prompt, other settings
        Response.objects.create(prompt=labelling, version=base, text="long", token_count=250, sample_index=i,
                                sampling_params={"max_new_tokens": 256, "temperature": 1.0, "seed": 3})
    make_response(make_prompt(), child, tokens=500)  # a prompt only the child answered: not compared
    measured = length_growth([(child.pk, base.pk)])[(child.pk, base.pk)]
    assert measured.growth == pytest.approx(0.0) and measured.prompts == 3
    client.force_login(annotator)
    page = client.get(reverse("compare:rounds")).content.decode()
    cell = _cell(page, "okapi-round-one", "mean-tokens")
    assert "+0%" in cell and "on 3 prompts both answered under the same settings" in cell, cell
    assert "answers are" not in page  # no length warning for the same answers

    # longer answers on the shared prompts are growth, on their own settings group: (80+82+84)/(40+41+42)
    for response in Response.objects.filter(version=child, text="same"):
        response.token_count *= 2
        response.save()
    assert length_growth([(child.pk, base.pk)])[(child.pk, base.pk)].growth == pytest.approx(1.0)
    # another job's two answers to the first prompt, under another seed: one group with the first job's, each answer
    # weighing one, (80 + 20 + 20) / 3 = 40 (a mean of the jobs' means would read 50)
    first = Response.objects.get(version=child, token_count=80).prompt
    for i in (1, 2):
        Response.objects.create(prompt=first, version=child, text="short", token_count=20, sample_index=i,
                                sampling_params=dict(eval_settings, seed=9))
    assert length_growth([(child.pk, base.pk)])[(child.pk, base.pk)].growth == pytest.approx((40 + 82 + 84) / 123 - 1)
    # no prompt in common: no figure rather than one that compares different questions
    other = make_version("newt-round-one", parent=base)
    make_response(make_prompt(), other, tokens=10)
    assert length_growth([(other.pk, base.pk)])[(other.pk, base.pk)].growth is None


def test_the_win_rate_matrix_counts_as_the_gate_counts(client, annotator, versions):
    """The matrix counted every vote as independent while the gate counts each pair of answers once, at its voters'
    mean: two people preferring round one on 8 pairs and one preferring base on 8 others read 67% on 24 votes, from
    47%, on the leaderboard, and 50% on 16 pairs, from 28%, at the gate (found by an outside review)."""
    from compare.models import Vote
    from tests.annotate.factories import make_user

    base, child = versions
    other = make_user("second-voter")
    for k in range(16):
        comparison = make_comparison(child, base)
        services.record_vote(comparison, annotator, "a" if k < 8 else "b")
        if k < 8:
            services.record_vote(comparison, other, "a")
    assert Vote.objects.count() == 24
    cell = next(c for c in dict(build_board(bootstrap=20).matrix)["okapi-round-one"] if c.rate is not None)
    assert (cell.rate, cell.n, cell.votes) == (0.5, 16, 24)
    assert (round(cell.low, 2), round(cell.high, 2)) == (0.28, 0.72)
    client.force_login(annotator)
    page = client.get(reverse("compare:leaderboard")).content.decode()
    assert "over 16 pairs of answers (24 votes)" in page and "50% <span class=\"muted\">(16)</span>" in page
