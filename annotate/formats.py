"""Reading prompt, pair and preference files (JSONL, CSV, Parquet) into checked rows; no Django here.

Every problem is reported as "FILE: line N: field F: what was expected", so one bad row can be found and fixed.
Preference formats: TRL (prompt/chosen/rejected, strings or message lists, or implicit-prompt conversations),
Anthropic HH-RLHF transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...") and UltraFeedback-binarised (message lists
and scores).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = {"system", "user", "assistant"}
FORMATS = ("auto", "trl", "hh", "ultrafeedback")
SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


class ImportProblem(Exception):
    """Rows that cannot be imported; each message names the file, the line and the field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)


class _RowError(Exception):
    def __init__(self, field: str, message: str):
        self.field, self.message = field, message


@dataclass(frozen=True)
class PromptRow:
    line: int
    text: str
    messages: list[dict] | None


@dataclass(frozen=True)
class PairRow:
    line: int
    prompt: PromptRow
    response_a: str
    response_b: str


@dataclass(frozen=True)
class PreferenceRow:
    line: int
    prompt: PromptRow
    chosen: str
    rejected: str
    is_tie: bool = False
    preference_prob: float | None = None


def _plain(value: Any) -> Any:
    """Python values from what pandas and pyarrow hand back (numpy arrays, numpy scalars, NaN)."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def read_rows(path: Path | str, name: str | None = None) -> list[tuple[int, dict]]:
    """(line number, row) for each row of a JSONL, CSV or Parquet file; `name` is how errors call the file."""
    path = Path(path)
    name = name or path.name
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ImportProblem([f"{name}: unknown file type {path.suffix or '(none)'!r}: expected .jsonl, .csv or .parquet"])
    if kind == "jsonl":
        return _read_jsonl(path, name)
    import pandas as pd

    try:
        if kind == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
            first_line = 2  # line 1 is the header
        else:
            frame = pd.read_parquet(path)
            first_line = 1
    except Exception as exc:  # pandas raises many types; the person needs the file name and the reason
        raise ImportProblem([f"{name}: cannot read as {kind.upper()}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"]) from None
    records = frame.to_dict(orient="records")
    return [(first_line + i, {str(k): _plain(v) for k, v in row.items()}) for i, row in enumerate(records)]


def _read_jsonl(path: Path, name: str) -> list[tuple[int, dict]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ImportProblem([f"{name}: not UTF-8 text (byte {exc.start})"]) from None
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array of objects is accepted too
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ImportProblem([f"{name}: line {exc.lineno}: not valid JSON ({exc.msg})"]) from None
        return [(i + 1, item) if isinstance(item, dict) else _not_object(name, i + 1) for i, item in enumerate(items)]
    rows, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{name}: line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(item, dict):
            problems.append(f"{name}: line {number}: expected a JSON object with named fields")
            continue
        rows.append((number, item))
    if problems:
        raise ImportProblem(problems)
    return rows


def _not_object(name, number):
    raise ImportProblem([f"{name}: line {number}: expected a JSON object with named fields"])


def _text(row: dict, field: str) -> str:
    value = row.get(field)
    if value is None:
        raise _RowError(field, "missing")
    if not isinstance(value, str):
        raise _RowError(field, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise _RowError(field, "empty")
    return value


def _maybe_json_list(value: Any) -> Any:
    """CSV cells hold message lists as JSON text."""
    if isinstance(value, str) and value.lstrip().startswith("[{"):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        return decoded
    return value


def _messages(value: Any, field: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise _RowError(field, "expected a non-empty list of {role, content} messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise _RowError(field, f"message {i + 1} must be an object with 'role' and 'content'")
        if message["role"] not in ROLES:
            raise _RowError(field, f"message {i + 1} has role {message['role']!r}: expected system, user or assistant")
        if not isinstance(message["content"], str):
            raise _RowError(field, f"message {i + 1} content must be text")
        out.append({"role": message["role"], "content": message["content"]})
    return out


def prompt_row(line: int, value: Any, field: str = "prompt") -> PromptRow:
    """A prompt from text or a chat (which must end with a user turn)."""
    value = _maybe_json_list(value)
    if isinstance(value, list):
        messages = _messages(value, field)
        if messages[-1]["role"] != "user":
            raise _RowError(field, "a chat prompt must end with a user message")
        return PromptRow(line, messages[-1]["content"], messages)
    if value is None:
        raise _RowError(field, "missing")
    if not isinstance(value, str):
        raise _RowError(field, f"expected text or a list of messages, got {type(value).__name__}")
    if not value.strip():
        raise _RowError(field, "empty")
    return PromptRow(line, value, None)


def _response(value: Any, field: str) -> str:
    """A response: text, or a message list ending with the assistant's turn (TRL conversational)."""
    value = _maybe_json_list(value)
    if isinstance(value, list):
        messages = _messages(value, field)
        if messages[-1]["role"] != "assistant":
            raise _RowError(field, "a conversational response must end with an assistant message")
        return messages[-1]["content"]
    return _text({field: value}, field)


_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def hh_split(transcript: str, field: str) -> tuple[list[dict], str]:
    """An HH-RLHF transcript split at its last assistant turn: (the chat before it, the assistant's answer)."""
    parts = _HH_TURN.split(transcript)
    if len(parts) < 3 or parts[0].strip():
        raise _RowError(field, "expected a transcript of '\\n\\nHuman: ...\\n\\nAssistant: ...' turns")
    turns = [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]
    if turns[-1][0] != "Assistant" or len(turns) < 2:
        raise _RowError(field, "the transcript must end with an Assistant turn after a Human turn")
    messages = [{"role": "user" if who == "Human" else "assistant", "content": text.strip()} for who, text in turns[:-1]]
    if messages[-1]["role"] != "user":
        raise _RowError(field, "the last Assistant turn must answer a Human turn")
    return messages, turns[-1][1].strip()


def _pair_row(line: int, row: dict) -> PairRow:
    return PairRow(line, prompt_row(line, row.get("prompt")), _text(row, "response_a"), _text(row, "response_b"))


def detect_format(row: dict) -> str:
    """Which preference format a row is in, from its fields."""
    if "score_chosen" in row or "score_rejected" in row:
        return "ultrafeedback"
    if "prompt" in row:
        return "trl"
    chosen = _maybe_json_list(row.get("chosen"))
    if isinstance(chosen, str) and "Assistant:" in chosen:
        return "hh"
    if isinstance(chosen, list):
        return "trl"
    raise _RowError("chosen", "cannot tell the format (expected TRL, HH-RLHF or UltraFeedback fields); pass --format")


def _chat_prompt(messages: list[dict]) -> PromptRow:
    return PromptRow(0, messages[-1]["content"], messages)


def _preference_row(line: int, row: dict, fmt: str) -> PreferenceRow:
    if fmt == "auto":
        fmt = detect_format(row)
    if fmt == "hh":
        chat, chosen = hh_split(_text(row, "chosen"), "chosen")
        chat_r, rejected = hh_split(_text(row, "rejected"), "rejected")
        if chat != chat_r:
            raise _RowError("rejected", "the dialogue before the last Assistant turn differs from the one in 'chosen'")
        if not chosen:
            raise _RowError("chosen", "the last Assistant turn is empty")
        if not rejected:
            raise _RowError("rejected", "the last Assistant turn is empty")
        prompt = PromptRow(line, chat[-1]["content"], chat) if len(chat) > 1 else PromptRow(line, chat[0]["content"], None)
        return PreferenceRow(line, prompt, chosen, rejected)
    if fmt == "ultrafeedback":
        chosen, rejected = _response(row.get("chosen"), "chosen"), _response(row.get("rejected"), "rejected")
        chosen_list = _maybe_json_list(row.get("chosen"))
        if isinstance(chosen_list, list) and len(chosen_list) > 1:
            prompt = _chat_prompt(_messages(chosen_list, "chosen")[:-1])
            if prompt.messages[-1]["role"] != "user":
                raise _RowError("chosen", "the messages before the answer must end with a user turn")
            if len(prompt.messages) == 1:
                prompt = PromptRow(line, prompt.text, None)
        else:
            prompt = prompt_row(line, row.get("prompt"))
        scores = []
        for field in ("score_chosen", "score_rejected"):
            value = row.get(field)
            try:
                scores.append(float(value) if value not in (None, "") else None)
            except (TypeError, ValueError):
                raise _RowError(field, f"expected a number, got {value!r}") from None
        tie = scores[0] is not None and scores[0] == scores[1]
        return PreferenceRow(line, PromptRow(line, prompt.text, prompt.messages), chosen, rejected, is_tie=tie)
    if fmt != "trl":
        raise _RowError("format", f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    chosen, rejected = _response(row.get("chosen"), "chosen"), _response(row.get("rejected"), "rejected")
    if row.get("prompt") is not None:
        prompt = prompt_row(line, row.get("prompt"))
    else:  # implicit prompt: both conversations share everything before the last assistant turn
        chosen_chat = _messages(_maybe_json_list(row.get("chosen")), "chosen")[:-1]
        rejected_chat = _messages(_maybe_json_list(row.get("rejected")), "rejected")[:-1]
        if not chosen_chat:
            raise _RowError("prompt", "missing (and 'chosen' holds no conversation before its answer)")
        if chosen_chat != rejected_chat:
            raise _RowError("rejected", "the conversation before the last answer differs from the one in 'chosen'")
        prompt = prompt_row(line, chosen_chat, "chosen")
    prob = row.get("preference_prob")
    if prob not in (None, ""):
        try:
            prob = float(prob)
        except (TypeError, ValueError):
            raise _RowError("preference_prob", f"expected a number between 0.5 and 1, got {prob!r}") from None
        if not 0.5 <= prob <= 1.0:
            raise _RowError("preference_prob", f"expected a number between 0.5 and 1, got {prob}")
    else:
        prob = None
    return PreferenceRow(line, prompt, chosen, rejected, preference_prob=prob)


def _check_all(rows: list[tuple[int, dict]], name: str, parse) -> list:
    """Parse every row; collect every problem before giving up, so one run names them all."""
    out, problems = [], []
    for line, row in rows:
        try:
            out.append(parse(line, row))
        except _RowError as err:
            problems.append(f"{name}: line {line}: field '{err.field}': {err.message}")
    if problems:
        raise ImportProblem(problems)
    if not out:
        raise ImportProblem([f"{name}: no rows"])
    return out


def read_prompts(path: Path | str, name: str | None = None) -> list[PromptRow]:
    name = name or Path(path).name
    return _check_all(read_rows(path, name), name, lambda line, row: prompt_row(line, row.get("prompt")))


def read_pairs(path: Path | str, name: str | None = None) -> list[PairRow]:
    name = name or Path(path).name
    return _check_all(read_rows(path, name), name, _pair_row)


def read_preferences(path: Path | str, fmt: str = "auto", name: str | None = None) -> list[PreferenceRow]:
    if fmt not in FORMATS:
        raise ImportProblem([f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}"])
    name = name or Path(path).name
    return _check_all(read_rows(path, name), name, lambda line, row: _preference_row(line, row, fmt))
