"""LLM-as-judge: a causal LM is asked which of two answers is better, once in each order, to cancel position bias.

The judge reads the next-token probabilities of "A" and "B" after the question (no sampling, so it is
deterministic); when the two orders disagree the verdict is a tie. Load it over a checkpoint folder with
"judges.llm:LLMJudge?model_dir=/path" or over a registered version with "judges.llm:for_version?name=base" (the
name URL-encoded, as any argument: "name=sft%2Bdpo" for "sft+dpo"). It runs in the dtype it is given ("auto": the
machine's fastest); the product passes PREFLOOP_DTYPE's.
"""
from __future__ import annotations

import math
from pathlib import Path

from prefcore.chat import prompt_token_ids
from prefcore.hardware import DTYPE_CHOICES, resolve_dtype

from . import TIE, A, B

QUESTION = (
    "You are judging two answers to the same request. Which answer is more helpful, correct and clear?\n\n"
    "Request:\n{prompt}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}\n\n"
    "Reply with a single letter: A or B."
)
MAX_ANSWER_CHARS = 2000  # keeps the judge's context short; both orders see the same truncation


class LLMJudge:
    """A judge over a model folder (a full checkpoint, or a LoRA adapter on `base_dir`); the model loads on first use."""

    def __init__(self, model_dir: str, base_dir: str = "", margin: float = 0.0, dtype: str = "auto"):
        self.model_dir, self.base_dir, self.margin, self.dtype = str(model_dir), str(base_dir), float(margin), dtype
        # both orders must clear 0.5 by the margin: a negative one let a model leaning to whichever answer it read
        # first answer "a" every time (the position bias asking both orders cancels), 0.5 or more made every verdict
        # a tie
        if not 0.0 <= self.margin < 0.5:
            raise ValueError(f"margin must be at least 0 and below 0.5, got {margin!r}")
        if dtype not in DTYPE_CHOICES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")
        if not (Path(self.model_dir) / "config.json").exists() and not (Path(self.model_dir) / "adapter_config.json").exists():
            raise ValueError(f"{self.model_dir} holds no checkpoint (no config.json or adapter_config.json)")
        # Both are local folders: a name that is not one would be looked up on a model hub, which PrefLoop never uses.
        if self.base_dir and not (Path(self.base_dir) / "config.json").exists():
            raise ValueError(f"base_dir {self.base_dir} holds no full checkpoint (no config.json)")
        if not self.base_dir and not (Path(self.model_dir) / "config.json").exists():
            raise ValueError(f"{self.model_dir} holds a LoRA adapter: give the folder of its base model as base_dir")
        self._model = self._tokenizer = None

    def __repr__(self) -> str:
        return f"LLMJudge({self.model_dir!r})"

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer


        device = "cuda" if torch.cuda.is_available() else "cpu"
        source = self.base_dir or self.model_dir
        model = AutoModelForCausalLM.from_pretrained(source, dtype=resolve_dtype(self.dtype, device))
        if self.base_dir:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.model_dir)
        self._model = model.to(device).eval()
        has_tokenizer = (Path(self.model_dir) / "tokenizer_config.json").exists()
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir if has_tokenizer else source)
        self._letters = [self._letter_id("A"), self._letter_id("B")]
        self._device = device

    def _letter_id(self, letter: str) -> int:
        ids = self._tokenizer(letter, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"the judge's tokenizer has no token for {letter!r}")
        return ids[0]

    def first_is_better(self, prompt: str, first: str, second: str) -> float:
        """P("A") / (P("A") + P("B")) for the next token after the question: the first answer being better."""
        import torch


        if self._model is None:
            self._load()
        question = QUESTION.format(prompt=prompt, first=first[:MAX_ANSWER_CHARS], second=second[:MAX_ANSWER_CHARS])
        tokens = prompt_token_ids(self._tokenizer, question)
        context = getattr(self._model.config, "max_position_embeddings", None)
        if context and len(tokens) > context:  # past it a model's verdict is noise, or an index error
            raise ValueError(f"the judge's question is {len(tokens)} tokens (the request and both answers, each cut "
                             f"to {MAX_ANSWER_CHARS} characters), over its model's context of {context}: shorten "
                             "the request, or judge with a model of a longer context")
        ids = torch.tensor([tokens], device=self._device)
        with torch.no_grad():
            logits = self._model(input_ids=ids).logits[0, -1].float()
        a, b = logits[self._letters[0]].item(), logits[self._letters[1]].item()
        return 1.0 / (1.0 + math.exp(b - a))

    def __call__(self, prompt: str, response_a: str, response_b: str) -> str:
        forward = self.first_is_better(prompt, response_a, response_b)
        backward = self.first_is_better(prompt, response_b, response_a)  # here "A" means response_b
        says_a_first = forward > 0.5 + self.margin
        says_b_first = forward < 0.5 - self.margin
        says_a_second = backward < 0.5 - self.margin
        says_b_second = backward > 0.5 + self.margin
        if says_a_first and says_a_second:
            return A
        if says_b_first and says_b_second:
            return B
        return TIE


def for_version(name: str, margin: float = 0.0, dtype: str | None = None) -> LLMJudge:
    """An LLM judge over the registered model version called `name` (this one call reads the Django database and
    settings: the dtype defaults to the product's, PREFLOOP_DTYPE)."""
    # the only Django in this module, imported on this call: LLMJudge itself runs without Django
    from generation.models import ModelVersion
    from prefloop.numerics import dtype_choice

    dtype = dtype or dtype_choice()
    version = ModelVersion.objects.filter(name=name).select_related("base").first()
    if version is None:
        raise ValueError(f"no model version named {name!r}")
    if version.kind == ModelVersion.LORA:
        if version.base is None:  # as the sampling backends say it (generation.backends.backend_for)
            raise ValueError(f"version {name!r} is a LoRA adapter without the full checkpoint it applies to: set its "
                             "base in the admin")
        return LLMJudge(version.path, base_dir=version.base.path, margin=margin, dtype=dtype)
    return LLMJudge(version.path, margin=margin, dtype=dtype)
