"""bench/loop_efficacy.py checks a run against the issues' goals and says which it met, with each figure: a run
that misses one must say so (the old summary printed fixed goals beside any result)."""
from __future__ import annotations

from bench.loop_efficacy import goals


def _round(n, win, cut=3, base_cut=30, seconds=60.0):
    return {"round": n, "win_rate_vs_base": win, "truncated_answers": cut, "base_truncated_answers": base_cut,
            "seconds": {"generate": seconds, "label": 0, "train": seconds, "evaluate": 0}}


def _met(lines):
    return {line.split(": ", 1)[1].split(" (")[0]: line.startswith("met") for line in lines}


def test_a_run_meeting_every_goal_says_so():
    lines = goals([_round(1, 0.7), _round(2, 0.8), _round(3, 0.92, cut=2)], 10.0, native_bf16=True)
    assert all(line.startswith("met: ") for line in lines), lines
    assert "92.0%" in lines[0] and "70.0% -> 80.0% -> 92.0%" in lines[1]
    assert len(lines) == 5


def test_each_goal_missed_is_named_with_its_figure():
    rounds = [_round(1, 0.7), _round(2, 0.85), _round(3, 0.8, cut=40, seconds=150.0)]  # 5 min round
    met = _met(goals(rounds, 13.0, native_bf16=True))
    assert met == {
        "the last round wins at least 90% against base": False,
        "each round at least as good as the one before": False,
        "the last round's answers cut at the token limit no more often than base's": False,
        "every round within 4 min on 2 cores with native bf16": False,
        "the whole run within 12 min on 2 cores with native bf16": False,
    }


def test_noisy_labels_and_avx2_take_their_own_goals():
    rounds = [_round(1, 0.7, seconds=200.0), _round(2, 0.81, seconds=200.0)]  # 6.7 min rounds
    met = _met(goals(rounds, 14.0, native_bf16=False, label_noise=0.25))
    assert met["the last round wins at least 80% against base"]
    assert met["every round within 8 min on AVX2, without native bf16"]
    assert not any("whole run" in goal for goal in met)  # no whole-run time is asked on AVX2
    assert goals([], 1.0, native_bf16=True) == ["no round finished: no goal can be checked"]


def test_bad_bench_arguments_are_refused_before_any_setup(capsys):
    """They were tracebacks, the loop's only after a database was migrated and the base model registered."""
    import pytest

    from bench import label_budget, loop_efficacy

    for parse, argv, words in ((loop_efficacy.parse_args, ["--params", "{bad"], "--params is not JSON"),
                               (loop_efficacy.parse_args, ["--params", "[1]"], "--params must be a JSON object"),
                               (loop_efficacy.parse_args, ["--rounds", "0"], "--rounds must be at least 1"),
                               (label_budget.parse_args, ["--seeds", "a,b"], "expected whole numbers"),
                               (label_budget.parse_args, ["--budgets", "8,,16"], "expected whole numbers")):
        with pytest.raises(SystemExit) as refused:
            parse(argv)
        assert refused.value.code == 2 and words in capsys.readouterr().err
    assert label_budget.parse_args(["--budgets", "16,8"]).budgets == [16, 8]
