"""The progress bars of the commands that run a job in the foreground tell what the job's own row tells: train_round's
bar counted DPO steps alone, so it stood empty while the reference log-probs and the warm start ran, and at 100% while
the run measured its new version (answering the eval prompts, KL), which can take as long as the training;
generate_pairs' bar moved once per stored chunk of prompts, so a job of one chunk (16 prompts of 4 samples) stood at 0
until its end, then at 100% while the round's pairs were readied."""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from generation import services as gen
from generation.models import Prompt
from prefloop import commands
from training import services as train

pytestmark = pytest.mark.django_db
PARAMS = {"epochs": 1, "batch_size": 1, "max_length": 64, "max_prompt_length": 32}


class _Bars:
    """Stands in for tqdm in a command's module: each bar's (n, total, description) at every moment asked."""

    def __init__(self):
        self.bars = []

    def __call__(self, *args, **kwargs):
        bars = self

        class Bar:
            def __init__(self):
                self.n, self.total, self.desc = 0, kwargs.get("total"), kwargs.get("desc", "")
                bars.bars.append(self)

            def update(self, k=1):
                self.n += k

            def set_description(self, desc, refresh=True):
                self.desc = desc

            def set_postfix(self, *a, **k):
                pass

            def write(self, *a, **k):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        return Bar()

    def shown(self) -> tuple[float, str]:
        bar = self.bars[-1]
        return (bar.n / bar.total if bar.total else 0.0), bar.desc


def test_train_rounds_bar_is_short_of_full_while_the_run_measures_its_version(trainable_base, settings, monkeypatch):
    from training.management.commands import train_round

    for k in range(3):
        Prompt.objects.create(text=f"eval question {k}", split="eval")
    settings.PREFLOOP_ROUND_EVAL_PROMPTS = 3
    bars = _Bars()
    monkeypatch.setattr(train_round, "tqdm", bars, raising=False)  # the command's own bar, or the shared one
    monkeypatch.setattr(commands, "tqdm", bars)
    seen, real = [], train._evaluate

    def measuring(*args, **kwargs):
        seen.append(bars.shown())
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "_evaluate", measuring)
    call_command("train_round", params=json.dumps(PARAMS), stdout=io.StringIO(), stderr=io.StringIO())
    (fraction, desc), = seen
    assert 0.5 < fraction < 1.0, (fraction, desc)  # the steps are done, the measuring is not
    assert "measuring 'round-1'" in desc
    assert bars.shown()[0] == 1.0  # full once the run succeeded


def test_generate_pairs_bar_moves_inside_a_chunk_and_is_short_of_full_while_the_pairs_are_readied(
        tiny_model_dir, settings, monkeypatch):
    from generation.management.commands import generate_pairs

    for k in range(4):
        Prompt.objects.create(text=f"Question {k}: name {k} birds.", split="train")
    gen.register_version("base", tiny_model_dir)
    bars = _Bars()
    monkeypatch.setattr(generate_pairs, "tqdm", bars, raising=False)
    monkeypatch.setattr(commands, "tqdm", bars)
    seen, real = [], gen._prepare_queue
    sampled, real_store = [], gen._store_samples

    def readying(*args, **kwargs):
        seen.append(bars.shown())
        return real(*args, **kwargs)

    def storing(*args, **kwargs):  # the one chunk's samples are in, none stored yet
        sampled.append(bars.shown())
        return real_store(*args, **kwargs)

    monkeypatch.setattr(gen, "_prepare_queue", readying)
    monkeypatch.setattr(gen, "_store_samples", storing)
    call_command("generate_pairs", prompts=4, samples=2, max_new_tokens=8, stdout=io.StringIO(),
                 stderr=io.StringIO())
    (fraction, desc), = sampled
    assert 0.5 < fraction < 1.0 and "sampling prompts 1–4" in desc, (fraction, desc)
    (fraction, desc), = seen
    assert fraction < 1.0, (fraction, desc)  # every prompt sampled, the job not done
    assert bars.shown()[0] == 1.0


def test_compare_versions_bar_moves_while_a_version_answers(tiny_model_dir, monkeypatch):
    """Its bar counted stored answers: each version answers its prompts in one batch (up to 128), so the bar stood
    at 0 while the first version sampled, then at half while the second did."""
    from compare.management.commands import compare_versions

    base = gen.register_version("base", tiny_model_dir)
    gen.register_version("child", tiny_model_dir, parent=base)
    for k in range(3):
        Prompt.objects.create(text=f"Question {k}: name {k} birds.", split="eval")
    bars = _Bars()
    monkeypatch.setattr(compare_versions, "tqdm", bars, raising=False)
    monkeypatch.setattr(commands, "tqdm", bars)
    seen, real = [], gen.storable_text

    def storing(text):  # the first version's batch is sampled, none of its answers stored yet
        seen.append(bars.shown())
        return real(text)

    monkeypatch.setattr(gen, "storable_text", storing)
    call_command("compare_versions", "child", "base", "--max-new-tokens", "8", stdout=io.StringIO(),
                 stderr=io.StringIO())
    fraction, desc = seen[0]
    assert 0.3 < fraction < 1.0 and "answering with A" in desc, (fraction, desc)
    assert bars.shown()[0] == 1.0
