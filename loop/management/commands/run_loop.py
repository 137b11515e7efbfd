"""Run R rounds unattended: generate P pairs, label them with a judge, train, evaluate against the base version.

A progress bar on stderr; one JSON line per round on stdout.
"""
import json
import sys

from django.core.management.base import CommandError
from tqdm import tqdm

from judges import JudgeError
from loop.models import LoopRun
from loop.presets import DEFAULT, PRESETS, names
from loop.services import LoopError, run_loop, start_loop_run
from prefloop.commands import Command as PrefLoopCommand
from prefloop.commands import in_foreground, json_object_option


class Command(PrefLoopCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--rounds", type=int, required=True)
        parser.add_argument("--pairs", type=int, required=True, help="Prompts sampled per round: each gives a pair to label (with --preset spin: answers trained against its reference answer).")
        parser.add_argument("--judge", required=True,
                            help='The judge that labels the pairs (and evaluates, unless --eval-judge; with --preset spin it only evaluates), e.g. "judges.rules:length_target".')
        parser.add_argument("--eval-judge", default="",
                            help="The judge that votes on each round's answers against base (default: --judge).")
        parser.add_argument("--tag", default="", help="Only prompts with this tag.")
        parser.add_argument("--eval-limit", type=int, default=64, help="Eval prompts each new version answers.")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--preset", default=None, choices=names(),
                            help="Named round settings: " + "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values())
                                 + f" (default: {DEFAULT.name}).")
        parser.add_argument("--params", default="{}",
                            help='Loop settings as JSON, over the preset\'s: {"training": {DPOConfig fields}, '
                                 '"sampling": {...}, "pairing": "judge", "reference": "base", "data": "all"}.')

    def handle(self, *args, **o):
        params = json_object_option(o["params"], "run_loop", "--params", '{"training": {"epochs": 2}}')
        try:
            run = start_loop_run(rounds=o["rounds"], pairs=o["pairs"], judge=o["judge"], tag=o["tag"],
                                 eval_limit=o["eval_limit"], seed=o["seed"], params=params, enqueue=False,
                                 eval_judge=o["eval_judge"], preset=o["preset"], foreground=True)
        except (JudgeError, LoopError) as exc:
            raise CommandError(f"run_loop: {exc}") from None
        for line in run.log.splitlines():  # what the run's log says at its start (a gate no round can pass)
            self.stderr.write(f"run_loop: {line.partition('] ')[2] or line}")
        with tqdm(total=100 * run.rounds, desc="round 1", unit="%", bar_format="{l_bar}{bar}| {elapsed}<{remaining}") as bar:
            state = {"round": 0}

            def progress(stage, done, total):
                run.refresh_from_db(fields=["progress"])
                bar.set_description(f"round {state['round'] + 1}/{run.rounds} {stage}")
                bar.update(max(0, int(100 * run.rounds * run.progress) - bar.n))

            def on_round(result):
                state["round"] += 1
                gate = result.get("gate") or {}
                if gate.get("decision") == "promoted":
                    bar.write(f"round {result['round']}: promoted {result['version']}: {gate['reason']}", file=sys.stderr)
                elif gate:
                    bar.write(f"round {result['round']}: kept {gate['against']} ({result['version']} stays a "
                              f"candidate): {gate['reason']}", file=sys.stderr)
                if result.get("warning"):
                    bar.write(f"warning: round {result['round']}: {result['warning']}", file=sys.stderr)
                self.stdout.write(json.dumps(result))
                self.stdout.flush()

            with in_foreground("run_loop", run):
                run = run_loop(run.pk, progress=progress, on_round=on_round)
            if run.status == LoopRun.SUCCEEDED:  # the run's progress is written at most once a second: a finished
                bar.set_description(f"round {run.rounds}/{run.rounds} done")  # run's bar ended at 80-93%
                bar.update(bar.total - bar.n)
        if run.status != LoopRun.SUCCEEDED:  # a cancel from the page has no error: its stage says what was kept
            raise CommandError(f"run_loop: run {run.pk} {run.status}: {run.error or run.stage}")
