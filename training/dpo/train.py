"""Command line: `python -m training.dpo.train --model DIR --data FILE.jsonl --out DIR [options]`.

Prints each optimiser step's metrics as a JSON line ({"step": ..., "total_steps": ..., metrics}), the work before
the first step as JSON lines too ({"stage": "computing reference log-probs" or "SFT warm start", "done": units done,
"total": units in the stage, "then": steps to come after it}), a progress bar on stderr, and, as the last stdout line,
one JSON summary (pairs, loss, pairs_per_s, peak_rss_mb, ...). Bad input exits 2 with one clear line ("error: ..."),
before training (--out must be a new or empty folder: nothing there is written over), a run whose loss or gradient
stops being a finite number, or that a loss term stops (TrainingCancelled), exits 1 with one such line, and Ctrl-C
exits 130 with one. Cached
reference log-probs in the rows (ref_chosen_logp, ref_rejected_logp) are used, not recomputed; `--config` takes a
whole DPOConfig as JSON and `--result` writes the whole TrainResult (with every pair's reference log-probs) to a
new (or empty) file outside --out.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from prefcore import rows
from training.dpo.config import CHOICES, DPOConfig, field_help

# Short names kept for the two flags people type most; every other DPOConfig field is --field-name.
ALIASES = {"loss_type": "--loss", "learning_rate": "--lr"}


def _flag(name: str) -> str:
    return ALIASES.get(name, "--" + name.replace("_", "-"))


def _parser() -> argparse.ArgumentParser:
    parser = rows.read_negative_numbers(
        argparse.ArgumentParser(prog="python -m training.dpo.train", description="Train a policy with DPO."))
    parser.add_argument("--model", required=True, help="starting model (and default reference) directory")
    parser.add_argument("--data", required=True, help="preference rows in TRL, HH-RLHF or UltraFeedback columns "
                        "(optional: preference_prob, and ref_chosen_logp with ref_rejected_logp): a .csv, .parquet or "
                        ".json (an array) file read as the import page reads it, any other name (.jsonl, a pipe) as "
                        "JSONL, one JSON object per line")
    parser.add_argument("--out", required=True, help="directory for the checkpoint or LoRA adapter")
    parser.add_argument("--reference", default=None, help="reference model directory (default: --model)")
    parser.add_argument("--config", default=None, metavar="FILE.json",
                        help="the whole DPOConfig as a JSON object (instead of the training flags below)")
    parser.add_argument("--allow-term", action="append", default=[], metavar="package.module:attr",
                        help="a loss term --loss-terms may name besides the built-in ones (repeat for more)")
    parser.add_argument("--result", default=None, metavar="FILE.json",
                        help="write the whole result here, with every pair's reference log-probs in input order (a new "
                        "or empty file, outside --out: nothing is written over)")
    group = parser.add_argument_group("training settings (DPOConfig's fields, with its defaults and ranges)")
    for field in dataclasses.fields(DPOConfig):
        default = field.default
        options = {"dest": field.name, "default": default, "help": f"{field_help(field.name)} (default: {default})"}
        if isinstance(default, bool):
            group.add_argument(_flag(field.name), action=argparse.BooleanOptionalAction, **options)
        else:
            group.add_argument(_flag(field.name), type=type(default), choices=CHOICES.get(field.name), **options)
    return parser


CONFIG_FLAGS = tuple(field.name for field in dataclasses.fields(DPOConfig))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = _parser().parse_args(argv)
    probe = _parser()
    for action in probe._actions:
        if action.dest in CONFIG_FLAGS:
            action.default = argparse.SUPPRESS  # so only the flags actually given appear
    args.given_settings = [name for name in CONFIG_FLAGS if name in vars(probe.parse_args(argv))]
    if args.config is not None and args.given_settings:
        flags = ", ".join(_flag(name) for name in args.given_settings)
        probe.error(f"--config takes the whole training configuration: do not combine it with {flags}")
    return args


def config_from_args(args: argparse.Namespace) -> DPOConfig:
    """The DPOConfig of the command line: the --config file, or the training flags (a value out of range is a
    ValueError naming the field)."""
    if args.config is None:
        values = {name: getattr(args, name) for name in CONFIG_FLAGS}
        if "max_prompt_length" not in getattr(args, "given_settings", ()):
            # a --max-length below the default prompt length keeps room for an answer (as the form does)
            values["max_prompt_length"] = min(values["max_prompt_length"], values["max_length"] - 1)
        elif values["max_prompt_length"] >= values["max_length"]:  # given: lowered, it trained on other settings
            raise ValueError(f"--max-prompt-length {values['max_prompt_length']}: must be less than --max-length "
                             f"{values['max_length']} (room for an answer)")
        return DPOConfig(**values)
    path = Path(args.config)
    try:
        raw = path.read_bytes()
    except OSError as exc:  # the OS's message named no flag
        raise ValueError(f"--config {path}: {'a folder, not a file' if path.is_dir() else exc.strerror or exc}") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=rows.unique_keys)
    except UnicodeDecodeError as exc:
        raise ValueError(f"--config {path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise ValueError(f"--config {path}: JSON nested too deeply") from None
    except rows.DuplicateKey as exc:
        raise ValueError(f"--config {path}: {exc}") from None
    except ValueError:  # an integer past Python's 4,300 digits
        raise ValueError(f"--config {path}: a number of more than 4,300 digits: not a value any setting takes") from None
    try:
        return DPOConfig.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def check_model_dir(path: str, flag: str) -> None:
    """A clear error for a model folder that cannot be loaded, before any process loads it (a config.json that is
    not a JSON object was reported in the library's words, naming no flag, after torch had loaded)."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{flag} {folder}: " + ("a file, not a model directory" if folder.exists() else "no such directory"))
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(f"{flag} {folder}: not a model directory (no config.json)")
    try:
        data = json.loads(config.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{flag} {config}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag} {config}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except (ValueError, RecursionError):
        raise ValueError(f"{flag} {config}: not a model's configuration") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type", ""), str):
        raise ValueError(f"{flag} {config}: not a model's configuration (expected a JSON object with model_type)")


def check_out_dir(path: str) -> None:
    """--out must be a folder that is not there yet, or empty, said before training: a folder holding a model was
    written over without a word (its weights replaced), and a file there failed the run only after its last step."""
    folder = Path(path)
    if folder.is_dir():
        if any(folder.iterdir()):
            raise ValueError(f"--out {folder}: the folder is not empty (it would be written over): name a new folder "
                             "or an empty one")
        return
    if folder.exists():
        raise ValueError(f"--out {folder}: is a file (name a folder)")
    _check_parent("--out", folder, folder=True)


def _check_parent(flag: str, target: Path, *, folder: bool = False) -> None:
    """The nearest existing folder above `target` (one that is not there yet) is a folder this process can write in,
    and `target` (a folder, or a file) can be made there: made, then removed with the folders made above it. Where
    access() says yes and nothing can be made (under /proc, a name the file system refuses, a link to nowhere), the
    model or the report failed to be written after the whole run, naming no flag. In a launch of several processes
    (accelerate launch) the main process tries it, the one that writes the model and the report; the others would
    make and remove the same names at the same moment."""
    parent = next((p for p in target.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"{flag} {target}: {parent} is a file, not a folder")
    if parent is not None and not os.access(parent, os.W_OK):
        raise ValueError(f"{flag} {target}: {parent} is not writable")
    if target.exists():  # an empty file or folder, taken as it is
        return
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0:
        return
    if target.is_symlink():
        raise ValueError(f"{flag} {target}: a link to {os.readlink(target)}, which is not there")
    made: list[Path] = []  # what this made, the only things it removes: not a link to nowhere above `target`,
    try:  # nor a file or folder another process made meanwhile
        for path in reversed([p for p in (target, *target.parents) if not p.exists()]):  # the shallowest first
            try:
                path.touch(exist_ok=False) if path == target and not folder else path.mkdir()
            except FileExistsError:
                if path.is_symlink() and not path.exists():
                    raise ValueError(f"{flag} {target}: {path} is a link to {os.readlink(path)}, which is not "
                                     "there") from None
                if path == target or not path.is_dir():
                    raise
                continue  # a folder made meanwhile (by another run): there, not this check's to remove
            made.append(path)
    except OSError as exc:
        raise ValueError(f"{flag} {target}: cannot be made there ({exc.strerror or exc})") from None
    finally:
        for path in reversed(made):  # the deepest first
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()


@contextlib.contextmanager
def _naming(flag: str, path: str) -> Iterator[None]:
    """An OSError while a flag's path is looked at names the flag: a name too long for the file system was said in
    the OS's words alone ("[Errno 36] File name too long: ...")."""
    try:
        yield
    except OSError as exc:
        raise ValueError(f"{flag} {path}: {exc.strerror or exc}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def check_result_path(path: str, out: str) -> None:
    """--result must be a new (or empty) file that can be written, outside --out, said before training (not after it,
    losing the run's report). Nothing is written over: an existing file there (the --data file named by mistake) was
    replaced by the report, and one inside --out (its model.safetensors) replaced the trained weights."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"--result {target}: is a folder (name a file)")
    _check_parent("--result", target)  # first: a file above it (a --data file/r.json) is said as such
    if (problem := _holds_data(target)) is not None:
        raise ValueError(f"--result {target}: {problem}: name a new file")
    result, model = target.resolve(), Path(out).resolve()
    if result == model or model in result.parents:
        raise ValueError(f"--result {target}: {'is' if result == model else 'inside'} --out {out}, which holds the "
                         "model only: name a file elsewhere")
    if result in model.parents:
        raise ValueError(f"--result {target}: --out {out} is inside it: name a file elsewhere")


def _holds_data(path: Path) -> str | None:
    """Why `path` may not be written over, or None: a file with something in it, a link (the report's rename replaced
    /dev/stdout, a link, with a file when run as root), or something else not a regular file (a device, a pipe)."""
    try:
        found = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(found.st_mode):  # the report's rename would replace the link, not write where it points
        return "a link (the report would replace it)"
    if stat.S_ISDIR(found.st_mode):
        return "a folder"
    if not stat.S_ISREG(found.st_mode):
        return "not a regular file (a device, a pipe or a socket)"
    return "the file exists (it would be written over)" if found.st_size > 0 else None


# The flags whose paths the model libraries open or write: they take no name the shell could not decode as UTF-8
# (transformers and tokenizers write names out as UTF-8), and failed naming no flag, --out after the whole run.
LIBRARY_PATHS = ("model", "reference", "out")


def check_arguments(args: argparse.Namespace) -> None:
    """Refused before anything runs, naming the flag: a NUL character in any text argument (no file name or setting
    holds one), and bytes the shell could not decode as UTF-8 (a Latin-1 file name) in --model, --reference or --out,
    which the model libraries cannot take: such an --out trained the whole run and then failed to save it. --data and
    --result are read and written by this program, which takes such names."""
    for dest, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            if dest == "given_settings" or not isinstance(item, str):
                continue
            problem = rows.argument_problem(item)
            if problem and ("\x00" in item or dest in LIBRARY_PATHS):
                flag = _flag(dest) if dest in CONFIG_FLAGS else "--" + dest.replace("_", "-")
                try:
                    shown = os.fsencode(item)
                except UnicodeEncodeError:  # a surrogate no byte was decoded to
                    shown = item.encode("utf-8", "backslashreplace")
                raise ValueError(f"{flag} {problem}: {shown[:60]!r}")


def _write_json(path: Path, data: dict) -> None:
    """Write, then rename: a reader never sees half a file. A file that came there during the run is not written
    over (check_result_path said so before it)."""
    if (problem := _holds_data(path)) is not None:
        raise FileExistsError(errno.EEXIST, f"{problem}, which it was not when the run began; the report is not "
                                            "written")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_arguments(args)
        with _naming("--config", args.config):
            config = config_from_args(args)
        with _naming("--model", args.model):
            check_model_dir(args.model, "--model")
        if args.reference is not None:
            with _naming("--reference", args.reference):
                check_model_dir(args.reference, "--reference")
        if args.result:
            with _naming("--result", args.result):
                check_result_path(args.result, args.out)
        # loaded after the flags are checked: torch and transformers take seconds, a bad flag should not wait
        from training.dpo.data import load_pairs

        with _naming("--data", args.data):
            if Path(args.data).is_dir() or not Path(args.data).exists():  # the OS's message named no flag (a pipe,
                # /dev/stdin, is read as a file is)
                raise ValueError(f"--data {args.data}: {'a folder, not a file' if Path(args.data).is_dir() else 'no such file'}")
            pairs = load_pairs(args.data)  # a file that cannot be read (permissions, an I/O error) names it too
        with _naming("--out", args.out):
            check_out_dir(args.out)
    except (ValueError, OSError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted: nothing was saved", file=sys.stderr)
        return 130
    try:  # not bad input: a broken install (a CUDA library missing, numpy's "dtype size changed") keeps its traceback
        from tqdm import tqdm

        from training.dpo.trainer import MARKS, TrainingCancelled, TrainingDiverged, train_dpo  # loads torch (above)
    except KeyboardInterrupt:  # Ctrl-C while torch loads (seconds) ended in a traceback of torch's imports
        print("error: interrupted: nothing was saved", file=sys.stderr)
        return 130

    main_process = int(os.environ.get("RANK", "0")) == 0  # under accelerate launch only the main process reports
    bar = tqdm(desc="DPO steps", unit="step", file=sys.stderr, disable=not main_process)

    def on_step(step: int, total: int, metrics: dict) -> None:
        bar.total = total
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['rewards/accuracy']:.2f}")
        print(json.dumps({"step": step, "total_steps": total, **metrics}), flush=True)

    def on_stage(stage: str, done: int, total: int, then: int) -> None:  # main process only (train_dpo's rule)
        print(json.dumps({"stage": stage, "done": done, "total": total, "then": then}), flush=True)

    try:
        result = train_dpo(config, args.model, pairs, args.out, reference_dir=args.reference, on_step=on_step,
                           allowed_terms=args.allow_term, on_stage=on_stage)
    except (ValueError, OSError) as exc:
        bar.close()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:  # the settings or the data, not a bug: its line, as the launcher reads it
        bar.close()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except TrainingCancelled as exc:  # a loss term may stop the run (nothing is saved then): its line, no traceback
        bar.close()
        print(f"error: {_one_line(exc)}: nothing was saved", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (the model is saved whole or not at all)
        bar.close()
        saved = any((Path(args.out) / mark).is_file() for mark in MARKS)  # a model, or a LoRA adapter
        print("error: interrupted" + (f" after the model was saved in {args.out}" if saved else ": nothing was saved"),
              file=sys.stderr)
        return 130
    bar.close()
    if not main_process:
        return 0
    summary = {
        "pairs": result.pairs, "loss": result.mean_loss, "pairs_per_s": result.pairs_per_s,
        "peak_rss_mb": result.peak_rss_mb, "steps": result.steps, "seconds": result.seconds,
        "truncated": result.truncated, "dropped": result.dropped, "out": str(args.out),
        "final_metrics": result.final_metrics,
    }
    print(json.dumps(summary), flush=True)
    if args.result:
        try:
            _write_json(Path(args.result), {**dataclasses.asdict(result), "out": str(args.out)})
        except OSError as exc:  # the run and its checkpoint stand; only the report file could not be written
            print(f"error: --result {args.result}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    return 0


def leave(code: int) -> None:
    """End the process with `code` once main() returned, without Python's teardown where that is safe.

    The teardown of a finished run (the garbage of torch's and transformers' modules, their tensors and thread
    pools) took about 1 s of the command's whole time (bench/dpo_throughput.py; 0.04 s with os._exit), with nothing
    left to write: the checkpoint and --result are written and closed by then. So the streams are flushed and the
    process ends at once. Under `accelerate launch` (WORLD_SIZE > 1) too, once the process group is destroyed
    (accelerate's own end, end_training, destroys it): the teardown was where a process died of SIGABRT after a run
    that had saved its model (CI; the launcher then reported the run failed). gloo's worker threads still ran then,
    and a tensor they released took the GIL of an interpreter being torn down (pytorch/pytorch#179291). Destroying
    the group does not end those threads in a training process: the group outlives destroy_process_group (DDP's
    construction imports torch._dynamo and with it torch.distributed.nn.functional, whose functions keep the group
    made before it as a default argument; in the trainer more than that holds it), so they ran until the teardown
    freed it. A toy gloo job of 50 all-reduces that made a DDP module died so in 3 of 20 launches with the group
    destroyed, in none of 20 that left without the teardown (9 of 20 without either).
    A stream that cannot be flushed (a closed pipe) leaves through the normal exit, which reports it as it always
    did."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _destroy_process_group()
    logging.shutdown()  # a handler's buffered records (a file handler's) are written, as the normal exit writes them
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: started with it closed (`>&-`), print() writes nothing there
                stream.flush()
    except (OSError, ValueError):
        sys.exit(code)
    os._exit(code)


def _destroy_process_group() -> None:
    """Destroy the default process group, if one was made (not when the run stopped before training began)."""
    if "torch" not in sys.modules:  # torch never loaded: no group either (and none is worth importing torch for)
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    leave(main())
