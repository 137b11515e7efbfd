"""A stand-in for the `vllm` package, version 0.33.0, for machines without a GPU: the names, argument names and
checks of the released wheel's source (vllm/sampling_params.py, entrypoints/llm.py, lora/request.py,
lora/peft_helper.py, config/lora.py, config/model.py, outputs.py, v1/core/sched/utils.py), re-stated here in our
words, so that the CPU tests fail where vLLM would refuse a call.

Greedy requests are answered by the checkpoint itself (transformers, in the dtype the engine would pick), so the
canary can be tested for real; sampled requests follow a script (`FakeLLM.script`), so finish reasons and stop
tokens can be chosen. Engines can be told to serve stale or garbled weights (`FakeLLM.faults`).
"""
from __future__ import annotations

import itertools
import json
import math
import sys
import types
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

# ---- vllm.exceptions ---------------------------------------------------------------------------------------------


class VLLMValidationError(Exception):
    """vLLM's request validation error (a VLLMClientError, not a ValueError)."""

    def __init__(self, message: str, *, parameter: str | None = None, value=None):
        super().__init__(message)
        self.parameter, self.value = parameter, value


# ---- vllm.sampling_params ----------------------------------------------------------------------------------------

SAMPLING_EPS = 1e-5  # below this temperature vLLM samples greedily
MIN_TEMPERATURE = 1e-2  # a temperature in (0, this) is raised to this, with a warning
MAX_N_SEQUENCES = 16384  # VLLM_MAX_N_SEQUENCES's default

SAMPLING_FIELDS = {  # the SamplingParams fields a caller may set, with their defaults (the ones we may ever touch)
    "n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0, "temperature": 1.0,
    "top_p": 1.0, "top_k": 0, "min_p": 0.0, "seed": None, "stop": None, "stop_token_ids": None, "ignore_eos": False,
    "max_tokens": 16, "min_tokens": 0, "logprobs": None, "prompt_logprobs": None, "flat_logprobs": False,
    "detokenize": True, "skip_special_tokens": True, "spaces_between_special_tokens": True,
    "include_stop_str_in_output": False, "logit_bias": None, "allowed_token_ids": None, "bad_words": None,
}


class SamplingParams:
    """Keyword arguments only (vLLM's msgspec struct also takes them by position; we never do)."""

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(SAMPLING_FIELDS)
        if unknown:
            raise TypeError(f"Unexpected keyword argument {sorted(unknown)[0]!r}")
        for name, default in SAMPLING_FIELDS.items():
            setattr(self, name, kwargs.get(name, default))
        self._post_init()

    def _post_init(self) -> None:
        if 0 < self.temperature < MIN_TEMPERATURE:
            self.temperature = MIN_TEMPERATURE
        if self.seed == -1:
            self.seed = None
        self.stop = [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)
        self.stop_token_ids = list(dict.fromkeys(self.stop_token_ids or []))
        if self.logprobs is True:
            self.logprobs = 1
        self._verify_args()
        if self.temperature < SAMPLING_EPS:
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0
            if self.n > 1:
                raise VLLMValidationError(f"n must be 1 when using greedy sampling, got {self.n}.")

    def _verify_args(self) -> None:
        def refuse(message: str, parameter: str | None = None) -> None:
            raise VLLMValidationError(message, parameter=parameter, value=getattr(self, parameter or "n", None))

        if not isinstance(self.n, int):
            refuse(f"n must be an int, but is of type {type(self.n)}")
        if not 1 <= self.n <= MAX_N_SEQUENCES:
            refuse(f"n must be at least 1 and at most {MAX_N_SEQUENCES}, got {self.n}.")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                refuse(f"{name} must be in [-2, 2], got {getattr(self, name)}.")
        if not math.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0:
            refuse(f"repetition_penalty must be a finite number greater than zero, got {self.repetition_penalty}.")
        if not math.isfinite(self.temperature):
            refuse(f"temperature must be a finite number, got {self.temperature}.", "temperature")
        if not 0.0 <= self.temperature <= 2.0:
            refuse(f"temperature must be in [0, 2], got {self.temperature}.", "temperature")
        if not 0.0 < self.top_p <= 1.0:
            refuse(f"top_p must be in (0, 1], got {self.top_p}.", "top_p")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            refuse(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if not 0.0 <= self.min_p <= 1.0:
            refuse(f"min_p must be in [0, 1], got {self.min_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            refuse(f"max_tokens must be at least 1, got {self.max_tokens}.", "max_tokens")
        if self.min_tokens < 0 or (self.max_tokens is not None and self.min_tokens > self.max_tokens):
            refuse(f"min_tokens must be in [0, max_tokens], got {self.min_tokens}.")
        if self.logprobs is not None and self.logprobs != -1 and self.logprobs < 0:
            refuse(f"logprobs must be non-negative or -1, got {self.logprobs}.", "logprobs")
        if not all(isinstance(t, int) for t in self.stop_token_ids):
            refuse(f"stop_token_ids must contain only integers, got {self.stop_token_ids}.")
        if any(not s for s in self.stop):
            refuse("stop cannot contain an empty string.")


# ---- vllm.lora.request ---------------------------------------------------------------------------------------------


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""
    base_model_name: str | None = None
    load_inplace: bool = False

    def __post_init__(self):
        if self.lora_int_id < 1:
            raise ValueError(f"id must be > 0, got {self.lora_int_id}")
        assert self.lora_path, "lora_path cannot be empty"


# ---- vllm.logprobs, vllm.outputs ---------------------------------------------------------------------------------


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    lora_request: LoRARequest | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: None
    outputs: list[CompletionOutput]
    finished: bool
    lora_request: LoRARequest | None = None


# ---- vllm.LLM ------------------------------------------------------------------------------------------------------

MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # config/lora.py: MaxLoRARanks
ENGINE_ARGS = {  # EngineArgs fields we may pass through LLM(**kwargs), with their defaults
    "max_model_len": None, "enable_lora": False, "max_loras": 1, "max_lora_rank": 16, "max_logprobs": 20,
    "logprobs_mode": "raw_logprobs", "generation_config": "auto", "disable_log_stats": True,
}


def _derived_max_model_len(model: str) -> int:
    config = json.loads((Path(model) / "config.json").read_text())
    derived = config.get("max_position_embeddings", float("inf"))
    tokenizer_config = Path(model) / "tokenizer_config.json"
    if tokenizer_config.exists():
        derived = min(derived, json.loads(tokenizer_config.read_text()).get("model_max_length", derived))
    return 2048 if derived == float("inf") else int(derived)


def _stop_ids(model: str) -> tuple[int | None, set[int]]:
    """(the tokenizer's EOS, every id that stops a request): the EOS plus generation_config's eos_token_id."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    eos = AutoTokenizer.from_pretrained(model).eos_token_id
    try:
        gen = GenerationConfig.from_pretrained(model)
    except OSError:
        gen = GenerationConfig.from_model_config(AutoConfig.from_pretrained(model))
    extra = gen.eos_token_id
    extra = set() if extra is None else {extra} if isinstance(extra, int) else set(extra)
    return eos, extra | ({eos} if eos is not None else set())


@dataclass
class Scripted:
    """What the script answers for one sampled completion: its tokens (cut at the first stop id or max_tokens), or
    an engine-side ending ("abort", "error") after those tokens."""

    token_ids: list[int]
    finish_reason: str | None = None
    logprob: float = -0.5


def default_script(prompt_index: int, sample_index: int, params: SamplingParams) -> Scripted:
    return Scripted([5, 6, 2] if sample_index % 2 == 0 else [5, 6, 7, 8, 9, 10, 11, 12])


class FakeLLM:
    """vllm.LLM: construct with a checkpoint path and engine arguments; `generate` answers TokensPrompts."""

    instances: list[FakeLLM] = []  # every engine started since reset(), in order
    script = staticmethod(default_script)
    faults: list[str] = []  # consumed one per engine start: "stale" (serves the previous engine's weights), "garbled"

    def __init__(self, model: str, *, tokenizer: str | None = None, tensor_parallel_size: int = 1,
                 dtype: str = "auto", seed: int = 0, gpu_memory_utilization: float = 0.92, enforce_eager: bool = False,
                 **kwargs):
        unknown = set(kwargs) - set(ENGINE_ARGS)
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument {sorted(unknown)[0]!r}")
        args = dict(ENGINE_ARGS, **kwargs)
        if args["max_lora_rank"] not in MAX_LORA_RANKS:
            raise ValueError(f"max_lora_rank: Input should be {', '.join(map(str, MAX_LORA_RANKS))} "
                             f"[input_value={args['max_lora_rank']}]")
        if args["max_loras"] < 1:
            raise ValueError("max_loras: Input should be greater than or equal to 1")
        derived = _derived_max_model_len(model)
        max_len = args["max_model_len"]
        if max_len is None or max_len == -1:
            max_len = derived
        elif max_len > derived:
            raise ValueError(f"User-specified max_model_len ({max_len}) is greater than the derived max_model_len "
                             f"(max_position_embeddings={derived} or model_max_length=None in model's config.json).")
        self.model, self.tokenizer_path, self.args, self.seed = model, tokenizer or model, args, seed
        self.engine_kwargs = dict(kwargs, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                                  gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager)
        self.model_config = types.SimpleNamespace(max_model_len=max_len, dtype=self._resolve_dtype(model, dtype))
        self.llm_engine = FakeEngine(self)
        self.request_counter = itertools.count()
        self.eos_token_id, self.stop_ids = _stop_ids(self.tokenizer_path)
        self.fault = FakeLLM.faults.pop(0) if FakeLLM.faults else None
        # a stale engine still serves what the engine before it served (a reload that did not take)
        self.weights = FakeLLM.instances[-1].weights if self.fault == "stale" and FakeLLM.instances else model
        self.alive = True
        self.calls: list = []
        self._models: dict = {}
        FakeLLM.instances.append(self)

    @staticmethod
    def _resolve_dtype(model: str, dtype) -> torch.dtype:
        names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                 "half": torch.float16, "float": torch.float32}
        if dtype != "auto":
            return names[dtype]
        stored = json.loads((Path(model) / "config.json").read_text()).get("dtype") or json.loads(
            (Path(model) / "config.json").read_text()).get("torch_dtype", "float32")
        resolved = names.get(stored, torch.float32)
        return torch.bfloat16 if resolved == torch.float32 else resolved  # vLLM downcasts fp32 checkpoints on CUDA

    def _shutdown(self, timeout: float | None = None) -> None:
        self.alive = False
        self._models.clear()

    @classmethod
    def reset(cls) -> None:
        cls.instances, cls.faults = [], []
        cls.script = staticmethod(default_script)

    # -- the weights this engine serves (for greedy answers) --

    def _weights(self, lora: LoRARequest | None):
        key = lora.lora_int_id if lora else 0
        if key not in self._models:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(self.weights, dtype=self.model_config.dtype).eval()
            if lora is not None and self.fault != "stale":
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, lora.lora_path).merge_and_unload()
            if self.fault == "garbled":
                gen = torch.Generator().manual_seed(0)
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(torch.randn(p.shape, generator=gen).to(p.dtype) * 0.5)
            self._models[key] = model
        return self._models[key]

    def _check_lora(self, lora: LoRARequest) -> None:
        if not self.args["enable_lora"]:
            raise ValueError(f"LoRA is not enabled! (request {lora.lora_name!r})")
        config = json.loads((Path(lora.lora_path) / "adapter_config.json").read_text())
        rank = max([config["r"], *(config.get("rank_pattern") or {}).values()])
        if rank > self.args["max_lora_rank"]:
            raise ValueError(f"LoRA rank {rank} is greater than max_lora_rank {self.args['max_lora_rank']}.")

    # -- LLM.generate --

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None,
                 tokenization_kwargs=None, mm_processor_kwargs=None) -> list[RequestOutput]:
        """Enqueues the requests and steps the engine until they have all finished (entrypoints/common/offline.py,
        `_run_engine`), sorted by request id."""
        self.enqueue(prompts, sampling_params, lora_request=lora_request, priority=priority, use_tqdm=use_tqdm,
                     tokenization_kwargs=tokenization_kwargs, mm_processor_kwargs=mm_processor_kwargs)
        outputs = []
        while self.llm_engine.has_unfinished_requests():
            outputs += [out for out in self.llm_engine.step() if out.finished]
        return sorted(outputs, key=lambda out: int(out.request_id))

    def enqueue(self, prompts, sampling_params=None, lora_request=None, priority=None, use_tqdm=True,
                tokenization_kwargs=None, mm_processor_kwargs=None) -> list[str]:
        """Checks and adds one request per prompt; returns their internal ids (the counter's id, a dash and 8
        random characters: v1/engine/input_processor.py `assign_request_id`). Nothing is added when a check fails."""
        assert self.alive, "enqueue() on an engine that was shut down"
        prompts = [prompts] if isinstance(prompts, dict) else list(prompts)
        params = sampling_params if sampling_params is not None else SamplingParams()
        if isinstance(params, list | tuple):
            if len(params) != len(prompts):
                raise VLLMValidationError(f"The lengths of prompts ({len(prompts)}) and params ({len(params)}) "
                                          "must be the same.")
        else:
            params = [params] * len(prompts)
        if lora_request is not None:
            self._check_lora(lora_request)
        self.calls.append((prompts, params, lora_request))
        outs = []
        for i, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
            ids = list(prompt["prompt_token_ids"])
            if len(ids) >= self.model_config.max_model_len:
                raise VLLMValidationError(f"The decoder prompt (length {len(ids)}) is longer than the maximum model "
                                          f"length of {self.model_config.max_model_len}.")
            room = min(p.max_tokens or self.model_config.max_model_len, self.model_config.max_model_len - len(ids))
            if p.temperature < SAMPLING_EPS:
                completions = [self._greedy(ids, p, room, lora_request)]
            else:
                completions = [self._scripted(i, j, p, room) for j in range(p.n)]
            outs.append((ids, completions))
        added = []
        for ids, completions in outs:
            external = str(next(self.request_counter))
            internal = f"{external}-{uuid.uuid4().hex[:8]}"
            self.llm_engine.pending.append(
                (internal, RequestOutput(external, None, ids, None, completions, True, lora_request)))
            added.append(internal)
        return added

    def _ending(self, token_ids: list[int], room: int, p: SamplingParams) -> tuple[list[int], str, int | None]:
        """vLLM's check_stop: the primary EOS or a generation_config EOS stops ("stop"), else max tokens ("length")."""
        for k, token in enumerate(token_ids[:room]):
            if not p.ignore_eos and token in self.stop_ids:
                return token_ids[:k + 1], "stop", None if token == self.eos_token_id else token
        return token_ids[:room], "length", None

    def _scripted(self, prompt_index: int, j: int, p: SamplingParams, room: int) -> CompletionOutput:
        answer = FakeLLM.script(prompt_index, j, p)
        token_ids, reason, stop_reason = self._ending(list(answer.token_ids), room, p)
        if answer.finish_reason is not None:
            reason, stop_reason = answer.finish_reason, None
        logprobs = None if p.logprobs is None else [{t: Logprob(answer.logprob, 1)} for t in token_ids]
        cumulative = None if p.logprobs is None else answer.logprob * len(token_ids)
        return CompletionOutput(j, "", token_ids, cumulative, logprobs, reason, stop_reason)

    def _greedy(self, ids: list[int], p: SamplingParams, room: int, lora) -> CompletionOutput:
        model = self._weights(lora)
        tokens: list[int] = []
        logps: list[float] = []
        with torch.inference_mode():
            while len(tokens) < room:
                row = model(torch.tensor([ids + tokens])).logits[0, -1].float().log_softmax(-1)
                token = int(row.argmax())
                tokens.append(token)
                logps.append(float(row[token]))
                if token in self.stop_ids:
                    break
        tokens, reason, stop_reason = self._ending(tokens, room, p)
        logprobs = None if p.logprobs is None else [{t: Logprob(lp, 1)} for t, lp in zip(tokens, logps, strict=False)]
        return CompletionOutput(0, "", tokens, sum(logps[:len(tokens)]) if p.logprobs is not None else None,
                                logprobs, reason, stop_reason)


class FakeEngine:
    """LLM.llm_engine (v1/engine/llm_engine.py LLMEngine): the requests `enqueue` added finish `per_step` at a time,
    the last added first (vLLM reports requests as they end, in any order); `abort_request` removes them by internal
    id. `before_step`, when set, is called before each step (a test's way to act mid-generation)."""

    per_step = 1
    before_step = None

    def __init__(self, llm: FakeLLM):
        self.model_config = llm.model_config
        self.engine_core = types.SimpleNamespace(shutdown=llm._shutdown)
        self.pending: list[tuple[str, RequestOutput]] = []
        self.steps = 0
        self.aborted: list[str] = []

    def has_unfinished_requests(self) -> bool:
        return bool(self.pending)

    def step(self) -> list[RequestOutput]:
        if FakeEngine.before_step is not None:
            FakeEngine.before_step(self)
        self.steps += 1
        done = self.pending[-FakeEngine.per_step:]
        del self.pending[-FakeEngine.per_step:]
        return [out for _, out in reversed(done)]

    def abort_request(self, request_ids: list[str], internal: bool = False) -> None:
        assert internal, "the backend aborts by the internal ids enqueue returned"
        self.aborted += [rid for rid, _ in self.pending if rid in request_ids]
        self.pending = [(rid, out) for rid, out in self.pending if rid not in request_ids]


def install(monkeypatch) -> type[FakeLLM]:
    """Put the fake `vllm` package (vllm, vllm.exceptions, vllm.lora.request) in sys.modules for one test."""
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams, vllm.__version__ = FakeLLM, SamplingParams, "0.33.0"
    exceptions = types.ModuleType("vllm.exceptions")
    exceptions.VLLMValidationError = VLLMValidationError
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    for name, module in {"vllm": vllm, "vllm.exceptions": exceptions, "vllm.lora": lora,
                         "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.reset()
    monkeypatch.setattr(FakeEngine, "per_step", 1)
    monkeypatch.setattr(FakeEngine, "before_step", None)
    return FakeLLM
