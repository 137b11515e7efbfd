"""The vLLM backend (GPU): `LLM.generate` with per-request seeds and sampled-token log-probs, LoRA versions under a
new adapter name each, and a canary check after every load that restarts the engine when the answer is stale.

vLLM is imported lazily, so this module imports on machines without it. Its log-probs differ slightly from
transformers' (kernels, dtype): they are for display and diagnostics; the trainer computes its own.
"""
from __future__ import annotations

import gc
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

from prefloop.chat import prompt_token_ids

from .base import Backend, GenerationCancelled, Sample, SamplingConfig, check_seeds, default_seed

log = logging.getLogger(__name__)

CANARY_PROMPT = "List the first five prime numbers, separated by commas."
CANARY_TOKENS = 12  # a short greedy answer: long enough to tell weights apart, short enough to match bf16 numerics
_lora_ids = itertools.count(1)


class CanaryMismatch(RuntimeError):
    """The engine's greedy canary answer still differs from transformers' after a restart."""


@dataclass
class CanaryResult:
    ok: bool
    restarted: bool
    expected: list[str]
    got: list[str]


def _import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise ImportError("the vllm backend needs the `vllm` package (pip install -r requirements-gpu.txt)") from exc
    return vllm


def reference_canary(model_path: str, *, adapter_path: str | None = None, base_path: str | None = None,
                     prompts: list[str] | None = None, max_new_tokens: int = CANARY_TOKENS,
                     device: str | None = None) -> list[str]:
    """Transformers' greedy answers to the canary prompts: the texts a correctly loaded engine must reproduce."""
    import torch

    from .hf import load_model

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model(model_path, adapter_path=adapter_path, base_path=base_path, device=device,
                                  dtype=torch.float32)
    texts = []
    for prompt in prompts or [CANARY_PROMPT]:
        ids = prompt_token_ids(tokenizer, prompt)
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids], device=device), do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        texts.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True))
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return texts


def _same_answer(expected: str, got: str) -> bool:
    """Equal, or equal up to the point where one stops (fp32 vs bf16 may end a greedy answer a token apart)."""
    a, b = expected.strip(), got.strip()
    return a == b or (min(len(a), len(b)) >= 8 and (a.startswith(b) or b.startswith(a)))


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model_path: str, *, adapter_path: str | None = None, base_path: str | None = None,
                 adapter_name: str | None = None, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                 dtype: str = "auto", max_model_len: int | None = 4096, max_lora_rank: int = 64,
                 enforce_eager: bool = False, canary_prompt: str = CANARY_PROMPT, **ignored):
        self.vllm = _import_vllm()
        from transformers import AutoTokenizer

        self.base_path = str(base_path or model_path)
        self.engine_args = dict(
            tensor_parallel_size=int(tensor_parallel_size or 1), gpu_memory_utilization=float(gpu_memory_utilization),
            dtype=dtype, max_model_len=max_model_len, enforce_eager=enforce_eager,
        )
        self.max_lora_rank = max_lora_rank
        self.canary_prompt = canary_prompt
        self.tokenizer = AutoTokenizer.from_pretrained(self.base_path)
        self.eos_ids = {self.tokenizer.eos_token_id}
        self.llm = None
        self.lora_request = None
        self.enable_lora = adapter_path is not None
        self._start()
        if adapter_path is not None:
            self.set_adapter(adapter_path, adapter_name)

    # -- engine -----------------------------------------------------------------------------------------------

    def _start(self) -> None:
        args = {k: v for k, v in self.engine_args.items() if v is not None}
        if self.enable_lora:
            args.update(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=1)
        self.llm = self.vllm.LLM(model=self.base_path, tokenizer=self.base_path, seed=0, **args)

    def restart(self) -> None:
        """Throw the engine away and start a fresh one on the same weights (and adapter)."""
        self._shutdown()
        self._start()

    def _shutdown(self) -> None:
        if self.llm is None:
            return
        engine = getattr(self.llm, "llm_engine", None)
        for owner in (engine, getattr(engine, "engine_core", None)):
            fn = getattr(owner, "shutdown", None)
            if callable(fn):
                try:
                    fn()
                except Exception:  # an engine already half gone: dropping it is all that is left to do
                    log.debug("vllm engine shutdown failed", exc_info=True)
                break
        self.llm = None
        gc.collect()
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:  # older or newer vLLM without these: the engine process is gone already
            log.debug("vllm distributed teardown skipped", exc_info=True)
        try:
            import torch

            torch.cuda.empty_cache()
        except Exception:
            log.debug("empty_cache failed", exc_info=True)

    def set_adapter(self, adapter_path: str, adapter_name: str | None = None) -> None:
        """Serve a LoRA version: always under a new name and id (a reused name can serve the old adapter)."""
        if not (Path(adapter_path) / "adapter_config.json").exists():
            raise FileNotFoundError(f"{adapter_path}: no LoRA adapter here (adapter_config.json missing)")
        if not self.enable_lora:
            self.enable_lora = True
            self.restart()
        from vllm.lora.request import LoRARequest

        lora_id = next(_lora_ids)
        name = f"{adapter_name or Path(adapter_path).name}-{lora_id}"
        self.lora_request = LoRARequest(name, lora_id, str(adapter_path))

    def load_version(self, model_path: str, *, adapter_path: str | None = None, adapter_name: str | None = None,
                     reference_texts: list[str] | None = None) -> CanaryResult | None:
        """Switch to another version: a new adapter over the same base, or a new engine for a full checkpoint;
        with reference texts, check the canary (and restart once on a mismatch)."""
        if adapter_path is not None and str(model_path) == self.base_path:
            self.set_adapter(adapter_path, adapter_name)
        else:
            self._shutdown()
            self.base_path = str(model_path)
            self.enable_lora = adapter_path is not None
            self.lora_request = None
            self._start()
            if adapter_path is not None:
                self.set_adapter(adapter_path, adapter_name)
        return self.canary_check(reference_texts) if reference_texts is not None else None

    # -- canary -----------------------------------------------------------------------------------------------

    def canary_answers(self, n: int = 1, max_new_tokens: int = CANARY_TOKENS) -> list[str]:
        prompts = [self.canary_prompt] if n == 1 else [self.canary_prompt] * n
        params = self.vllm.SamplingParams(n=1, temperature=0.0, max_tokens=max_new_tokens)
        outs = self.llm.generate([{"prompt_token_ids": prompt_token_ids(self.tokenizer, p)} for p in prompts],
                                 params, lora_request=self.lora_request, use_tqdm=False)
        return [self.tokenizer.decode(o.outputs[0].token_ids, skip_special_tokens=True) for o in outs]

    def canary_check(self, reference_texts: list[str], *, restart: bool = True, strict: bool = False) -> CanaryResult:
        """Greedy-decode the canary prompt and compare with transformers' answer (`reference_canary`); on a
        mismatch restart the engine and try again. strict: raise CanaryMismatch if it still differs."""
        expected = list(reference_texts)
        got = self.canary_answers()
        if all(_same_answer(e, g) for e, g in zip(expected, got, strict=False)):
            return CanaryResult(True, False, expected, got)
        log.warning("vLLM canary mismatch (expected %r, got %r): restarting the engine", expected, got)
        if not restart:
            return CanaryResult(False, False, expected, got)
        self.restart()
        got = self.canary_answers()
        ok = all(_same_answer(e, g) for e, g in zip(expected, got, strict=False))
        if not ok and strict:
            raise CanaryMismatch(f"vLLM still answers {got!r} where transformers answers {expected!r}")
        return CanaryResult(ok, True, expected, got)

    # -- sampling ---------------------------------------------------------------------------------------------

    def generate(self, prompts, config: SamplingConfig, *, seeds=None, on_progress=None,
                 should_stop=None) -> list[list[Sample]]:
        check_seeds(prompts, seeds)
        if not prompts:
            return []
        ids = [prompt_token_ids(self.tokenizer, p) for p in prompts]
        seeds = seeds if seeds is not None else [default_seed(config.seed, row) for row in ids]
        results: list[list[Sample]] = []
        total = len(ids) * config.n
        step = max(256, config.batch_size)  # chunks for progress and cancel only; vLLM schedules inside each chunk
        for start in range(0, len(ids), step):
            if should_stop and should_stop():
                raise GenerationCancelled("generation stopped on request")
            chunk = range(start, min(start + step, len(ids)))
            params = [
                self.vllm.SamplingParams(n=config.n, temperature=config.temperature, top_p=config.top_p,
                                         max_tokens=config.max_new_tokens, seed=int(seeds[i]), logprobs=0)
                for i in chunk
            ]
            outs = self.llm.generate([{"prompt_token_ids": ids[i]} for i in chunk], params,
                                     lora_request=self.lora_request, use_tqdm=False)
            for out in outs:
                results.append([self._to_sample(c) for c in out.outputs])
            if on_progress:
                on_progress(min(len(results) * config.n, total), total)
        return results

    def _to_sample(self, completion) -> Sample:
        token_ids = list(completion.token_ids)
        logp = 0.0
        for token, entry in zip(token_ids, completion.logprobs or [], strict=False):
            logp += float(entry[token].logprob)
        if not completion.logprobs and completion.cumulative_logprob is not None:
            logp = float(completion.cumulative_logprob)
        stopped = completion.finish_reason == "stop"
        return Sample(
            text=self.tokenizer.decode(token_ids, skip_special_tokens=True), token_ids=token_ids,
            finish_reason="stop" if stopped else "length", logp_sum=logp,
        )

    def close(self) -> None:
        self._shutdown()
