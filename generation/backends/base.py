"""The sampling contract shared by every backend: settings in, K samples per prompt out, each with its log-prob.

`load_backend` picks vLLM where a CUDA GPU and the `vllm` package are present and the `hf` sampler otherwise.
"""
from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from prefcore.errors import SettingError

ProgressFn = Callable[[int, int], None]  # (samples finished, samples asked)
# (tokens of the budget used, token budget): the budget is samples x max_new_tokens, and a sample that ends early
# uses the rest of its share; called per decode step where the backend has steps, so a bar moves inside a batch.
TokensFn = Callable[[int, int], None]
StopFn = Callable[[], bool]  # asked per decode step (or per chunk): True stops with GenerationCancelled


class GenerationCancelled(Exception):
    """Raised by `Backend.generate` when its `should_stop` callback answered True."""


MAX_SAMPLES = 256  # per prompt
MAX_NEW_TOKENS = 32768
# Temperatures both backends sample alike: vLLM 0.33.0 refuses one above 2 and raises one in (0, 0.01) to 0.01, so
# the settings refuse both, for the hf backend too (a page gives the same answer whichever backend samples).
MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 2.0
# The largest seed a person gives a job (the forms, the API, the commands): a loop run keeps its seed in a
# PositiveIntegerField, 32-bit on PostgreSQL. (A SamplingConfig itself takes any seed below 2**63.)
MAX_SEED = 2**31 - 1


@dataclass
class SamplingConfig:
    """One set of sampling settings, used alike by the page, the command, the task and the backends."""

    n: int = 2  # samples per prompt (K)
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 128
    seed: int = 0
    batch_size: int = 128  # rows decoded at once, at most (the hf slot decoder takes fewer where its KV cache would
    # pass hf.KV_CACHE_BYTES)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise SettingError(name, f"sampling setting {name!r}: expected {expected}, got {getattr(self, name)!r}")

        for name in ("n", "max_new_tokens", "seed", "batch_size"):
            need(isinstance(getattr(self, name), int) and not isinstance(getattr(self, name), bool), name, "an integer")
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            need(isinstance(value, int | float) and not isinstance(value, bool), name, "a number")
        # Upper bounds a person would call sane: they keep a typo (a seed pasted into "samples") from queueing work
        # that never ends, and every number within what the database stores.
        need(1 <= self.n <= MAX_SAMPLES, "n", f"from 1 to {MAX_SAMPLES}")
        need(self.temperature == 0 or MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE, "temperature",
             f"0 (greedy) or a number from {MIN_TEMPERATURE} to {MAX_TEMPERATURE}")
        need(0 < self.top_p <= 1, "top_p", "a number in (0, 1]")
        need(1 <= self.max_new_tokens <= MAX_NEW_TOKENS, "max_new_tokens", f"from 1 to {MAX_NEW_TOKENS}")
        need(0 <= self.seed < 2**63, "seed", "a non-negative integer below 2**63")
        need(1 <= self.batch_size <= 4096, "batch_size", "from 1 to 4096")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SamplingConfig:
        """Settings from a dict (a form, a job's params); an unknown key or a bad value raises ValueError naming it."""
        if not isinstance(d, dict):
            raise ValueError(f"sampling settings must be a mapping, got {type(d).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key in d:
            if key not in known:
                raise SettingError(key, f"unknown sampling setting {key!r} (known: {', '.join(known)})")
        values = {}
        for key, value in d.items():
            if known[key].type in ("int", int) and isinstance(value, str):
                try:
                    value = int(value)
                except ValueError:
                    raise SettingError(key, f"sampling setting {key!r}: expected an integer, got {value!r}") from None
            elif known[key].type in ("float", float):
                if isinstance(value, str):
                    try:
                        value = float(value)
                    except ValueError:
                        raise SettingError(key, f"sampling setting {key!r}: expected a number, got {value!r}") from None
                elif isinstance(value, int) and not isinstance(value, bool):
                    try:
                        value = float(value)
                    except OverflowError:  # an int past 1e308: out of every range
                        raise SettingError(key, f"sampling setting {key!r}: expected a number in its range, got an integer "
                                         f"of {len(str(abs(value)))} digits") from None
            values[key] = value
        return cls(**values)


@dataclass
class Sample:
    """One sampled response."""

    text: str  # decoded without special tokens
    token_ids: list[int]  # sampled ids, including the final EOS when finish_reason == "stop"
    finish_reason: str  # "stop" or "length"
    logp_sum: float  # sum of log-probs of token_ids under the sampling model at temperature 1 (raw log-softmax)
    # what a backend adds: the hf backend gives "token_logps", each token's log-prob (summing to logp_sum)
    extra: dict = field(default_factory=dict, repr=False, compare=False)


class Backend(ABC):
    """A loaded model that samples; `generate` returns `config.n` samples per prompt, in prompt order."""

    name: str = "base"

    @abstractmethod
    def generate(
        self, prompts: list[str | list[dict]], config: SamplingConfig, *, seeds: list[int] | None = None,
        on_progress: ProgressFn | None = None, should_stop: StopFn | None = None, on_tokens: TokensFn | None = None,
    ) -> list[list[Sample]]: ...

    def close(self) -> None:  # noqa: B027  (optional for backends that hold nothing)
        """Free the model (and GPU memory); the backend is unusable afterwards."""

    # The model's context in tokens (None: unknown, nothing is refused) and a prompt's token ids, for unfit.
    context: int | None = None

    def prompt_ids(self, prompt) -> list[int]:
        raise NotImplementedError(f"the {self.name} backend does not say how a prompt tokenizes")

    def unfit(self, prompts: list, max_new_tokens: int) -> dict[int, str]:
        """The prompts (by their place in `prompts`) that leave no room for max_new_tokens in the model's context,
        each with why (context_refusal): `generate` refuses a batch holding one, so a job leaves them out first."""
        if not self.context:
            return {}
        return {i: why for i, prompt in enumerate(prompts)
                if (why := context_refusal(prompt, self.prompt_ids(prompt), max_new_tokens, self.context))}


def context_refusal(prompt, ids: list[int], max_new_tokens: int, context: int | None) -> str | None:
    """Why a prompt cannot be sampled, naming it by its text (its place in a batch, "prompt 0", told nobody which
    prompt to delete or shorten): it leaves no room for max_new_tokens in the model's context. None when it fits."""
    if not context or len(ids) + max_new_tokens <= context:
        return None
    text = " ".join(prompt.split()) if isinstance(prompt, str) else " ".join(
        str(m.get("content", "")) for m in prompt if isinstance(m, dict)).strip()
    shown = text if len(text) <= 60 else text[:59] + "…"
    return (f"the prompt {shown!r} is {len(ids)} tokens: with max_new_tokens {max_new_tokens} that exceeds the "
            f"model's context of {context} (shorten or remove the prompt, or sample fewer new tokens)")


def check_context(prompts: list, ids: list[list[int]], max_new_tokens: int, context: int | None) -> None:
    """Every prompt leaves room for max_new_tokens in the model's context, or a ValueError saying which does not."""
    for prompt, row in zip(prompts, ids, strict=True):
        if why := context_refusal(prompt, row, max_new_tokens, context):
            raise ValueError(why)


def check_seeds(prompts: list, seeds: list[int] | None) -> None:
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"seeds: expected one seed per prompt ({len(prompts)}), got {len(seeds)}")


def default_seed(config_seed: int, prompt_ids: list[int]) -> int:
    """The seed of a prompt when none is given: from the job's seed and the prompt itself, never its position,
    so a prompt gets the same samples wherever it sits in a batch."""
    digest = hashlib.sha256(f"{config_seed}:{','.join(map(str, prompt_ids))}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def sample_seed(prompt_seed: int, sample_index: int) -> int:
    """The seed of the j-th sample of a prompt (its random stream), independent of any other sample."""
    digest = hashlib.sha256(f"prefloop-sample:{prompt_seed}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def vllm_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def load_backend(
    model_path: str, *, kind: str = "auto", adapter_path: str | None = None, base_path: str | None = None,
    device: str | None = None, **engine_options,
) -> Backend:
    """A backend for a checkpoint (or a LoRA adapter over `base_path`/`model_path`).

    kind: "auto" (vLLM if CUDA and vllm are present, else hf), "vllm" or "hf". engine_options go to the backend
    (hf: dtype, engine; vllm: tensor_parallel_size, gpu_memory_utilization, adapter_name, ...); options meant for
    the other backend are ignored.
    """
    kind = (kind or "auto").lower()
    if kind not in ("auto", "hf", "vllm"):
        raise ValueError(f"backend kind must be 'auto', 'hf' or 'vllm', got {kind!r}")
    if kind == "auto":
        use_vllm = (device is None or str(device).startswith("cuda")) and cuda_available() and vllm_importable()
        kind = "vllm" if use_vllm else "hf"
    if kind == "vllm":
        from .vllm import VLLMBackend  # imported when chosen: the engines load torch (and vLLM); this module neither

        return VLLMBackend(model_path, adapter_path=adapter_path, base_path=base_path, **engine_options)
    from .hf import HFBackend  # imported when chosen, as above

    return HFBackend(model_path, adapter_path=adapter_path, base_path=base_path, device=device, **engine_options)
