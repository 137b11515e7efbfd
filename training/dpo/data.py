"""Preference pairs: the dataclass the trainer takes, loading TRL-format JSONL, and tokenizing with truncation.

Prompts go through the one chat template (prefloop.chat) once per pair, so chosen and rejected share exactly the
same prompt token ids; each response is its text's tokens plus exactly one EOS.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from prefloop.chat import prompt_token_ids, response_token_ids, to_messages

HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


@dataclass
class PreferencePair:
    prompt: str | list[dict]  # text or chat messages
    chosen: str
    rejected: str
    preference_prob: float | None = None  # soft label; None = hard (1 - label_smoothing)
    ref_chosen_logp: float | None = None  # cached reference log-probs; when both given they are NOT recomputed
    ref_rejected_logp: float | None = None
    key: object = None  # caller's id, untouched

    @property
    def has_reference(self) -> bool:
        return self.ref_chosen_logp is not None and self.ref_rejected_logp is not None


@dataclass
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool

    @property
    def length(self) -> int:
        """Tokens in its `[prompt | chosen | rejected]` training row."""
        return len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)

    def row(self) -> tuple[list[int], list[int], list[int]]:
        return self.prompt_ids, self.chosen_ids, self.rejected_ids


def hh_messages(dialogue: str) -> list[dict]:
    """An HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") as chat messages."""
    parts = _HH_TURN.split(dialogue)
    messages = []
    for speaker, text in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": text.strip()})
    if not messages:
        raise ValueError("no '\\n\\nHuman:' turn found")
    return messages


def split_hh(chosen: str, rejected: str) -> tuple[list[dict], str, str]:
    """Split two HH transcripts at their last assistant turn into (shared prompt messages, chosen, rejected)."""
    cut_c, cut_r = chosen.rfind(HH_ASSISTANT), rejected.rfind(HH_ASSISTANT)
    if cut_c < 0 or cut_r < 0:
        raise ValueError("no '\\n\\nAssistant:' turn found")
    if chosen[:cut_c] != rejected[:cut_r]:
        raise ValueError("chosen and rejected do not share the dialogue before the last assistant turn")
    prompt = hh_messages(chosen[:cut_c])
    return prompt, chosen[cut_c + len(HH_ASSISTANT) :].strip(), rejected[cut_r + len(HH_ASSISTANT) :].strip()


def _response_text(value, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) and "content" in value[0]:
        if value[0].get("role", "assistant") != "assistant":
            raise ValueError(f"field {field!r}: the response message must have role 'assistant'")
        return str(value[0]["content"])
    raise ValueError(f"field {field!r}: expected a string or one assistant message")


def pair_from_row(row: dict) -> PreferencePair:
    """One TRL-format row (explicit prompt, implicit conversational prompt, or HH transcripts) as a pair."""
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object")
    for field in ("chosen", "rejected"):
        if field not in row:
            raise ValueError(f"field {field!r} is missing")
    chosen, rejected = row["chosen"], row["rejected"]
    if "prompt" in row:
        prompt = row["prompt"]
        if isinstance(prompt, list):
            try:
                to_messages(prompt)
            except ValueError as exc:
                raise ValueError(f"field 'prompt': {exc}") from None
        elif not isinstance(prompt, str):
            raise ValueError("field 'prompt': expected a string or a list of messages")
        chosen, rejected = _response_text(chosen, "chosen"), _response_text(rejected, "rejected")
    elif isinstance(chosen, list) and isinstance(rejected, list):
        # TRL conversational with an implicit prompt: the shared messages before the last assistant turn
        if len(chosen) < 2 or chosen[:-1] != rejected[:-1]:
            raise ValueError("field 'chosen': without 'prompt', chosen and rejected must share all but the last message")
        prompt = chosen[:-1]
        chosen, rejected = _response_text(chosen[-1:], "chosen"), _response_text(rejected[-1:], "rejected")
    elif isinstance(chosen, str) and isinstance(rejected, str):
        try:
            prompt, chosen, rejected = split_hh(chosen, rejected)
        except ValueError as exc:
            raise ValueError(f"field 'prompt' is missing and the HH transcripts cannot be split: {exc}") from None
    else:
        raise ValueError("field 'chosen': expected a string or a list of messages, like 'rejected'")
    prob = row.get("preference_prob")
    if prob is not None and (isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob <= 1):
        raise ValueError(f"field 'preference_prob': expected a number in [0, 1], got {prob!r}")
    refs = []
    for field in ("ref_chosen_logp", "ref_rejected_logp"):
        value = row.get(field, row.get(field + "s"))
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"field {field!r}: expected a number, got {value!r}")
        refs.append(None if value is None else float(value))
    return PreferencePair(
        prompt=prompt, chosen=chosen, rejected=rejected,
        preference_prob=None if prob is None else float(prob),
        ref_chosen_logp=refs[0], ref_rejected_logp=refs[1], key=row.get("key", row.get("id")),
    )


def load_pairs_jsonl(path: str | Path) -> list[PreferencePair]:
    """Pairs from a JSONL file of TRL rows; a bad row is a ValueError naming the file, line and field."""
    path = Path(path)
    pairs = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            try:
                pairs.append(pair_from_row(row))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
    if not pairs:
        raise ValueError(f"{path}: no pairs found")
    return pairs


def truncate(prompt: list[int], chosen: list[int], rejected: list[int], max_length: int, max_prompt_length: int):
    """Fit prompt + each response into max_length: first keep the end of the prompt (max_prompt_length), then cut
    the ends of the responses. Returns (prompt, chosen, rejected, truncated)."""
    longest = max(len(chosen), len(rejected))
    cut = False
    if len(prompt) + longest > max_length and len(prompt) > max_prompt_length:
        prompt, cut = prompt[-max_prompt_length:], True
    room = max_length - len(prompt)
    if longest > room:
        chosen, rejected, cut = chosen[:room], rejected[:room], True
    return prompt, chosen, rejected, cut


def tokenize_pair(tokenizer, pair: PreferencePair, max_length: int, max_prompt_length: int) -> TokenizedPair:
    prompt = prompt_token_ids(tokenizer, pair.prompt)
    chosen = response_token_ids(tokenizer, pair.chosen)
    rejected = response_token_ids(tokenizer, pair.rejected)
    return TokenizedPair(*truncate(prompt, chosen, rejected, max_length, max_prompt_length))


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (little padding), batches in a seeded random order."""
    import random

    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def spin_pairs(prompts: list, human_responses: list[str], model_responses: list[str]) -> list[PreferencePair]:
    """SPIN data mode: the human-written response is chosen over the model's own sample for the same prompt."""
    if not len(prompts) == len(human_responses) == len(model_responses):
        raise ValueError("spin_pairs: prompts, human_responses and model_responses must have the same length")
    return [PreferencePair(prompt=p, chosen=h, rejected=m) for p, h, m in zip(prompts, human_responses, model_responses, strict=True)]
