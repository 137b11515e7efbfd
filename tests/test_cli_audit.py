"""What an audit of the command line found: bootstrap_model registered any folder with a config.json as "base" (and
kept a relative path as typed); Ctrl-C while an import read its file, or during an export, ended in a traceback; the
prompt import and the export showed no progress; the LLM judge's factory named without arguments failed only after
the sampling; ensure_admin said "exists" of an account that is no admin, and took a one-character password.

A Ctrl-C is a function that raises KeyboardInterrupt part-way (no signal is sent). Left to escape, it would stop the
whole test session, so each such command runs through _interrupted, which turns one into this test's failure.
"""
from __future__ import annotations

import io
import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate import importers
from annotate.models import Pair
from generation.models import ModelVersion, Prompt
from judges import JudgeError, check_judge, load_judge
from tests.annotate.factories import make_pair

pytestmark = pytest.mark.django_db


def _interrupted(*args, **options) -> str:
    """The one-line CommandError a command ends with; a raw KeyboardInterrupt fails the test (not the session)."""
    try:
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO(), **options)
    except KeyboardInterrupt:
        pytest.fail(f"{args[0]}: a raw KeyboardInterrupt escaped (a traceback at the command line)")
    except CommandError as exc:
        assert "\n" not in str(exc)
        return str(exc)
    pytest.fail(f"{args[0]} ended without an error")


def _ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt


# ---- bootstrap_model: only a usable checkpoint becomes "base" -----------------------------------------------------

@pytest.fixture
def model_copy(tiny_model_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def _bootstrap(path) -> str:
    out = io.StringIO()
    call_command("bootstrap_model", path=str(path), stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(("config", "says"), [
    ('"garbage"', "no model_type"), ("{}", "no model_type"), ("{not json", "not JSON"),
])
def test_bootstrap_refuses_a_config_json_that_is_no_models(model_copy, config, says):
    (model_copy / "config.json").write_text(config)
    with pytest.raises(CommandError, match=rf"^bootstrap_model: {model_copy / 'config.json'} is not a model's "
                                           rf"config \(.*{says}"):
        _bootstrap(model_copy)
    assert not ModelVersion.objects.exists()


def test_bootstrap_refuses_a_folder_without_weights(model_copy):
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(CommandError, match=rf"^bootstrap_model: {model_copy} holds no weights \(no \*.safetensors"):
        _bootstrap(model_copy)
    assert not ModelVersion.objects.exists()


def test_bootstrap_stores_a_relative_path_as_the_absolute_folder(model_copy, monkeypatch):
    monkeypatch.chdir(model_copy.parent)
    assert "(current)" in _bootstrap("model")
    assert ModelVersion.objects.get(name="base").path == str(model_copy)
    assert "version 'base'" in _bootstrap("./model/")  # the same folder, spelt another way: idempotent


def test_bootstrap_puts_a_base_registered_at_no_checkpoint_on_the_one_given(model_copy, tmp_path):
    """A base registered (before checkpoints were checked) at a folder with a garbage config.json was current, and
    every later `bootstrap_model --path GOOD` was refused as "registered already", with no way out at the command
    line. Nothing was made from it, so it now points at the checkpoint given."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('"garbage"')
    wrong = ModelVersion.objects.create(name="base", path=str(bad), is_current=True)
    assert "(current)" in _bootstrap(model_copy)
    base = ModelVersion.objects.get(name="base")
    assert (base.pk, base.path, base.is_current) == (wrong.pk, str(model_copy), True)
    assert base.size_bytes > 0


def test_bootstrap_without_a_path_keeps_the_base_registered_even_when_its_folder_is_missing(model_copy, tmp_path,
                                                                                             settings):
    """`make run` bootstraps with no --path at every start: a chosen base whose disk was not mounted yet was swapped
    for PREFLOOP_BASE_MODEL's model without a word, and stayed swapped when the disk came back."""
    chosen = tmp_path / "chosen"
    base = ModelVersion.objects.create(name="base", path=str(chosen), is_current=True)
    settings.PREFLOOP_BASE_MODEL = model_copy
    call_command("bootstrap_model", stdout=io.StringIO())
    assert ModelVersion.objects.get(pk=base.pk).path == str(chosen)


def test_bootstrap_keeps_an_unusable_base_that_rounds_refer_to_and_says_how_to_recover(model_copy, tmp_path):
    gone = tmp_path / "gone"
    base = ModelVersion.objects.create(name="base", path=str(gone), is_current=True)
    ModelVersion.objects.create(name="round-1", path=str(tmp_path / "r1"), parent=base, round=1)
    with pytest.raises(CommandError, match=rf"^bootstrap_model: the version 'base' is registered already, at {gone}, "
                                           r"which holds no usable checkpoint \(.* does not exist\).*put its "
                                           r"checkpoint back .* or start a fresh data folder"):
        _bootstrap(model_copy)
    assert ModelVersion.objects.get(name="base").path == str(gone)


# ---- Ctrl-C while an import reads its file: one line, nothing stored ----------------------------------------------

@pytest.mark.parametrize(("command", "reader", "line"), [
    ("import_prompts", "read_prompts", '{"prompt": "Why is the sky blue?"}'),
    ("import_pairs", "read_pairs", '{"prompt": "p", "response_a": "a", "response_b": "b"}'),
    ("import_preferences", "read_preferences", '{"prompt": "p", "chosen": "a", "rejected": "b"}'),
])
def test_ctrl_c_while_an_import_reads_its_file_says_nothing_was_stored(tmp_path, monkeypatch, command, reader,
                                                                      line):
    path = tmp_path / "rows.jsonl"
    path.write_text(line + "\n")
    monkeypatch.setattr(importers.formats, reader, _ctrl_c)
    assert _interrupted(command, str(path)) == f"{path}: interrupted while reading the file: nothing was stored"
    assert not Prompt.objects.exists() and not Pair.objects.exists()


def test_ctrl_c_while_load_demo_reads_says_which_file_and_that_nothing_was_stored(monkeypatch):
    monkeypatch.setattr(importers.formats, "read_prompts", _ctrl_c)
    assert _interrupted("load_demo").endswith("prompts.jsonl: interrupted while reading the file: nothing was stored")
    assert not Prompt.objects.exists()


def test_ctrl_c_while_an_import_writes_still_says_what_was_kept(tmp_path, monkeypatch):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "Why is the sky blue?"}\n')
    monkeypatch.setattr(importers, "_prompts_by_hash", _ctrl_c)
    assert _interrupted("import_prompts", str(path)).startswith(f"{path}: interrupted after 0 of 1 rows; those are "
                                                                "stored")


# ---- progress bars and Ctrl-C for import_prompts and export_preferences ------------------------------------------

def _recording_bar(calls: list):
    @contextmanager
    def bar(desc, total=None):
        calls.append((desc, total))
        yield lambda n=1: calls.append(n)
    return bar


def test_import_prompts_shows_its_progress(tmp_path, monkeypatch):
    from annotate.management.commands import _progress

    calls = []
    monkeypatch.setattr(_progress, "bar", _recording_bar(calls))  # the import commands' bar (run_import)
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"question {k}?"}) + "\n" for k in range(3)))
    call_command("import_prompts", str(path), stdout=io.StringIO())
    assert calls[0] == ("import prompts", 3) and sum(calls[1:]) == 3  # started once the file is read: its rows


def test_a_file_refused_while_read_leaves_no_empty_bar(tmp_path, monkeypatch):
    from annotate.management.commands import _progress

    calls = []
    monkeypatch.setattr(_progress, "bar", _recording_bar(calls))  # the import commands' bar (run_import)
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "fine"}\n{"nope": 1}\n')
    with pytest.raises(CommandError, match="line 2: field 'prompt': missing"):
        call_command("import_prompts", str(path), stdout=io.StringIO())
    assert calls == []


@pytest.fixture
def decided():
    return [make_pair(text_a=f"good {k}", text_b=f"bad {k}", is_gold=True, gold_choice="a") for k in range(3)]


def test_export_preferences_shows_its_progress(tmp_path, monkeypatch, decided):
    from annotate.management.commands import export_preferences

    class Bar:  # tqdm as the command uses it: its total set once the pairs to read are counted
        shown = []

        def __init__(self, desc, **kwargs):
            self.desc, self.total, self.n = desc, None, 0
            Bar.shown.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def refresh(self):
            pass

        def update(self, n=1):
            self.n += n

    monkeypatch.setattr(export_preferences, "tqdm", Bar)
    call_command("export_preferences", str(tmp_path / "out.jsonl"), stdout=io.StringIO())
    (bar,) = Bar.shown
    assert (bar.desc, bar.total, bar.n) == ("export preferences", len(decided), len(decided))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_ctrl_c_during_an_export_leaves_nothing_behind(tmp_path, monkeypatch, decided, fmt):
    """Interrupted with every row in the temporary file, just before the rename: nothing under OUT."""
    from annotate import exporters

    monkeypatch.setattr(exporters, "_same_mode", _ctrl_c)
    out = tmp_path / "exports"
    out.mkdir()
    assert _interrupted("export_preferences", str(out), format=fmt) == (f"export_preferences: interrupted: nothing "
                                                                        f"was written to {out}")
    assert list(out.iterdir()) == []


def test_ctrl_c_while_an_export_reads_the_pairs_writes_nothing(tmp_path, monkeypatch, decided):
    from annotate import exporters

    monkeypatch.setattr(exporters, "decisions", _ctrl_c)
    out = tmp_path / "out.jsonl"
    assert _interrupted("export_preferences", str(out)) == f"export_preferences: interrupted: nothing was written to {out}"
    assert not out.exists()


# ---- judges: a factory named without its arguments ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["judges.llm:for_version", " judges.llm.for_version ", "judges.llm:for_version?"])
def test_a_built_in_factory_named_without_arguments_is_refused_when_checked(name):
    for check in (check_judge, load_judge):
        with pytest.raises(JudgeError, match=r"^judge 'judges.llm[:.]for_version\??' needs arguments, e.g. "
                                             r"judges.llm:for_version\?name=round-2$"):
            check(name)


def test_generate_pairs_refuses_the_bare_factory_before_sampling():
    ModelVersion.objects.create(name="base", path="/nonexistent/base", is_current=True)
    Prompt.objects.create(text="question 0?", split=Prompt.TRAIN)
    with pytest.raises(CommandError, match="needs arguments, e.g. judges.llm:for_version"):
        call_command("generate_pairs", prompts=1, samples=4, pairing="judge", judge="judges.llm:for_version",
                     stdout=io.StringIO(), stderr=io.StringIO())


def test_the_factory_with_its_arguments_still_checks():
    assert check_judge("judges.llm:for_version?name=round-2") == "judges.llm:for_version"


# ---- ensure_admin -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [{}, {"is_superuser": True, "is_active": False}, {"is_staff": True}])
def test_ensure_admin_says_an_account_that_is_no_active_superuser_cannot_sign_in_and_lets_make_run_go_on(fields):
    """It said "exists" of an account no one could sign in to the admin with. Said, not refused: `make run` calls
    it at every start, and an account turned off on purpose must not stop the server from starting."""
    user = get_user_model().objects.create_user("alice", password=None, **fields)
    out, err = io.StringIO(), io.StringIO()
    call_command("ensure_admin", username="alice", stdout=out, stderr=err)
    assert err.getvalue().startswith("ensure_admin: the account 'alice' exists but is not an active superuser, so it "
                                     "cannot sign in to the admin: tick Active and Superuser status")
    assert out.getvalue() == ""
    user.refresh_from_db()
    assert (user.is_active, user.is_superuser) == (fields.get("is_active", True), fields.get("is_superuser", False))


def test_ensure_admin_says_an_admin_that_is_one_exists():
    get_user_model().objects.create_superuser("root", password=None)
    out = io.StringIO()
    call_command("ensure_admin", username="root", stdout=out)
    assert out.getvalue().strip() == ("admin account 'root' exists (password lost? .venv/bin/python manage.py "
                                      "changepassword root)")


def test_ensure_admin_refuses_a_password_the_settings_refuse(monkeypatch):
    monkeypatch.setenv("PREFLOOP_ADMIN_PASSWORD", "x")
    with pytest.raises(CommandError, match=r"^ensure_admin: PREFLOOP_ADMIN_PASSWORD: This password is too short"):
        call_command("ensure_admin", username="admin", stdout=io.StringIO())
    assert not get_user_model().objects.exists()
    monkeypatch.setenv("PREFLOOP_ADMIN_PASSWORD", "demo-password")  # docs/screenshots/take.py's
    call_command("ensure_admin", username="admin", stdout=io.StringIO())
    assert get_user_model().objects.get(username="admin").check_password("demo-password")


@pytest.mark.parametrize("command", ["import_prompts", "import_pairs", "import_preferences"])
def test_an_import_file_that_cannot_be_opened_is_said_as_the_file_and_why(tmp_path, command):
    """From an outside probe: said in the OS's words, "[Errno 2] No such file or directory: '...'"."""
    (tmp_path / "file").write_text("")
    for path, why in ((tmp_path / "missing.jsonl", "No such file or directory"),
                      (tmp_path / "file" / "x.jsonl", "Not a directory"),
                      (tmp_path / ("a" * 300 + ".jsonl"), "File name too long")):
        with pytest.raises(CommandError) as caught:
            call_command(command, str(path))
        assert str(caught.value) == f"{path}: {why}"


def test_ctrl_c_while_django_starts_is_one_line(monkeypatch, capsys):
    """From an outside probe: Ctrl-C in the second or more Django takes to start (settings, apps, the URL checks),
    before a command's own handling, ended in a traceback through the URL modules."""
    import runpy
    import sys

    import django.core.management

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(django.core.management, "execute_from_command_line", interrupted)
    monkeypatch.setattr(sys, "argv", ["manage.py", "score_margins"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(Path(__file__).resolve().parents[1] / "manage.py"), run_name="__main__")
    assert exited.value.code == 130
    assert capsys.readouterr().err == "manage.py score_margins: interrupted\n"
