"""The vLLM backend (GPU): requests with per-request seeds and sampled-token log-probs, stepped through the engine
(a Cancel is seen between steps, progress moves prompt by prompt), LoRA versions under a new adapter name each, and a
canary after every load that proves the engine serves the weights on disk.

Written against vLLM 0.33.0 as released (its wheel's source, call by call; see docs/deployment.md). vLLM is
imported lazily, so this module imports on machines without it.

What a sample records (the same contract as the `hf` backend):
- `token_ids` are the tokens as sampled. vLLM stops on the tokenizer's EOS and on every `eos_token_id` of the
  model's generation_config; when a sample stops on any of them, `finish_reason` is "stop" and the last token id is
  the one that stopped it. The DPO loss does not read these ids (a round's KL does: it is taken at the positions
  sampled, training.evaluation): it tokenizes the response text and appends the tokenizer's EOS (`prefcore.chat.response_token_ids`), so every response is normalised to one end-of-turn token
  whichever EOS id the sampler met.
- `logp_sum` is the sum of the sampled tokens' raw log-probs (log-softmax of the logits at temperature 1, vLLM's
  `logprobs_mode="raw_logprobs"`). They differ slightly from transformers' (kernels): for display and diagnostics;
  the trainer computes its own.
- Greedy sampling (temperature 0) with n > 1 asks vLLM for one answer and copies it n times, as the `hf` backend's
  greedy samples are identical by construction (vLLM refuses greedy with n > 1).
- A request that vLLM ends with "abort" or "error" raises `VLLMRequestFailed`; nothing is recorded as "length".

The canary (vllm #29341, #32718, trl #5312: stale or garbled weights served silently after a reload): after the
engine loads a version, it answers a few fixed prompts greedily (plain argmax: no sampling processors, no penalties
from generation_config) with the log-prob of each token. Transformers, loading the same weights from disk in the
engine's dtype, scores those exact answers by teacher forcing. Each engine token must be transformers' argmax (or
within `canary_tolerance` of it: a near-tie that the two kernels may break differently) and its log-prob must agree
within the same tolerance. On a mismatch the engine restarts once and is checked again; a second mismatch raises
`CanaryMismatch` naming the weights and the first differing token, so the job fails instead of sampling garbage.
"""
from __future__ import annotations

import copy
import gc
import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from prefcore.chat import prompt_token_ids

from .base import Backend, GenerationCancelled, Sample, SamplingConfig, check_context, check_seeds, default_seed

log = logging.getLogger(__name__)

# vllm/config/lora.py (0.33.0): `MaxLoRARanks`, the only values `max_lora_rank` accepts.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

CANARY_PROMPTS = (
    "List the first five prime numbers, separated by commas.",
    "What is the capital of France?",
    "Write one sentence about the sea.",
)
CANARY_TOKENS = 16
# Largest allowed difference, in nats per token, between the engine's and transformers' log-prob of a canary token
# (and between transformers' best token and the engine's choice). `bench/canary_tolerance.py` measured two kernels
# (transformers' eager and SDPA attention) on the same SmolLM2-135M weights, ~970 greedy tokens: at most 0.22 apart
# in bf16, 0.023 in fp16, under 1e-4 in fp32; noise of 0.01 on one MLP moved answers by 0.68, garbled weights by
# 20 and more. bf16's bound is about twice its figure; fp16's and fp32's are 0.1, above theirs because vLLM's
# kernels are not transformers' (and a GPU may run fp32 matrix products in TF32).
CANARY_TOLERANCE = {"float32": 0.1, "float16": 0.1, "bfloat16": 0.5}
_lora_ids = itertools.count(1)


class VLLMRequestFailed(RuntimeError):
    """vLLM ended a request with "abort" or "error" (or a reason this backend does not know)."""


class CanaryMismatch(RuntimeError):
    """The engine's canary answers still disagree with the weights on disk after a restart."""


@dataclass
class CanaryResult:
    ok: bool
    restarted: bool
    answers: list[list[int]]  # the engine's greedy token ids, one list per canary prompt
    first_difference: str | None = None  # the first token that failed, in words
    worst: float = 0.0  # the largest log-prob difference seen (nats)
    texts: list[str] = field(default_factory=list)


def _import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise ImportError("the vllm backend needs the `vllm` package (pip install -r requirements-gpu.txt)") from exc
    return vllm


# ---- pure pieces (tested on plain data) --------------------------------------------------------------------------


def adapter_rank(adapter_path: str | Path) -> int:
    """The largest LoRA rank in an adapter: `r`, or a larger one in `rank_pattern` (vLLM checks the same)."""
    config_path = Path(adapter_path) / "adapter_config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{adapter_path}: no LoRA adapter here (adapter_config.json missing)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_path}: not valid JSON ({exc.msg})") from None
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
        raise ValueError(f"{config_path}: field 'r' (and rank_pattern): expected positive integers, got {ranks}")
    unsupported = [what for what, bad in (
        ("DoRA (use_dora)", config.get("use_dora")), ("a bias", config.get("bias", "none") != "none"),
        ("a LoRA bias (lora_bias)", config.get("lora_bias")),  # vLLM 0.33.0 refuses it too (lora/peft_helper.py)
        ("modules_to_save", bool(config.get("modules_to_save")))) if bad]
    if unsupported:
        raise ValueError(f"{config_path}: vLLM cannot serve an adapter with {', '.join(unsupported)}; "
                         "sample this version with the hf backend (PREFLOOP_BACKEND=hf)")
    return max(ranks)


def engine_lora_rank(rank: int, where: str = "the adapter") -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds `rank`; refuses ranks above its largest."""
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"{where}: LoRA rank {rank} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]}); train "
                     f"with lora_r <= {LORA_RANKS[-1]} or sample this version with the hf backend")


@dataclass
class ReferenceToken:
    """Transformers' view of one engine token: its log-prob, and transformers' own best token there."""

    logp: float
    best: int
    best_logp: float


def first_canary_difference(answers: list[list[int]], engine_logps: list[list[float]],
                            reference: list[list[ReferenceToken]], tolerance: float,
                            decode=str) -> tuple[str | None, float]:
    """(the first token where the engine and the reference disagree beyond `tolerance`, in words, or None; the
    largest difference seen). Every token of every answer is compared."""
    worst = 0.0
    for k, (ids, logps, ref) in enumerate(zip(answers, engine_logps, reference, strict=True)):
        # `ref` may stop short of `ids` only after a token it scored -inf, which is reported before
        for i, (token, logp, r) in enumerate(zip(ids, logps, ref, strict=False)):
            gap = r.best_logp - r.logp  # >= 0: how much transformers prefers its own token to the engine's
            diff = abs(logp - r.logp)
            worst = max(worst, diff, gap)
            if gap > tolerance:
                return (f"canary prompt {k + 1}, token {i + 1}: the engine chose {decode(token)!r} (id {token}) where "
                        f"transformers chooses {decode(r.best)!r} (id {r.best}; log-probs {r.logp:.3f} and "
                        f"{r.best_logp:.3f}, tolerance {tolerance})"), worst
            if diff > tolerance:
                return (f"canary prompt {k + 1}, token {i + 1} ({decode(token)!r}, id {token}): log-prob {logp:.3f} "
                        f"in the engine, {r.logp:.3f} in transformers (tolerance {tolerance})"), worst
    return None, worst


def reference_tokens(model_path: str, prompt_ids: list[list[int]], answers: list[list[int]], *, dtype,
                     adapter_path: str | None = None, device: str = "cpu") -> list[list[ReferenceToken]]:
    """Transformers' log-probs of the engine's answers (teacher forcing), from the weights on disk in `dtype`: the
    raw log-softmax of the logits, no generation_config processors. A token outside the vocabulary gets a log-prob
    of -inf, and its answer is scored no further."""
    import torch

    from .hf import load_model  # transformers is loaded only when a canary checks the engine

    model, _ = load_model(model_path, adapter_path=adapter_path, device=device, dtype=dtype)
    vocab = model.get_input_embeddings().num_embeddings
    out = []
    try:
        with torch.inference_mode():
            for ids, answer in zip(prompt_ids, answers, strict=True):
                cut = next((i for i, t in enumerate(answer) if not 0 <= t < vocab), len(answer))
                logits = model(torch.tensor([ids + answer[:cut]], device=device)).logits[0, len(ids) - 1:]
                rows = logits.float().log_softmax(-1)[:len(answer)]  # row i predicts answer[i]
                best = rows.max(-1)
                chosen = [float(rows[i, t]) if i < cut else float("-inf") for i, t in enumerate(answer[:len(rows)])]
                out.append([ReferenceToken(c, b, v)
                            for c, b, v in zip(chosen, best.indices.tolist(), best.values.tolist(), strict=True)])
    finally:
        del model
        if str(device).startswith("cuda"):
            torch.cuda.empty_cache()
    return out


def model_eos_ids(model_path: str, tokenizer) -> set[int]:
    """The ids vLLM stops on: the tokenizer's EOS and every `eos_token_id` of the model's generation_config (read as
    vLLM reads it: generation_config.json, else derived from config.json)."""
    from transformers import AutoConfig, GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(model_path)
    except OSError:
        gen = GenerationConfig.from_model_config(AutoConfig.from_pretrained(model_path))
    extra = gen.eos_token_id
    ids = {tokenizer.eos_token_id, *([extra] if isinstance(extra, int) else (extra or []))}
    return {i for i in ids if i is not None}


# ---- the backend -------------------------------------------------------------------------------------------------


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model_path: str, *, adapter_path: str | None = None, base_path: str | None = None,
                 adapter_name: str | None = None, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                 dtype: str = "auto", max_model_len: int | None = None, max_lora_rank: int | None = None,
                 enforce_eager: bool = False, canary: bool = True, canary_prompts: tuple[str, ...] = CANARY_PROMPTS,
                 canary_device: str = "auto", canary_tolerance: float | None = None, **ignored):
        """max_model_len: None takes the model's own context (vLLM derives it from config.json); -1 also shrinks it
        to what the GPU's KV cache holds. max_lora_rank: None fits the adapter (its rank rounded up to one vLLM
        accepts); a value is a floor, for adapters to come. canary: check every load against the weights on disk
        (see the module docstring); canary_device: where transformers scores it ("auto": the GPU if it has room
        beside the engine, else the CPU)."""
        self.vllm = _import_vllm()
        if max_lora_rank is not None and max_lora_rank not in LORA_RANKS:
            raise ValueError(f"max_lora_rank: expected one of {', '.join(map(str, LORA_RANKS))}, got {max_lora_rank}")
        self.engine_args = dict(
            tensor_parallel_size=int(tensor_parallel_size or 1), gpu_memory_utilization=float(gpu_memory_utilization),
            dtype=dtype, max_model_len=max_model_len, enforce_eager=enforce_eager,
        )
        self.min_lora_rank = max_lora_rank or 0
        self.canary, self.canary_prompts = canary, tuple(canary_prompts)
        self.canary_device, self.canary_tolerance = canary_device, canary_tolerance
        self.llm = None
        self.lora_request = None
        self.adapter_path: str | None = None
        self.adapter_name: str | None = None
        self.max_lora_rank: int | None = None
        self._use_base(str(base_path or model_path))
        self._set_lora(adapter_path, adapter_name)
        self._start()
        if self.canary:
            try:
                self.verify_weights()
            except Exception:  # nobody will hold this backend to close it: free the GPU now
                self._shutdown()
                raise

    # -- engine -----------------------------------------------------------------------------------------------

    def _use_base(self, base_path: str) -> None:
        """The checkpoint the engine serves, with its own tokenizer and EOS ids."""
        from transformers import AutoTokenizer

        self.base_path = base_path
        self.tokenizer = AutoTokenizer.from_pretrained(base_path)
        self.eos_ids = model_eos_ids(base_path, self.tokenizer)

    def _set_lora(self, adapter_path: str | None, adapter_name: str | None) -> bool:
        """Serve an adapter under a new name and id (a reused name can serve the old adapter: vllm PR #31326);
        True when the running engine cannot hold it (no LoRA, or a smaller max_lora_rank) and must restart."""
        if adapter_path is None:
            self.adapter_path, self.adapter_name, self.lora_request = None, None, None
            return False
        rank = engine_lora_rank(adapter_rank(adapter_path), f"{adapter_path}/adapter_config.json")
        from vllm.lora.request import LoRARequest

        lora_id = next(_lora_ids)
        self.adapter_path, self.adapter_name = str(adapter_path), adapter_name or Path(adapter_path).name
        self.lora_request = LoRARequest(f"{self.adapter_name}-{lora_id}", lora_id, self.adapter_path)
        needed = max(rank, self.min_lora_rank)
        if self.max_lora_rank is None or self.max_lora_rank < needed:
            self.max_lora_rank = needed
            return True
        return False

    def _start(self) -> None:
        args = {k: v for k, v in self.engine_args.items() if v is not None}
        if self.max_lora_rank is not None:
            args.update(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=1)
        # raw_logprobs is vLLM's default; named here because Sample.logp_sum's meaning depends on it
        self.llm = self.vllm.LLM(model=self.base_path, tokenizer=self.base_path, seed=0,
                                 logprobs_mode="raw_logprobs", **args)
        self.max_model_len = int(self.llm.model_config.max_model_len)

    def restart(self) -> None:
        """Throw the engine away and start a fresh one on the same weights (the adapter under a new name)."""
        self._shutdown()
        if self.adapter_path is not None:
            self._set_lora(self.adapter_path, self.adapter_name)
        self._start()

    def _shutdown(self) -> None:
        if self.llm is None:
            return
        # vLLM 0.33.0: LLM.llm_engine (LLMEngine) has no shutdown of its own; its engine_core client stops the
        # engine process
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        try:
            if core is not None:
                core.shutdown()
        except Exception:  # an engine already half gone: dropping it is all that is left to do
            log.debug("vllm engine shutdown failed", exc_info=True)
        self.llm = None
        gc.collect()
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:  # not there (a stand-in engine) or nothing to tear down: the engine process is gone
            log.debug("vllm distributed teardown skipped", exc_info=True)
        try:
            import torch

            torch.cuda.empty_cache()
        except Exception:
            log.debug("empty_cache failed", exc_info=True)

    def set_adapter(self, adapter_path: str, adapter_name: str | None = None) -> CanaryResult | None:
        """Serve another LoRA version over the same base (restarting the engine only if it cannot hold it)."""
        if self._set_lora(adapter_path, adapter_name):
            self._shutdown()
            self._start()
        return self.verify_weights() if self.canary else None

    def load_version(self, model_path: str, *, adapter_path: str | None = None,
                     adapter_name: str | None = None) -> CanaryResult | None:
        """Switch to another version: a new adapter over the same base, or a new engine (with the new checkpoint's
        tokenizer and EOS ids) for a full checkpoint or another base; then the canary."""
        if adapter_path is not None and str(model_path) == self.base_path:
            return self.set_adapter(adapter_path, adapter_name)
        self._shutdown()
        self.max_lora_rank = None
        self._use_base(str(model_path))
        self._set_lora(adapter_path, adapter_name)
        self._start()
        return self.verify_weights() if self.canary else None

    # -- canary -----------------------------------------------------------------------------------------------

    @property
    def engine_dtype(self):
        return self.llm.model_config.dtype

    def _weights_label(self) -> str:
        return f"adapter {self.adapter_path} over {self.base_path}" if self.adapter_path else self.base_path

    def canary_answers(self) -> tuple[list[list[int]], list[list[float]]]:
        """The engine's plain greedy answers to the canary prompts: token ids and each token's raw log-prob."""
        params = self.vllm.SamplingParams(n=1, temperature=0.0, max_tokens=CANARY_TOKENS, logprobs=0, seed=0)
        ids = [prompt_token_ids(self.tokenizer, p) for p in self.canary_prompts]
        outs = self.llm.generate([{"prompt_token_ids": row} for row in ids], params,
                                 lora_request=self.lora_request, use_tqdm=False)
        answers, logps = [], []
        for k, out in enumerate(outs):
            c = out.outputs[0]
            self._check_finish(c, f"canary prompt {k + 1}")
            answers.append(list(c.token_ids))
            logps.append(self._token_logps(c, f"canary prompt {k + 1}"))
        return answers, logps

    def _reference_device(self) -> str:
        if self.canary_device != "auto":
            return self.canary_device
        import torch

        if not torch.cuda.is_available():
            return "cpu"
        free, _ = torch.cuda.mem_get_info()
        weights = sum(f.stat().st_size for f in Path(self.base_path).glob("*.safetensors"))
        return "cuda" if free > 3 * weights else "cpu"

    def check_canary(self) -> CanaryResult:
        """One canary check of the running engine (no restart)."""
        answers, logps = self.canary_answers()
        dtype = self.engine_dtype
        tolerance = self.canary_tolerance or CANARY_TOLERANCE.get(str(dtype).removeprefix("torch."), 0.5)
        prompt_ids = [prompt_token_ids(self.tokenizer, p) for p in self.canary_prompts]
        reference = reference_tokens(self.base_path, prompt_ids, answers, dtype=dtype, adapter_path=self.adapter_path,
                                     device=self._reference_device())
        difference, worst = first_canary_difference(answers, logps, reference, tolerance,
                                                    decode=lambda t: self.tokenizer.decode([t]))
        texts = [self.tokenizer.decode(a, skip_special_tokens=True) for a in answers]
        return CanaryResult(difference is None, False, answers, difference, worst, texts)

    def verify_weights(self) -> CanaryResult:
        """The canary; on a mismatch restart the engine once and check again; raise CanaryMismatch if it still
        differs."""
        result = self.check_canary()
        if result.ok:
            return result
        log.warning("vLLM canary mismatch for %s (%s): restarting the engine", self._weights_label(),
                    result.first_difference)
        self.restart()
        result = self.check_canary()
        result.restarted = True
        if not result.ok:
            raise CanaryMismatch(f"vLLM does not serve the weights of {self._weights_label()}, even after a restart: "
                                 f"{result.first_difference}")
        return result

    # -- sampling ---------------------------------------------------------------------------------------------

    @property
    def context(self) -> int:
        return self.max_model_len

    def prompt_ids(self, prompt) -> list[int]:
        return prompt_token_ids(self.tokenizer, prompt)

    def generate(self, prompts, config: SamplingConfig, *, seeds=None, on_progress=None,
                 should_stop=None, on_tokens=None) -> list[list[Sample]]:
        check_seeds(prompts, seeds)
        if not prompts:
            return []
        ids = [self.prompt_ids(p) for p in prompts]
        check_context(prompts, ids, config.max_new_tokens, self.context)  # vLLM would cut such samples short
        seeds = seeds if seeds is not None else [default_seed(config.seed, row) for row in ids]
        greedy = config.temperature == 0
        asked = 1 if greedy else config.n  # vLLM refuses greedy sampling with n > 1: one answer, copied below
        results: list[list[Sample]] = []
        total = len(ids) * config.n
        step = max(256, config.batch_size)  # prompts handed to the engine at once; vLLM schedules inside each chunk

        def finished(count: int) -> None:  # a prompt's samples all finished: progress moves prompt by prompt
            done = min((len(results) + count) * config.n, total)
            if on_progress:
                on_progress(done, total)
            if on_tokens:  # vLLM reports a request when it ends: the budget moves as its prompts finish
                on_tokens(done * config.max_new_tokens, total * config.max_new_tokens)

        for start in range(0, len(ids), step):
            if should_stop and should_stop():
                raise GenerationCancelled("generation stopped on request")
            chunk = range(start, min(start + step, len(ids)))
            params = [
                self.vllm.SamplingParams(n=asked, temperature=config.temperature, top_p=config.top_p,
                                         max_tokens=config.max_new_tokens, seed=int(seeds[i]), logprobs=0)
                for i in chunk
            ]
            outs = self._run([{"prompt_token_ids": ids[i]} for i in chunk], params, should_stop, finished)
            for i, out in zip(chunk, outs, strict=True):
                completions = sorted(out.outputs, key=lambda c: c.index)
                if len(completions) != asked:
                    raise VLLMRequestFailed(f"prompt {i}: vLLM returned {len(completions)} samples, {asked} asked")
                row = [self._to_sample(c, f"prompt {i}, sample {c.index}") for c in completions]
                results.append(row if not greedy else [copy.deepcopy(row[0]) for _ in range(config.n)])
        return results

    def _run(self, prompts: list[dict], params: list, should_stop, finished) -> list:
        """LLM.generate's own loop, run here so that a Cancel is seen between engine steps (not once a whole chunk
        has finished) and progress moves as each prompt finishes. vLLM 0.33.0: `LLM.enqueue` adds the requests and
        returns their internal ids (entrypoints/common/offline.py `_render_and_add_requests`); `_run_engine` then
        steps `llm_engine` while it `has_unfinished_requests()`, keeping the outputs that are `finished` (offline
        requests report only their final output) and sorting them by their request id, a counter as they were
        added; `llm_engine.abort_request(ids, internal=True)` removes requests, a parent's parallel samples with it
        (v1/engine/output_processor.py `abort_requests`). Stopped or failed part-way, the chunk's requests are
        aborted, so the engine holds none of them for the next call."""
        engine = self.llm.llm_engine
        added = self.llm.enqueue(prompts, params, lora_request=self.lora_request, use_tqdm=False)
        outputs: dict[str, object] = {}
        try:
            while engine.has_unfinished_requests():
                if should_stop and should_stop():
                    raise GenerationCancelled("generation stopped on request")
                for out in engine.step():
                    if out.finished:
                        outputs[out.request_id] = out
                        finished(len(outputs))
        except BaseException:
            try:
                engine.abort_request(list(added), internal=True)
            except Exception:  # the engine is gone as well: the error that stopped the loop is the one to see
                log.exception("aborting the unfinished vLLM requests failed")
            raise
        if len(outputs) != len(prompts):
            raise VLLMRequestFailed(f"vLLM finished {len(outputs)} of the {len(prompts)} requests it was given")
        return [outputs[key] for key in sorted(outputs, key=int)]

    def _check_finish(self, completion, where: str) -> None:
        reason = completion.finish_reason
        if reason not in ("stop", "length"):
            raise VLLMRequestFailed(f"{where}: vLLM ended the request with {reason!r} (stop reason "
                                    f"{completion.stop_reason!r}); nothing of this chunk is stored")
        if reason == "stop" and (not completion.token_ids or completion.token_ids[-1] not in self.eos_ids):
            last = completion.token_ids[-1] if completion.token_ids else None
            raise VLLMRequestFailed(f"{where}: vLLM stopped on token {last}, which is not an EOS id of the model "
                                    f"({sorted(self.eos_ids)})")

    @staticmethod
    def _token_logps(completion, where: str) -> list[float]:
        if completion.logprobs is None:
            raise VLLMRequestFailed(f"{where}: vLLM returned no log-probs (logprobs=0 was asked)")
        return [float(entry[token].logprob) for token, entry in zip(completion.token_ids, completion.logprobs,
                                                                     strict=True)]

    def _to_sample(self, completion, where: str) -> Sample:
        self._check_finish(completion, where)
        token_ids = list(completion.token_ids)
        return Sample(
            text=self.tokenizer.decode(token_ids, skip_special_tokens=True), token_ids=token_ids,
            finish_reason=completion.finish_reason, logp_sum=sum(self._token_logps(completion, where)),
        )

    def close(self) -> None:
        self._shutdown()
