"""Wall time of each stage of one loop iteration on the default model: generate 32 pairs, train a round on them,
answer 8 compare prompts with both versions. Runs on a fresh temporary database; prints one table.

    .venv/bin/python bench/loop.py [--pairs 32] [--compare 8]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--compare", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="prefloop-bench-loop-"))
    os.environ.update(PREFLOOP_DATA_DIR=str(work), DATABASE_URL=f"sqlite:///{work / 'db.sqlite3'}",
                      DJANGO_SETTINGS_MODULE="prefloop.settings")
    os.environ.pop("CELERY_BROKER_URL", None)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from annotate.services import next_pair_for, record_label
    from bench.report import describe_machine
    from generation import services as gen
    from generation.backends.base import SamplingConfig
    from generation.bootstrap import bootstrap_checkpoint
    from generation.models import Prompt
    from judges.rules import LengthTarget
    from prefloop.numerics import dtype_note
    from training import services as train

    call_command("migrate", verbosity=0)
    base = gen.register_version("base", bootstrap_checkpoint(ROOT / "var" / "models" / "smollm2-135m-instruct"))
    call_command("import_prompts", str(ROOT / "bench" / "data" / "train_prompts.jsonl"), split="train", tag="bench")
    call_command("import_prompts", str(ROOT / "bench" / "data" / "eval_prompts.jsonl"), split="eval", tag="bench")
    user = get_user_model().objects.create_user("bench")
    sampling = SamplingConfig(n=2, max_new_tokens=args.max_new_tokens)
    rows = []

    t = time.perf_counter()
    job = gen.start_generation_job(base, n_prompts=args.pairs, config=sampling, tag="bench", enqueue=False)
    job = gen.run_generation_job(job.pk)
    rows.append((f"generate {args.pairs} prompts x 2 samples", time.perf_counter() - t, f"{job.pairs_made} pairs"))

    t = time.perf_counter()
    judge, labelled = LengthTarget(), 0
    while (assignment := next_pair_for(user)) is not None:
        pair = assignment.pair
        left, right = ((pair.response_a, pair.response_b) if assignment.left_is_a
                       else (pair.response_b, pair.response_a))
        verdict = judge(pair.prompt.text, left.text, right.text)
        side = {"a": "left", "b": "right"}.get(verdict if isinstance(verdict, str) else
                                               ("a" if verdict >= 0.5 else "b"), verdict)
        record_label(assignment, user, side)
        labelled += 1
    rows.append(("label (rule judge)", time.perf_counter() - t, f"{labelled} labels"))

    t = time.perf_counter()
    run = train.run_training(train.start_training_run(enqueue=False).pk)
    if run.status != "succeeded":
        raise SystemExit(f"training failed: {run.error}")
    rows.append(("train a round (defaults)", time.perf_counter() - t,
                 f"{run.pairs} pairs, {run.total_steps} steps, loss {run.metrics.get('mean_loss', float('nan')):.4f}"))

    t = time.perf_counter()
    prompts = list(Prompt.objects.filter(split="eval").order_by("pk")[: args.compare])
    one = SamplingConfig(n=1, max_new_tokens=args.max_new_tokens)
    gen.answers_for(base, prompts, one, seed=0)
    gen.answers_for(run.output_version, prompts, one, seed=0)
    rows.append((f"answer {args.compare} compare prompts x 2 versions", time.perf_counter() - t, ""))

    print(f"\nOne loop iteration on SmolLM2-135M-Instruct · CPU: {describe_machine()} · dtype: {dtype_note()}")
    print(f"{'stage':<42} {'seconds':>9}  notes")
    for name, seconds, note in rows:
        print(f"{name:<42} {seconds:>9.1f}  {note}")
    print(f"{'total':<42} {sum(r[1] for r in rows):>9.1f}")


if __name__ == "__main__":
    main()
