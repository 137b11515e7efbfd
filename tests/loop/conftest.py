"""The loop tests label and evaluate with their own judges (tests/loop/judges_for_tests.py), listed in settings."""
import pytest

from generation import services as gen
from generation.models import Prompt


@pytest.fixture(autouse=True)
def _test_judges_listed(listed_test_judges):
    return listed_test_judges


@pytest.fixture
def loop_base(db, tiny_model_dir, settings, tmp_path):
    """A loop's starting point: the tiny model registered as base, and `make(train, eval)` adding that many train
    prompts (tag "t") and eval prompts. Returns (base version, make)."""
    settings.MODELS_DIR = tmp_path / "models"
    base = gen.register_version("base", tiny_model_dir)

    def make(train: int, eval: int) -> None:
        for k in range(train):
            Prompt.objects.create(text=f"Train question {k}: name {k} fruits.", split="train", tag="t")
        for k in range(eval):
            Prompt.objects.create(text=f"Eval question {k}: name a colour.", split="eval")

    return base, make


@pytest.fixture
def loop_run(loop_base, settings):
    """A one-round loop run of 4 pairs over 8 train prompts (tag "t"), evaluated on 3 eval prompts; not started."""
    from loop.services import start_loop_run

    from .test_run_loop import JUDGE, PARAMS

    _, make = loop_base
    make(train=8, eval=3)
    settings.PREFLOOP_ROUND_EVAL_PROMPTS = 3
    return start_loop_run(rounds=1, pairs=4, judge=JUDGE, tag="t", eval_limit=3, params=PARAMS, enqueue=False,
                          preset="all")
