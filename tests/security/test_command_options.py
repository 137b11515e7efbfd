"""Row 10 of issue 17 for the command line: every option of every PrefLoop management command, given junk (ids
negative and past 32 and 64 bits, non-finite numbers, text with a NUL byte, a lone surrogate as a shell passes
undecodable bytes, or 300 characters), ends in a clear CommandError or does its job: never another exception. The
commands and their options are read from the commands themselves, so a new option is walked too."""
from __future__ import annotations

import argparse
import json
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command, find_commands, load_command_class
from django.core.management.base import BaseCommand

from generation.models import ModelVersion

# Options every Django command has (its --version takes no value; commands that reuse the name for a model
# version are walked); PrefLoop's own are walked.
DJANGO_OPTIONS = {"help", "verbosity", "settings", "pythonpath", "traceback", "no_color", "force_color",
                  "skip_checks"}
# bootstrap_model writes a model checkpoint to --path (no database); walked by its own tests.
SKIPPED = {"bootstrap_model"}
INT_JUNK = ["-1", "0", str(2**31), str(2**63), str(10**30), "9" * 5000]
FLOAT_JUNK = ["nan", "inf", "-inf", "-1", "1e308"]
TEXT_JUNK = ["a\x00b", "x" * 300, "caf\udce9", ""]


def _commands() -> list[tuple[str, str]]:
    out = []
    for app in ("annotate", "generation", "training", "compare", "loop"):
        path = Path(settings.BASE_DIR) / app / "management"
        out += [(app, name) for name in find_commands(str(path)) if name not in SKIPPED]
    return out


def _positional(action: argparse.Action, tmp_path: Path) -> str:
    """A usable value for a positional argument: a small file of every kind for files, a new path for outputs."""
    if action.dest == "file":
        path = tmp_path / "rows.jsonl"
        path.write_text(json.dumps({"prompt": "q", "response_a": "a", "response_b": "b", "chosen": "c",
                                    "rejected": "d"}) + "\n")
        return str(path)
    if action.dest == "out":
        return str(tmp_path / "new-export.jsonl")
    return "x"


def _required(action: argparse.Action) -> str:
    if action.type is int:
        return "1"
    return "judges.rules:length_target" if "judge" in action.dest else "x"


def _junk(action: argparse.Action) -> list[str]:
    if action.choices or action.nargs == 0:
        return []  # argparse itself refuses anything else
    if action.type is int:
        return INT_JUNK
    if action.type is float:
        return FLOAT_JUNK
    return TEXT_JUNK


@pytest.mark.django_db
def test_junk_in_every_command_option_gives_a_clear_error_or_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative junk paths ("", "xxx...") land here, not in the repository
    ModelVersion.objects.create(name="base", path=str(tmp_path / "no-model-here"), is_current=True)
    failures, walked = [], 0
    for app, name in _commands():
        command: BaseCommand = load_command_class(app, name)
        parser = command.create_parser("manage.py", name)
        actions = [a for a in parser._actions if a.dest not in DJANGO_OPTIONS]
        positionals = [_positional(a, tmp_path) for a in actions if not a.option_strings]
        required = [f"{a.option_strings[0]}={_required(a)}" for a in actions if a.option_strings and a.required]
        slots = [a for a in actions if not a.option_strings]
        runs = [([*positionals[:i], value, *positionals[i + 1:], *required], f"{a.dest}={value[:30]!r}")
                for i, a in enumerate(slots) for value in TEXT_JUNK]
        for action in (a for a in actions if a.option_strings):
            others = [r for r in required if not r.startswith(action.option_strings[0] + "=")]
            runs += [([*positionals, *others, f"{action.option_strings[0]}={value}"],
                      f"{action.option_strings[0]}={value[:30]!r}") for value in _junk(action)]
        for argv, what in runs:
            walked += 1
            try:
                call_command(name, *argv, stdout=StringIO(), stderr=StringIO())
            except CommandError:
                pass
            except BaseException as exc:  # what a person would see as a traceback
                failures.append(f"{name} {what}: {type(exc).__name__}: {str(exc)[:200]}")
            (tmp_path / "new-export.jsonl").unlink(missing_ok=True)
    assert walked > 50
    assert failures == [], "\n".join(failures)


@pytest.mark.django_db
def test_a_negative_number_in_scientific_notation_is_a_value_the_option_refuses(tmp_path):
    """From an outside probe: argparse read `--min-agreement -1e-5` (and -inf) as a flag, "expected one argument",
    and the option's own check, which says what it takes, never ran."""
    for value in ("-1e-5", "-inf", "-NaN"):
        with pytest.raises(CommandError, match=r"^--min-agreement must be between 0 and 1, got (-1e-05|-inf|nan)$"):
            call_command("export_preferences", str(tmp_path / "out.jsonl"), "--min-agreement", value)
    assert not (tmp_path / "out.jsonl").exists()
