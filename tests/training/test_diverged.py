"""A run whose loss stops being a number ends with one clear line, from the command line and from the launcher."""
import json

from training.dpo import train
from training.launcher import failure_message

NAN_TERM = "tests.training.terms_for_tests:nan_loss"


def test_the_cli_says_a_diverged_run_in_one_line(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"Q{i}", "chosen": "Thank you! Happy to help.",
                                          "rejected": "No."}) for i in range(4)))
    code = train.main(["--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "out"),
                       "--dtype", "float32", "--epochs", "1", "--loss-terms", NAN_TERM, "--allow-term", NAN_TERM])
    err = capsys.readouterr().err
    assert code == 1
    assert "\nerror: step 1 of 1: the loss is nan" in "\n" + err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_launcher_reads_a_diverged_traceback_past_torchrun():
    # a process that ended in TrainingDiverged's traceback: its line, not torchrun's boilerplate after it
    wall = ["Traceback (most recent call last):", '  File "train.py", line 3, in <module>',
            "[rank0]: training.dpo.trainer.TrainingDiverged: step 1 of 1: the loss is nan and the gradient norm nan",
            "E0101 agent stopping", "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
            "subprocess.CalledProcessError: Command '['python', '-m', 'x']' returned non-zero exit status 1."]
    assert failure_message(wall) == ("training.dpo.trainer.TrainingDiverged: step 1 of 1: the loss is nan and the "
                                     "gradient norm nan")


def test_the_cli_says_a_stop_from_inside_a_loss_term_in_one_line(tiny_model_dir, tmp_path, capsys):
    """From an outside probe: a TrainingCancelled raised inside a loss term ended the command line in a traceback."""
    term = "tests.training.terms_for_tests:cancelling"
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "Q", "chosen": "Thank you!", "rejected": "No."}) + "\n")
    code = train.main(["--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "out"),
                       "--dtype", "float32", "--epochs", "1", "--loss-terms", term, "--allow-term", term])
    err = capsys.readouterr().err
    assert code == 1
    assert "\nerror: stopped by the term: its deadline passed: nothing was saved\n" in "\n" + err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
