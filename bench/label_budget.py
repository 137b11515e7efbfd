"""How many people's labels does a queue order save? Simulated labels, one round, win-rate against base.

    .venv/bin/python bench/label_budget.py [--seeds 0,1,2] [--pool 48] [--seed-labels 16] [--budgets 8,16,24]
        [--target 0.6] [--people judges.rules:length_target] [--noise 0.2] [--judge judges.rules:PreferShorter]
        [--eval-limit 32] [--max-new-tokens 96] [--model var/models/smollm2-135m-instruct] [--params JSON]

A simulated team: one person account whose labels are the `--people` rule with a share `--noise` of its decided
verdicts flipped at random (judges.noise:Noisy, seeded), and a different rule as the automatic judge (`--judge`).
Per seed, on a fresh database:
  1. base samples a pool of pairs (K=2, random pairing); the person labels `--seed-labels` of them (oldest first)
     and a first version v1 is trained on them: under base itself every margin is 0, so no order could choose;
  2. the pool's open pairs get v1's implicit-reward margins (annotate.selection), and the judge labels every pair;
  3. for each order (random, uncertain, disagreement) and each budget B, from the same saved database: the person
     labels the first B pairs the queue serves in that order, the judge's labels are removed (they only ordered the
     queue), v2 is trained from v1 (reference: base) on every person's label, and v2 answers the eval prompts
     against base, judged by the people's rule without noise (what the team wants).
Prints the CPU and dtype, each (seed, order, budget) win-rate, and per seed and order the fewest labels the person
gave (at most B) in an arm that reached `--target`, with the saving of each active order against random. Then the
same over the seeds pooled, which one seed's noise moves less: each order's mean win-rate at each budget (v1's at
0 labels), the labels at which that mean first reaches the target (interpolated between the budgets around it), and
each active order's mean difference from random at equal budgets with its standard error over the seed x budget
cells. Everything lives in a temporary folder.

    .venv/bin/python bench/label_budget.py --from-log RUN.log [--target 0.6]

prints the tables again from a run's printed JSON lines (its per-seed and per-arm lines), without running anything.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_MODEL = ROOT / "var" / "models" / "smollm2-135m-instruct"
DATA = ROOT / "bench" / "data"
ORDERS = ("random", "uncertain", "disagreement")
PERSON = "sim-person"


def _whole_numbers(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]; anything else is argparse's one-line error, before any setup."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers of 0 or more, got {text!r}")
    return values


def _budgets(text: str) -> list[int]:
    """--budgets: whole numbers of 1 or more. A budget of 0 trains v2 on no new label at all, and the saving against
    random divides by the labels random needed, which would then be 0."""
    values = _whole_numbers(text)
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected budgets of 1 or more, got {text!r}")
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", type=_whole_numbers)
    parser.add_argument("--pool", type=int, default=48, help="Prompts sampled for the pool (one pair each).")
    parser.add_argument("--seed-labels", type=int, default=16, help="Labels that train v1 before any order.")
    parser.add_argument("--budgets", default="8,16,24", type=_budgets,
                        help="People's labels per arm in the measured round.")
    parser.add_argument("--target", type=float, default=0.6, help="The win-rate against base to reach.")
    parser.add_argument("--people", default="judges.rules:length_target", help="The rule standing in for people.")
    parser.add_argument("--noise", type=float, default=0.2, help="Share of people's decided labels flipped.")
    parser.add_argument("--judge", default="judges.rules:PreferShorter", help="The automatic judge (another rule).")
    parser.add_argument("--eval-limit", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--train", default=str(DATA / "train_prompts.jsonl"))
    parser.add_argument("--eval", default=str(DATA / "eval_prompts.jsonl"))
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="Base checkpoint (bootstrapped when missing).")
    parser.add_argument("--params", default="{}", help="Training settings (DPOConfig fields) as JSON.")
    parser.add_argument("--from-log", default="", help="Print the tables from an earlier run's output; run nothing.")
    return parser.parse_args(argv)


def setup(data_dir: Path) -> None:
    os.environ["PREFLOOP_DATA_DIR"] = str(data_dir)
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefloop.settings")
    import django

    django.setup()


def _copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (its WAL included), through SQLite's backup API."""
    from django.db import connections

    connections.close_all()
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def people_judge(args, seed: int) -> str:
    from urllib.parse import quote

    return f"judges.noise:Noisy?judge={quote(args.people, safe=':')}&share={args.noise}&seed={seed}"


def label_as_person(person, judge_path: str, limit: int) -> int:
    """The simulated person labels up to `limit` pairs as the queue serves them (sides as shown, blind)."""
    from annotate.services import next_pair_for, record_label
    from judges import load_judge, verdict
    from prefcore.chat import prompt_text
    from prefcore.outcomes import side_for_outcome
    from prefloop.numerics import dtype_choice

    judge = load_judge(judge_path, dtype=dtype_choice())
    done = 0
    while done < limit and (lease := next_pair_for(person)) is not None:
        pair = lease.pair
        left, right = (pair.response_a, pair.response_b) if lease.left_is_a else (pair.response_b, pair.response_a)
        seen = verdict(judge, judge_path, prompt_text(pair.prompt.as_input), left.text, right.text,
                       where=f"pair {pair.pk}")
        record_label(lease, person, side_for_outcome(seen, left_is_a=True), seconds=37.0)
        done += 1
    return done


def train(input_version, params: dict):
    from training.services import run_training, start_training_run

    run = start_training_run(input_version=input_version, reference_choice="base", data_choice="all",
                             params=params, enqueue=False)
    run = run_training(run.pk)
    if run.status != "succeeded":
        raise SystemExit(f"training run {run.pk} {run.status}: {run.error}")
    return run.output_version


def win_rate(base, version, args) -> float:
    from compare.evaluation import evaluate

    found = evaluate(base, version, args.people, tag="bench", limit=args.eval_limit, seed=0,
                     sampling={"max_new_tokens": args.max_new_tokens})
    return found.summary["win_rate_b"]


def prepare(args, seed: int, db: Path, snapshot: Path) -> dict:
    """Steps 1 and 2 for one seed; the database is saved to `snapshot` for the arms."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections

    from annotate.importers import import_prompts
    from annotate.judging import label_pairs
    from annotate.models import LabellingRound, Pair
    from annotate.selection import prepare_queue
    from generation.backends.base import SamplingConfig
    from generation.bootstrap import bootstrap_checkpoint
    from generation.services import register_version, run_generation_job, start_generation_job

    connections.close_all()
    for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        stale.unlink(missing_ok=True)
    call_command("migrate", verbosity=0)
    model = Path(args.model)
    if model.resolve() == DEFAULT_MODEL.resolve():
        bootstrap_checkpoint(model)
    base = register_version("base", model)
    import_prompts(args.train, split="train", tag="bench")
    import_prompts(args.eval, split="eval", tag="bench")
    LabellingRound.objects.create(number=1, labels_per_pair=2)  # the judge's label and the person's
    config = SamplingConfig(n=2, max_new_tokens=args.max_new_tokens, seed=seed)
    job = run_generation_job(start_generation_job(base, n_prompts=args.pool, config=config, tag="bench",
                                                  enqueue=False).pk)
    person = get_user_model().objects.create_user(PERSON)
    seeded = label_as_person(person, people_judge(args, seed), args.seed_labels)
    params = json.loads(args.params)
    v1 = train(base, params)
    v1_win = win_rate(base, v1, args)  # base's eval answers are stored now: every arm reuses them
    LabellingRound.objects.filter(number=1).update(queue_order="uncertain")  # so prepare_queue scores the pool under v1
    scored = prepare_queue(v1).scored
    judged = label_pairs(args.judge).labels
    _copy_db(db, snapshot)
    return {"pairs": job.pairs_made, "seed_labels": seeded, "v1_win": v1_win, "scored": scored, "judged": judged,
            "pool_open": Pair.objects.filter(labels_done__lt=2).count()}


def arm(args, seed: int, order: str, budget: int, db: Path, snapshot: Path) -> dict:
    from django.contrib.auth import get_user_model

    from annotate.models import Label, LabellingRound
    from generation.models import ModelVersion

    _copy_db(snapshot, db)
    LabellingRound.objects.filter(number=1).update(queue_order=order)
    person = get_user_model().objects.get(username=PERSON)
    labelled = label_as_person(person, people_judge(args, seed), budget)
    Label.objects.filter(is_automatic=True).delete()  # the judge only ordered the queue; people's labels train
    v1, base = ModelVersion.objects.get(is_current=True), ModelVersion.objects.get(name="base")
    v2 = train(v1, json.loads(args.params))
    rate = win_rate(base, v2, args)
    shutil.rmtree(v2.path, ignore_errors=True)  # each arm's checkpoint is measured once
    return {"seed": seed, "order": order, "budget": budget, "labels": labelled, "win_rate": rate}


def fewest(rows: list[dict], target: float) -> int | None:
    """The fewest labels the person actually gave in an arm that reached `target`: the budget B is only the most an
    arm may give, and a queue that runs out of pairs gives fewer."""
    reached = [r["labels"] for r in rows if r["win_rate"] >= target]
    return min(reached) if reached else None


def reach(points: list[tuple[int, float]], target: float) -> float | None:
    """Labels at which the win-rate first reaches `target`, interpolated linearly between the (labels, win-rate)
    points around it (sorted by labels); None when no point reaches it."""
    for k, (labels, rate) in enumerate(points):
        if rate >= target:
            if k == 0:
                return float(labels)
            before, was = points[k - 1]
            return before + (labels - before) * (target - was) / (rate - was)
    return None


def pooled(rows: list[dict], starts: dict[int, float], target: float) -> list[str]:
    """The tables over the seeds pooled (see the module's note). `starts`: v1's win-rate per seed (0 labels)."""
    import statistics

    seeds = sorted({r["seed"] for r in rows})
    budgets = sorted({r["budget"] for r in rows})
    cell = {(r["seed"], r["order"], r["budget"]): r for r in rows}
    start = statistics.fmean(starts[s] for s in seeds) if all(s in starts for s in seeds) else None
    lines = [f"pooled over seeds {', '.join(map(str, seeds))}: mean win-rate against base"
             + (f" (v1, 0 labels: {start:.1%})" if start is not None else ""),
             "order | " + " | ".join(f"win @ {b}" for b in budgets) + f" | labels to {target:.0%} | saved vs random"
             " | mean difference from random (± s.e.)",
             " | ".join("---" for _ in range(len(budgets) + 4))]
    need: dict[str, float | None] = {}
    for order in ORDERS:
        present = [b for b in budgets if all((s, order, b) in cell for s in seeds)]
        if not present:
            continue
        means = [statistics.fmean(cell[(s, order, b)]["win_rate"] for s in seeds) for b in present]
        labels = [statistics.fmean(cell[(s, order, b)]["labels"] for s in seeds) for b in present]
        points = ([(0, start)] if start is not None else []) + list(zip(labels, means, strict=True))
        need[order] = reach(points, target)
        saving = "—"
        if order != "random" and need[order] is not None and need.get("random"):
            saving = f"{1 - need[order] / need['random']:+.0%}"
        diffs = [cell[(s, order, b)]["win_rate"] - cell[(s, "random", b)]["win_rate"]
                 for s in seeds for b in present if (s, "random", b) in cell]
        versus = "—"
        if order != "random" and len(diffs) > 1:
            versus = f"{statistics.fmean(diffs):+.1%} ± {statistics.stdev(diffs) / len(diffs) ** 0.5:.1%} ({len(diffs)} cells)"
        lines.append(" | ".join([order, *(f"{m:.1%}" for m in means),
                                 f"{need[order]:.0f}" if need[order] is not None else f"> {present[-1]}", saving,
                                 versus]))
    return lines


def per_seed(rows: list[dict], seeds: list[int], budgets: list[int], target: float) -> list[str]:
    lines = ["seed | order | " + " | ".join(f"win @ {b}" for b in budgets) + f" | labels to {target:.0%} | saved vs random",
             " | ".join("---" for _ in range(len(budgets) + 4))]
    for seed in seeds:
        base_need = fewest([r for r in rows if r["seed"] == seed and r["order"] == "random"], target)
        for order in ORDERS:
            mine = sorted((r for r in rows if r["seed"] == seed and r["order"] == order), key=lambda r: r["budget"])
            if not mine:
                continue
            need = fewest(mine, target)
            # no saving against a random order that needed no label (a pool the queue served none of)
            saving = f"{1 - need / base_need:+.0%}" if need is not None and base_need else "—"
            lines.append(" | ".join([str(seed), order, *(f"{r['win_rate']:.1%}" for r in mine),
                                     str(need) if need is not None else f"> {mine[-1]['budget']}", saving]))
    return lines


def from_log(path: str, target: float) -> int:
    """The tables of an earlier run, from the JSON lines it printed."""
    rows, starts = [], {}
    for line in Path(path).read_text().splitlines():
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        if "order" in row:
            rows.append(row)
        elif "v1_win" in row:
            starts[row["seed"]] = row["v1_win"]
    if not rows:
        print(f"{path}: no arm's line in it", file=sys.stderr)
        return 1
    seeds, budgets = sorted({r["seed"] for r in rows}), sorted({r["budget"] for r in rows})
    print("\n".join(per_seed(rows, seeds, budgets, target)))
    print()
    print("\n".join(pooled(rows, starts, target)))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_log:
        return from_log(args.from_log, args.target)
    seeds, budgets = args.seeds, sorted(args.budgets)
    holder = tempfile.TemporaryDirectory(prefix="label-budget-")
    data_dir = Path(holder.name)
    setup(data_dir)
    from django.conf import settings

    from bench.report import describe_machine
    from prefloop.numerics import dtype_note

    db, snapshot = Path(settings.DATABASES["default"]["NAME"]), data_dir / "snapshot.sqlite3"
    print(f"CPU: {describe_machine()}")
    print(f"dtype: {dtype_note()}")
    print(f"people: {args.people} with {args.noise:.0%} of decided labels flipped; automatic judge: {args.judge}; "
          f"pool {args.pool} prompts, {args.seed_labels} seed labels, budgets {budgets}, target win-rate "
          f"{args.target:.0%} against base on {args.eval_limit} eval prompts judged by {args.people}; "
          f"training {args.params}", flush=True)
    start = time.perf_counter()
    rows: list[dict] = []
    starts: dict[int, float] = {}
    for seed in seeds:
        found = prepare(args, seed, db, snapshot)
        starts[seed] = found["v1_win"]
        print(json.dumps({"seed": seed, **found}), flush=True)
        for order in ORDERS:
            for budget in budgets:
                rows.append(arm(args, seed, order, budget, db, snapshot))
                print(json.dumps(rows[-1]), flush=True)
    print()
    print("\n".join(per_seed(rows, seeds, budgets, args.target)))
    print()
    print("\n".join(pooled(rows, starts, args.target)))
    print(f"whole run: {(time.perf_counter() - start) / 60:.1f} min")
    holder.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
