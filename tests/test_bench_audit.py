"""The benchmarks' figures are what they claim: each test here is of a bench that printed a figure it had not
measured (or crashed before any), found by an audit of bench/."""
from __future__ import annotations

import argparse
import json

import pytest

# /proc/cpuinfo of two Xeons that share a model name (as a cloud often gives it) but not a model number
XEON_A = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 8
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile

processor\t: 1
cpu family\t: 6
model\t\t: 143
stepping\t: 8
"""
XEON_B = XEON_A.replace("model\t\t: 143", "model\t\t: 207").replace("stepping\t: 8", "stepping\t: 2")


def test_two_xeons_of_one_model_name_are_told_apart():
    from bench.report import cpu_identity

    assert cpu_identity(XEON_A) == "family 6 model 143 stepping 8"
    assert cpu_identity(XEON_B) == "family 6 model 207 stepping 2"
    assert cpu_identity("") == ""


@pytest.mark.parametrize("flags, kind", [("avx2 avx512f avx512_bf16 amx_bf16", "AMX"),
                                         ("avx2 avx512f avx512_bf16", "AVX-512 BF16"),
                                         ("avx2 avx512f", "AVX-512"), ("sse2 avx2 fma", "AVX2")])
def test_the_instruction_kind_is_read_from_the_flags(flags, kind):
    from bench.report import isa_kind

    assert isa_kind(f"flags\t\t: {flags}\n") == kind


def test_the_machine_line_names_the_cpu_identity_and_kind(monkeypatch):
    from bench import report

    monkeypatch.setattr(report, "_cpuinfo", lambda: XEON_B)
    assert "family 6 model 207 stepping 2, AMX" in report.machine_line()


# -- import_lock: only the writes that overlap the import count --------------------------------------------------

def test_import_lock_counts_only_the_writes_that_overlap_the_import():
    """The writer runs 2 s before the import and 0.5 s after: quick writes there used to pull the median down."""
    from bench.import_lock import summarise

    before = [(t / 10, t / 10 + 0.001, True) for t in range(20)]  # 20 quick writes in the 2 s before
    during = [(2.0, 3.0, True), (2.5, 3.2, True), (3.0, 4.5, False)]  # the import runs from 2.1 to 4.0
    straddling = [(1.95, 2.4, True)]  # started before the import, waited on it
    after = [(4.1 + t / 10, 4.1 + t / 10 + 0.001, True) for t in range(5)]
    found = summarise(before + straddling + during + after, start=2.1, end=4.0)
    assert found["writes"] == 4 and found["failed"] == 1
    assert found["median"] == pytest.approx(0.7)  # of 0.45, 0.7 and 1.0: the quick writes outside are not in it
    assert found["max"] == pytest.approx(1.0)


def test_a_p99_is_given_only_from_enough_writes():
    """Of fewer than 100 waits the 99th percentile is the longest: a "p99" column would repeat "longest"."""
    from bench.import_lock import summarise
    from bench.report import P99_MIN_SAMPLES, p99

    few = [(i, i + 0.01 * (i + 1), True) for i in range(P99_MIN_SAMPLES - 1)]
    assert summarise(few, start=0, end=1000)["p99"] is None
    assert p99([1.0] * 99) is None
    many = [float(i) for i in range(200)]
    assert p99(many) == 198.0 and p99(many) < max(many)


# -- labelling_load: the page it parses is the app's --------------------------------------------------------------

@pytest.mark.django_db
def test_labelling_load_reads_the_lease_of_the_real_page_and_its_key_press_is_recorded(annotator):
    """The bench matched data-pair and posted "pair": the page names a lease and an annotator's key press must name
    it, so every run crashed before its first label."""
    from django.test import Client

    from annotate.models import Label
    from bench.labelling_load import label_form, lease_on
    from tests.annotate.factories import make_pair, make_round, shown_lease

    round_ = make_round()
    make_pair(round=round_)
    make_pair(round=round_)
    client = Client()
    client.force_login(annotator)
    page = client.get("/annotate/").content
    lease = lease_on(page)
    assert lease is not None and int(lease) == shown_lease(page.decode())
    response = client.post("/annotate/submit/", label_form(lease, "left"), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and Label.objects.filter(annotator=annotator).count() == 1
    following = lease_on(response.content)
    assert following is not None and following != lease  # the next pair, on a lease of its own
    client.post("/annotate/submit/", label_form(following, "right"), HTTP_HX_REQUEST="true")
    assert lease_on(client.get("/annotate/").content) is None  # nothing left: the bench's annotator stops


# -- loop_efficacy: goals are the issues', checked only at the issues' sizes --------------------------------------

def _round(n, win, seconds=60.0):
    return {"round": n, "win_rate_vs_base": win, "truncated_answers": 1, "base_truncated_answers": 30,
            "seconds": {"generate": seconds, "label": 0, "train": seconds, "evaluate": 0}}


def test_goals_are_not_checked_for_a_run_at_other_sizes():
    from bench.loop_efficacy import goals

    rounds = [_round(1, 0.95), _round(2, 0.96)]
    lines = goals(rounds, 4.0, native_bf16=True, sizes=(2, 8, 16), machine=(2, "AMX"))
    assert lines and not any(line.startswith(("met", "NOT met")) for line in lines), lines
    assert all(line.startswith("not checked (run at 2 rounds x 8 pairs x 16 eval prompts") for line in lines)
    assert "96.0%" in lines[0]  # the figure is still shown


def test_the_time_goals_name_the_machine_the_run_had():
    from bench.loop_efficacy import goals

    rounds = [_round(n, 0.9 + n / 100) for n in (1, 2, 3)]
    lines = goals(rounds, 6.0, native_bf16=True, sizes=(3, 48, 64), machine=(2, "AVX-512 BF16"))
    assert "met: every round within 4 min on 2 cores with native bf16 (longest 2.0 min on 2 cores, AVX-512 BF16)" \
        in lines
    more = goals(rounds, 6.0, native_bf16=True, sizes=(3, 48, 64), machine=(16, "AMX"))
    timed = [line for line in more if " min on " in line]
    assert len(timed) == 2 and all(line.startswith("not checked (run on 16 cores, AMX") for line in timed), more
    assert more[0].startswith("met: the last round wins")  # the win rate does not depend on the cores


# -- label_budget: labels given, and no budget of 0 ---------------------------------------------------------------

def test_label_budget_refuses_a_budget_of_0_but_takes_seed_0(capsys):
    from bench import label_budget

    with pytest.raises(SystemExit) as refused:
        label_budget.parse_args(["--budgets", "0,8"])
    assert refused.value.code == 2 and "expected budgets of 1 or more" in capsys.readouterr().err
    assert label_budget.parse_args(["--seeds", "0", "--budgets", "8"]).seeds == [0]
    with pytest.raises(argparse.ArgumentTypeError):
        label_budget._budgets("0")


def test_label_budget_reports_the_labels_given_not_the_budget():
    """A queue that runs out gives fewer labels than its budget: the table said the budget."""
    from bench.label_budget import fewest

    rows = [{"budget": 16, "labels": 11, "win_rate": 0.7}, {"budget": 24, "labels": 11, "win_rate": 0.72},
            {"budget": 8, "labels": 8, "win_rate": 0.5}]
    assert fewest(rows, 0.6) == 11
    assert fewest(rows, 0.9) is None


def test_label_budget_pools_the_seeds_and_interpolates_the_labels_to_the_target():
    """One seed's first budget past the target moved with its noise (win rates do not rise with the budget within a
    seed): pooled over the seeds, from v1's win rate at 0 labels, interpolated between the budgets around it."""
    from bench.label_budget import pooled, reach

    assert reach([(0, 0.5), (16, 0.55), (32, 0.65)], 0.6) == pytest.approx(24.0)
    assert reach([(0, 0.62), (16, 0.5)], 0.6) == 0.0 and reach([(0, 0.5), (16, 0.55)], 0.6) is None
    rows = [{"seed": seed, "order": order, "budget": b, "labels": b, "win_rate": rate}
            for seed, shift in ((0, 0.0), (1, 0.02))
            for order, rates in (("random", (0.52, 0.58, 0.62)), ("uncertain", (0.58, 0.62, 0.64)),
                                 ("disagreement", (0.5, 0.56, 0.6)))
            for b, rate in zip((16, 32, 48), (r + shift for r in rates), strict=True)]
    lines = pooled(rows, {0: 0.5, 1: 0.5}, 0.6)
    table = {line.split(" | ")[0]: line.split(" | ") for line in lines[3:]}
    assert table["random"][1:4] == ["53.0%", "59.0%", "63.0%"] and table["random"][4] == "36"  # 32 + 16 x 1/4
    assert table["uncertain"][4] == "20" and table["uncertain"][5] == "+44%"  # 16 + 16 x 1/4, against random's 36
    assert table["uncertain"][6].startswith("+4.0% ± ") and "(6 cells)" in table["uncertain"][6]
    assert table["disagreement"][4] == "44" and table["disagreement"][5] == "-22%"  # 32 + 16 x 3/4


def test_label_budget_prints_its_tables_again_from_a_runs_output(tmp_path, capsys):
    from bench.label_budget import main

    log = tmp_path / "run.log"
    log.write_text("CPU: something\n" + "\n".join(json.dumps(row) for row in (
        {"seed": 0, "pairs": 96, "v1_win": 0.5},
        {"seed": 0, "order": "random", "budget": 16, "labels": 16, "win_rate": 0.55},
        {"seed": 0, "order": "random", "budget": 32, "labels": 32, "win_rate": 0.65},
        {"seed": 0, "order": "uncertain", "budget": 16, "labels": 16, "win_rate": 0.61},
        {"seed": 0, "order": "uncertain", "budget": 32, "labels": 32, "win_rate": 0.6})) + "\n")
    assert main(["--from-log", str(log), "--target", "0.6"]) == 0
    out = capsys.readouterr().out
    assert "0 | uncertain | 61.0% | 60.0% | 16 | +50%" in out  # per seed: 16 labels against random's 32
    assert "random | 55.0% | 65.0% | 24 | — | —" in out  # pooled: from 55% at 16 to 65% at 32
    assert main(["--from-log", str(tmp_path / "run.log"), "--target", "0.9"]) == 0
    empty = tmp_path / "empty.log"
    empty.write_text("nothing\n")
    assert main(["--from-log", str(empty)]) == 1


# -- dpo_throughput: the in-process run takes the command line's settings -----------------------------------------

def test_the_in_process_dpo_run_clamps_the_prompt_length_as_the_cli_does(tmp_path, monkeypatch):
    """With --max-length 256 the default max_prompt_length (256) is refused by DPOConfig: the CLI clamps it."""
    import json

    from bench import dpo_throughput
    from training.dpo import trainer

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "yes", "rejected": "no"}) + "\n"
                            for i in range(3)))
    seen = {}

    class Result:
        pairs, mean_loss, steps = 3, 0.69, 1

    def fake_train(config, model, pairs, out):
        seen["config"], seen["pairs"] = config, len(pairs)
        return Result()

    monkeypatch.setattr(trainer, "train_dpo", fake_train)
    args = argparse.Namespace(data=data, pairs=32, batch_size=2, max_length=256, dtype="float32", model="unused")
    result = dpo_throughput.run_ours(args)
    assert seen["config"].max_prompt_length == 255 and seen["config"].max_length == 256
    assert result["pairs"] == 3 and seen["pairs"] == 3  # the file's 3, not --pairs 32
