"""The transformers backend: fast batched sampling on any CPU (or a GPU without vLLM).

Llama-family models run on `SlotDecoder` with continuous batching: prompts sorted by length, each prompt prefilled
once for its K samples, a finished slot refilled at once from the waiting samples. Other architectures fall back
to a plain batched loop over the model's own forward pass, as do Llama-family models whose RoPE rescales with the
sequence's length, and a sliding-window model's calls whose sequences pass its window. The dtype is the caller's
choice ("auto": the fastest one for this machine, `prefcore.hardware`); docs/numerics.md says what the log-probs and
samples guarantee in each.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from prefcore.chat import prompt_token_ids
from prefcore.hardware import default_device, resolve_dtype

from .base import (
    Backend,
    GenerationCancelled,
    ProgressFn,
    Sample,
    SamplingConfig,
    StopFn,
    TokensFn,
    check_context,
    check_seeds,
    default_seed,
    sample_seed,
)

PREFILL_PROMPTS = 16  # prompts prefilled together at most (rows of one projection: enough to run the GEMMs well)
# The most memory the decoder's KV cache may take: a job of long prompts decodes fewer rows at once than its
# batch_size rather than allocate more (SmolLM2-135M in bf16 with 128 rows of 320 positions needs 0.9 GiB).
KV_CACHE_BYTES = 4 << 30
CACHE_ROUND = 64  # cache lengths are rounded up to this, so that jobs of slightly different prompt lengths reuse one
VLLM_ONLY_OPTIONS = ("tensor_parallel_size", "gpu_memory_utilization", "adapter_name", "enforce_eager",
                     "max_model_len", "max_lora_rank", "canary", "canary_prompts", "canary_device",
                     "canary_tolerance")


@dataclass
class _Sequence:
    prompt: int
    index: int
    rng: random.Random
    tokens: list[int] = field(default_factory=list)
    logps: list[float] = field(default_factory=list)  # each token's log-prob (temperature 1)
    logp: float = 0.0


def load_model(model_path: str, *, adapter_path: str | None = None, base_path: str | None = None,
               device: str = "cpu", dtype=None):
    """(model, tokenizer) for a full checkpoint, or for a LoRA adapter merged into its base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_path)
    if adapter_path is None and (path / "adapter_config.json").exists():
        adapter_path, path = str(path), Path(base_path) if base_path else None
        if path is None:
            import json

            base = json.loads((Path(adapter_path) / "adapter_config.json").read_text()).get("base_model_name_or_path")
            path = Path(base or "")
    elif adapter_path is not None and base_path is not None:
        path = Path(base_path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no checkpoint here (config.json missing)")
    tokenizer_dir = adapter_path if adapter_path and (Path(adapter_path) / "tokenizer_config.json").exists() else path
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
    return model.to(device).eval(), tokenizer


class HFBackend(Backend):
    name = "hf"

    def __init__(self, model_path: str, *, adapter_path: str | None = None, base_path: str | None = None,
                 device: str | None = None, dtype=None, engine: str = "auto", threads: int | None = None,
                 **options):

        unknown = set(options) - set(VLLM_ONLY_OPTIONS)
        if unknown:
            raise ValueError(f"unknown option(s) for the hf backend: {', '.join(sorted(unknown))}")
        if engine not in ("auto", "slots", "generic"):
            raise ValueError(f"engine must be 'auto', 'slots' or 'generic', got {engine!r}")
        self.device = device or default_device()
        self.dtype = resolve_dtype(dtype, self.device)
        self.model, self.tokenizer = load_model(model_path, adapter_path=adapter_path, base_path=base_path,
                                                device=self.device, dtype=self.dtype)
        from .decoder import supports  # decoder.py and nucleus.py load torch at import; this module imports without it

        if engine == "auto":
            engine = "slots" if supports(self.model) else "generic"
        elif engine == "slots" and not supports(self.model):
            raise ValueError(f"the slots engine does not support {type(self.model).__name__}")
        self.engine = engine
        # torch's thread count while sampling (None: leave torch's default). On a machine whose cores are busy with
        # other work, fewer threads than cores avoid waiting at every op's barrier for a preempted thread.
        self.threads = threads
        self._decoder = None
        eos = {self.tokenizer.eos_token_id}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_ids = {e for e in eos if e is not None}
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)

    # -- public -----------------------------------------------------------------------------------------------

    def prompt_ids(self, prompt) -> list[int]:
        return prompt_token_ids(self.tokenizer, prompt)

    @property
    def context(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def generate(self, prompts, config: SamplingConfig, *, seeds=None, on_progress: ProgressFn | None = None,
                 should_stop: StopFn | None = None, on_tokens: TokensFn | None = None) -> list[list[Sample]]:
        check_seeds(prompts, seeds)
        ids = [self.prompt_ids(p) for p in prompts]
        check_context(prompts, ids, config.max_new_tokens, self.context)
        if seeds is None:
            seeds = [default_seed(config.seed, row) for row in ids]
        seqs = [[_Sequence(i, j, random.Random(sample_seed(seeds[i], j))) for j in range(config.n)]
                for i in range(len(ids))]
        total = len(ids) * config.n
        budget = total * config.max_new_tokens
        done, spent = [0], [0]

        def finished(seq: _Sequence) -> None:
            done[0] += 1
            spent[0] += max(0, config.max_new_tokens - len(seq.tokens))  # the unused rest of its share
            if on_progress:
                on_progress(done[0], total)
            if on_tokens:  # the rest of its share counted now: the last sample's ends the figure at the budget
                on_tokens(min(spent[0], budget), budget)

        def stepped(rows: int) -> None:
            spent[0] += rows
            if on_tokens:
                on_tokens(min(spent[0], budget), budget)

        if ids:
            import torch

            run = self._run_slots if self._slots_for(ids, config) else self._run_generic
            before = torch.get_num_threads()
            if self.threads:
                torch.set_num_threads(self.threads)
            try:
                run(ids, seqs, config, finished, stepped, should_stop or (lambda: False))
            finally:
                torch.set_num_threads(before)
        return [[self._to_sample(s) for s in row] for row in seqs]

    def close(self) -> None:
        self._decoder = None
        self.model = None

    # -- internals --------------------------------------------------------------------------------------------

    def _to_sample(self, seq: _Sequence) -> Sample:
        stop = bool(seq.tokens) and seq.tokens[-1] in self.eos_ids
        return Sample(
            text=self.tokenizer.decode(seq.tokens, skip_special_tokens=True), token_ids=list(seq.tokens),
            finish_reason="stop" if stop else "length", logp_sum=float(seq.logp),
            extra={"token_logps": list(seq.logps)},
        )

    def _slots_for(self, ids: list[list[int]], config: SamplingConfig) -> bool:
        """Whether this call runs on the slots engine. It attends to whole sequences, so a sliding-window model
        whose longest sequence here passes its window samples on the generic engine (the model's own forward, which
        applies the window). The last sampled token is never fed back: a query sees at most prompt + new - 1."""
        if self.engine != "slots":
            return False
        from .decoder import sliding_window  # loads torch (see above)

        window = sliding_window(self.model)
        return window is None or max(map(len, ids)) + config.max_new_tokens - 1 <= window

    def _is_done(self, seq: _Sequence, config: SamplingConfig) -> bool:
        return seq.tokens[-1] in self.eos_ids or len(seq.tokens) >= config.max_new_tokens

    def _decoder_for(self, rows: int, batch_size: int, max_len: int):
        """A decoder of at least min(rows, batch_size) slots of max_len positions (rounded up), or of as many as
        KV_CACHE_BYTES holds; its `slots` may exceed what this job may use (a cache kept from a larger job)."""
        from .decoder import SlotDecoder, cache_bytes_per_slot  # loads torch (see above)

        max_len = -(-max_len // CACHE_ROUND) * CACHE_ROUND
        slots = max(1, min(rows, batch_size, KV_CACHE_BYTES // cache_bytes_per_slot(self.model, max_len)))
        dec = self._decoder
        if dec is None or dec.slots < slots or dec.max_len < max_len:
            self._decoder = None  # free the old cache before allocating the new one
            dec = self._decoder = SlotDecoder(self.model, slots, max_len)
        return dec, slots

    def _run_slots(self, ids, seqs, config: SamplingConfig, finished, stepped, should_stop) -> None:
        import torch

        from .nucleus import sample_tokens  # loads torch (see above)

        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))  # bucket by length
        waiting = deque(seq for i in order for seq in seqs[i])
        dec, slots = self._decoder_for(len(waiting), config.batch_size, max(map(len, ids)) + config.max_new_tokens)
        prefixes: dict[int, list] = {}  # prompt -> [kv, logits, samples not yet admitted]
        active: list[_Sequence] = []  # slot s holds active[s]; slots stay dense (0..len-1)
        positions: list[int] = []

        def refill(free: list[int]) -> list[int]:
            """Fill free slots with waiting samples (prefilling their prompts together); returns unfilled slots."""
            free = sorted(free)
            while free and waiting:
                # asked here too: samples that end at their first token take no slot, and the decode loop below,
                # which asks per step, never ran while the whole job was sampled here
                if should_stop():
                    raise GenerationCancelled("generation stopped on request")
                batch = [waiting[i] for i in range(min(len(free), len(waiting)))]
                need = list(dict.fromkeys(s.prompt for s in batch if s.prompt not in prefixes))
                for start in range(0, len(need), PREFILL_PROMPTS):
                    if start and should_stop():
                        raise GenerationCancelled("generation stopped on request")
                    group = need[start:start + PREFILL_PROMPTS]
                    for prompt, (kv, logits) in zip(group, dec.prefill([ids[i] for i in group]), strict=True):
                        prefixes[prompt] = [kv, logits, config.n]
                for seq in batch:
                    waiting.popleft()
                    entry = prefixes[seq.prompt]
                    entry[2] -= 1
                    if entry[2] == 0:
                        del prefixes[seq.prompt]
                    token, logp = sample_tokens(entry[1][None], config.temperature, config.top_p, [seq.rng.random()])
                    stepped(1)  # the first token, drawn from the prefill's logits: counted as a decode step's are
                    seq.tokens.append(int(token[0]))
                    seq.logps.append(float(logp[0]))
                    seq.logp += float(logp[0])
                    if self._is_done(seq, config):
                        finished(seq)
                        continue
                    slot = free.pop(0)
                    dec.load(slot, entry[0])
                    if slot == len(active):
                        active.append(seq)
                        positions.append(len(ids[seq.prompt]))
                    else:
                        active[slot], positions[slot] = seq, len(ids[seq.prompt])
            return free

        refill(list(range(slots)))  # a cache kept from a larger job may have more slots: use only these
        while active:
            if should_stop():
                raise GenerationCancelled("generation stopped on request")
            stepped(len(active))
            tokens = torch.tensor([s.tokens[-1] for s in active], device=dec.device)
            logits = dec.step(tokens, torch.tensor(positions, device=dec.device))
            new, logps = sample_tokens(logits, config.temperature, config.top_p, [s.rng.random() for s in active])
            ended = []
            for slot, (seq, token, logp) in enumerate(zip(active, new.tolist(), logps.tolist(), strict=True)):
                seq.tokens.append(token)
                seq.logps.append(logp)
                seq.logp += logp
                positions[slot] += 1
                if self._is_done(seq, config):
                    finished(seq)
                    ended.append(slot)
            holes = refill(ended)
            for slot in sorted(holes, reverse=True):  # keep slots dense: move the last one into each hole
                last = len(active) - 1
                if slot != last:
                    dec.compact_one(last, slot, positions[last])
                    active[slot], positions[slot] = active[last], positions[last]
                active.pop()
                positions.pop()

    def _run_generic(self, ids, seqs, config: SamplingConfig, finished, stepped, should_stop) -> None:
        """Static batches of similar length through the model's own forward pass (any causal LM)."""
        import torch

        from .nucleus import sample_tokens  # loads torch (see above)

        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
        work = [seq for i in order for seq in seqs[i]]
        device = self.model.device
        for start in range(0, len(work), config.batch_size):
            batch = work[start:start + config.batch_size]
            width = max(len(ids[s.prompt]) for s in batch)
            input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, seq in enumerate(batch):
                row = ids[seq.prompt]
                input_ids[r, width - len(row):] = torch.tensor(row)
                mask[r, width - len(row):] = 1
            input_ids, mask = input_ids.to(device), mask.to(device)
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            live = list(range(len(batch)))
            past = None
            with torch.inference_mode():
                while live:
                    if should_stop():
                        raise GenerationCancelled("generation stopped on request")
                    stepped(len(live))
                    out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                                     past_key_values=past, use_cache=True, logits_to_keep=1)
                    past = out.past_key_values
                    tokens, logps = sample_tokens(out.logits[:, -1], config.temperature, config.top_p,
                                                  [s.rng.random() for s in batch])
                    for r in list(live):
                        seq = batch[r]
                        seq.tokens.append(int(tokens[r]))
                        seq.logps.append(float(logps[r]))
                        seq.logp += float(logps[r])
                        if self._is_done(seq, config):
                            finished(seq)
                            live.remove(r)
                    input_ids = tokens[:, None]
                    mask = torch.cat([mask, mask.new_ones((len(batch), 1))], dim=1)
                    position_ids = position_ids[:, -1:] + 1
