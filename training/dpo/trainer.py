"""The DPO training loop: reference log-probs once, then length-grouped `[prompt | chosen | rejected]` batches.

The reference is only needed as log-probs, so they are computed once up front (no_grad) and the reference model is
freed before training; with LoRA and no separate reference they come from the same model with adapters disabled.
Runs in-process (the Celery worker) or under `accelerate launch` (DDP; each rank trains its share of the batches).
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import random
import resource
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Collection
from pathlib import Path

import torch

from prefcore.chat import prompt_token_ids, response_token_ids
from prefcore.hardware import resolve_dtype as resolve
from prefcore.memory import give_back_free, retain_freed_memory
from training.dpo.config import SMOOTHED_LOSSES, DPOConfig
from training.dpo.data import PreferencePair, TokenizedPair, length_grouped_batches, tokenize_pair, truncate
from training.dpo.logps import PairLogps, build_pair_batch, position_kl
from training.dpo.losses import dpo_loss, implicit_rewards, kto_loss, nll_loss, rrhf_loss
from training.dpo.outcome import (
    REFERENCE_STAGE,
    SFT_STAGE,
    StageCallback,
    StepCallback,
    TrainingCancelled,
    TrainingDiverged,
    TrainResult,
)
from training.dpo.terms import TermBatch, apply_term, term_name, terms_for


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resolve_dtype(config: DPOConfig, device: str) -> torch.dtype:
    """The compute dtype of a run: config.dtype, "auto" being the machine's fastest (prefcore.hardware). The product
    resolves "auto" itself (PREFLOOP_DTYPE) before a run, so the CLI under `accelerate launch` gets a fixed one."""

    return resolve(config.dtype, device)


def _autocast(device: str, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


class _Dist:
    """Rank, world size and the accelerate helpers when launched with several processes; a no-op otherwise."""

    def __init__(self):
        self.accelerator = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.rank = self.accelerator.process_index if self.accelerator else 0
        self.world = self.accelerator.num_processes if self.accelerator else 1
        self.device = str(self.accelerator.device) if self.accelerator else ("cuda" if torch.cuda.is_available() else "cpu")
        self.is_main = self.rank == 0

    def gather(self, obj: list) -> list:
        if not self.accelerator:
            return obj
        from accelerate.utils import gather_object

        return gather_object(obj)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(values, "mean") if self.accelerator else values


def load_model(model_dir: str | Path, device: str, *, trained: bool = False):
    """The model in fp32 (master weights; bf16, where fastest, is applied by autocast, so the optimiser keeps full
    precision), in eval mode. `trained`: its weights are read into the process's own memory rather than mapped from
    the checkpoint: a weight mapped copy-on-write from model.safetensors paid a page fault for each of its pages at
    its first write (the optimiser's first step on the default model: 2.3-2.6 s, about 0.4 s read into memory; docs/
    performance.md, "the first AMX Xeon since the packed trainer"). A model only read (a reference, a scorer) stays
    mapped, which holds the file once in memory while it loads, not twice (an fp32 checkpoint; another dtype is
    converted into the process's memory either way). A .bin checkpoint is mapped either way (transformers reads only
    safetensors files into memory)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, disable_mmap=trained)
    model.to(device)
    model.eval()  # no dropout: DPO compares policy and reference on the same deterministic forward
    return model


def load_tokenizer(model_dir: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def tokenize_pairs(tokenizer, pairs: list[PreferencePair], config: DPOConfig) -> list[TokenizedPair]:
    return [tokenize_pair(tokenizer, p, config.max_length, config.max_prompt_length) for p in pairs]


def _batches(rows: list[TokenizedPair], indices: list[int], config: DPOConfig, device: str, pad_id: int,
             should_stop: Callable[[], bool] | None = None, stage: str = ""):
    """rows[i], i in indices, as length-grouped PairBatches on the device: yields (the batch's row indices, batch).
    In each batch, sequence k < len(indices of the batch) is row k's chosen response, n + k its rejected one."""
    for batch in length_grouped_batches([rows[i].length for i in indices], config.batch_size, seed=0):
        if should_stop and should_stop():  # the trainer's, or a measurement's (held-out scoring, KL)
            raise TrainingCancelled(f"stopped while {stage}")
        chosen = [indices[b] for b in batch]
        yield chosen, build_pair_batch([rows[i].row() for i in chosen], pad_id).to(device)


@torch.no_grad()
def _reference_logps_for(
    scorer: PairLogps, rows: list[TokenizedPair], indices: list[int], config: DPOConfig, device: str,
    dtype: torch.dtype, pad_id: int, should_stop: Callable[[], bool] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[int, tuple[float, float]]:
    """Summed log-probs of chosen and rejected for rows[i], i in indices, in length-grouped batches.

    Reference log-probs are always computed by the trainer's own code in the run's dtype (here, or in the first
    step's forward for that step's pairs: _train_loop), never taken from the sampler's Response.logp_sum: those equal these to 1e-3 only in fp32 (tests/training/test_reference_logps.py); in
    bf16 the sampler's bf16 weights and the trainer's fp32 weights under autocast differ by far more
    (docs/numerics.md)."""
    out: dict[int, tuple[float, float]] = {}
    n_batches = math.ceil(len(indices) / config.batch_size)
    for done, (chosen, pb) in enumerate(_batches(rows, indices, config, device, pad_id, should_stop, REFERENCE_STAGE)):
        if on_batch:
            on_batch(done, n_batches)
        with _autocast(device, dtype):
            per_token = scorer.token_logps(pb).float().cpu()
        logps = torch.zeros(pb.token_counts.shape[0]).index_add(0, pb.sequence_index.cpu(), per_token)
        n = len(chosen)
        for k, i in enumerate(chosen):
            out[i] = (float(logps[k]), float(logps[n + k]))
    if on_batch:
        on_batch(n_batches, n_batches)
    return out


class Scorer:
    """One saved model, loaded on first use and then kept, scoring pairs in the config's dtype and batch size:
    summed log-probs (`logps`) and, against another Scorer, the chosen responses' per-position KL (`kl`). A round's
    evaluation holds one for the new version and one for its reference, so each loads once."""

    def __init__(self, model_dir: str | Path, config: DPOConfig):
        self.model_dir, self.config = str(model_dir), config
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = resolve_dtype(config, self.device)
        self.tokenizer = load_tokenizer(model_dir)
        self._scorer: PairLogps | None = None

    @property
    def scorer(self) -> PairLogps:
        if self._scorer is None:
            self._scorer = PairLogps(load_model(self.model_dir, self.device))
        return self._scorer

    def release(self) -> None:
        """Let the loaded model go, collected now rather than whenever the collector runs, so its memory is free
        before another model loads; the next use loads it again. A round's evaluation lets its reference's go before
        base's loads: two models held at once, not three."""
        self._scorer = None
        gc.collect()

    def _rows(self, pairs: list[PreferencePair]) -> list[TokenizedPair]:
        return tokenize_pairs(self.tokenizer, pairs, self.config)

    def logps(self, pairs: list[PreferencePair],
              should_stop: Callable[[], bool] | None = None) -> list[tuple[float, float]]:
        """Each pair's summed log-probs (chosen, rejected) under this model, in input order; TrainingCancelled
        between batches once should_stop() says so."""
        return self.scored(pairs, should_stop)[0]

    def scored(self, pairs: list[PreferencePair], should_stop: Callable[[], bool] | None = None,
               ) -> tuple[list[tuple[float, float]], list[bool]]:
        """`logps`, and whether each pair was cut to max_length to score it (what may be cached:
        training.dataset.store_reference_logps), from one tokenization."""
        rows = self._rows(pairs)
        found = _reference_logps_for(self.scorer, rows, list(range(len(rows))), self.config, self.device, self.dtype,
                                     _pad_id(self.tokenizer), should_stop)
        return [found[i] for i in range(len(rows))], [row.truncated for row in rows]

    @torch.no_grad()
    def kl(self, reference: Scorer, pairs: list[PreferencePair],
           should_stop: Callable[[], bool] | None = None,
           chosen_ids: list[list[int] | None] | None = None) -> list[list[float]]:
        """For each pair's chosen response, in input order, KL(this model || reference) over the whole vocabulary
        at each of its token positions (`position_kl`), the whole response whatever the config's max_length (a
        prompt too long for it keeps its end, max_prompt_length, as in training); the two must share a tokenizer.
        TrainingCancelled between batches once should_stop() says so.

        Cut to max_length, the KL was summed over part of an answer and then read per token of all of it (the
        gate's drift budget): a run with a short max_length reported a fraction of its drift.

        `chosen_ids[i]`: pair i's chosen response as the tokens it was sampled as (None: its text, tokenized), so the
        positions are the ones the model drew."""
        check_tokenizers_match(self.tokenizer, self.model_dir, reference.tokenizer, reference.model_dir)
        ids = chosen_ids or [None] * len(pairs)
        rows = [_whole_response(self.tokenizer, pair, self.config, given) for pair, given in zip(pairs, ids, strict=True)]
        out: dict[int, list[float]] = {}
        for chosen, pb in _batches(rows, list(range(len(rows))), self.config, self.device, _pad_id(self.tokenizer),
                                   should_stop, "measuring KL"):
            with _autocast(self.device, self.dtype):
                kl = position_kl(self.scorer, reference.scorer, pb).cpu()
            owner = pb.sequence_index.cpu()
            for k, i in enumerate(chosen):
                out[i] = kl[owner == k].tolist()
        return [out[i] for i in range(len(rows))]


def _whole_response(tokenizer, pair: PreferencePair, config: DPOConfig,
                    chosen_ids: list[int] | None = None) -> TokenizedPair:
    """The pair tokenized with room for its longer response whole: the max_length is raised to the prompt's kept
    tokens (at most max_prompt_length) plus that response, where config.max_length is shorter. `chosen_ids`: the
    chosen response's tokens as sampled, taken as they are (its text, tokenized again, can split otherwise, and gets
    an end token a cut answer never sampled)."""
    prompt = prompt_token_ids(tokenizer, pair.prompt)
    chosen = list(chosen_ids) if chosen_ids else response_token_ids(tokenizer, pair.chosen)
    rejected = response_token_ids(tokenizer, pair.rejected)
    room = min(len(prompt), config.max_prompt_length) + max(len(chosen), len(rejected))
    return TokenizedPair(*truncate(prompt, chosen, rejected, max(config.max_length, room), config.max_prompt_length))


def compute_logps(model_dir, pairs: list[PreferencePair], config: DPOConfig) -> list[tuple[float, float]]:
    """Summed log-probs (chosen, rejected) of every pair under the model in model_dir, in input order."""
    return Scorer(model_dir, config).logps(pairs)


def compute_kl(model_dir, reference_dir, pairs: list[PreferencePair], config: DPOConfig,
               should_stop: Callable[[], bool] | None = None,
               chosen_ids: list[list[int] | None] | None = None) -> list[list[float]]:
    """`Scorer.kl` of the model in model_dir against the one in reference_dir, the two loaded side by side."""
    return Scorer(model_dir, config).kl(Scorer(reference_dir, config), pairs, should_stop, chosen_ids)


def check_same_tokenizer(model_dir, tokenizer, reference_dir) -> None:
    """ValueError unless the reference reads token ids as the model does: the reference scores the model's token
    ids, so one of another vocabulary crashed (an index past its embeddings) or, larger, trained against log-probs
    of other tokens without a word. A reference folder without tokenizer files is compared by vocabulary size."""
    def vocab_size(folder) -> int | None:
        try:
            return int(json.loads((Path(folder) / "config.json").read_text(encoding="utf-8-sig"))["vocab_size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    ours, theirs = vocab_size(model_dir), vocab_size(reference_dir)
    if ours is not None and theirs is not None and ours != theirs:
        raise ValueError(f"the reference model {reference_dir} has a vocabulary of {theirs} tokens and the model "
                         f"{model_dir} {ours}: the reference must share the model's tokenizer")
    try:
        reference_tokenizer = load_tokenizer(reference_dir)
    except (OSError, ValueError, TypeError):
        return  # weights only: its log-probs are read with the model's tokenizer
    check_tokenizers_match(tokenizer, model_dir, reference_tokenizer, reference_dir)


def check_tokenizers_match(tokenizer, model_dir, reference_tokenizer, reference_dir) -> None:
    """ValueError unless the two loaded tokenizers map text to the same token ids (the trainer's `--reference`, a
    round's KL to its reference): one model's ids read by the other are other tokens."""
    if reference_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"the reference model {reference_dir} tokenizes apart from the model {model_dir} (their "
                         "tokenizers map text to different token ids): the reference must share the model's tokenizer")


def _pad_id(tokenizer) -> int:
    for tok_id in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if tok_id is not None:
            return tok_id
    return 0


def adamw(params: list[torch.nn.Parameter], config: DPOConfig) -> torch.optim.AdamW:
    """AdamW with the fused kernel where torch has one for these parameters (CPU and CUDA floating-point tensors):
    one pass per parameter instead of foreach's several, and none of foreach's full-size temporaries (peak memory).
    The same update rule; transformers' Trainer (and so TRL) uses the fused kernel too."""
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.bfloat16) for p in params)
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                             fused=fused or None)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the learning rate at optimiser step `step` (0-based): linear warm-up, then decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _apply_lora(model, config: DPOConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def noisy_target(preference_prob: float | None, smoothing: float) -> float:
    """The probability the loss gives "chosen beats rejected": the label's own (1 for a hard label, less for a
    slight or soft one), with a share `smoothing` of labels assumed flipped on top, p(1 - ε) + (1 - p)ε; so a
    round's label smoothing (or measured label agreement) applies to pairs from the database, whose labels all
    carry a probability, as it does to hard ones."""
    p = 1.0 if preference_prob is None else preference_prob
    return p * (1 - smoothing) + (1 - p) * smoothing


def _pair_loss(config: DPOConfig, logps, counts, ref_c, ref_r, prefs, terms=(), flags=None, term_log=None):
    """The configured loss over one batch -> (mean loss, chosen rewards, rejected rewards).

    `terms` (training/dpo/terms.py) add their margins inside the loss and their losses to it, given `flags`
    ((chosen flags, rejected flags) per pair); each term's added loss goes into `term_log` by name."""
    pc, pr = logps.chunk(2)
    nc, nr = counts.chunk(2)
    margin, extra = None, []
    if terms:
        b = len(pc)
        chosen_flags, rejected_flags = flags if flags is not None else ([frozenset()] * b, [frozenset()] * b)
        batch = TermBatch(pc, pr, ref_c, ref_r, nc, nr, chosen_flags, rejected_flags, config.beta)
        for term in terms:
            result = apply_term(term, batch)
            if result.margin is not None:
                margin = result.margin if margin is None else margin + result.margin
                if term_log is not None:  # a margin term's shift, logged per step as a loss term's loss is
                    name = f"terms/{term_name(term)}/margin"
                    term_log[name] = term_log.get(name, 0.0) + float(result.margin.detach().float().mean())
            if result.loss is not None:
                extra.append(result.loss)
                if term_log is not None:
                    name = f"terms/{term_name(term)}"
                    term_log[name] = term_log.get(name, 0.0) + float(result.loss.detach())
    if margin is not None and config.loss_type not in ("sigmoid", "robust", "hinge"):
        raise ValueError(f"a loss term shifts the margin, which the {config.loss_type!r} loss does not have")
    if config.loss_type in ("sigmoid", "robust", "hinge", "ipo"):
        if config.loss_type == "ipo":  # IPO works on length-averaged log-probs
            losses, _, _ = dpo_loss(pc / nc, pr / nr, ref_c / nc, ref_r / nr, beta=config.beta, loss_type="ipo")
            rc_, rr_ = implicit_rewards(pc, ref_c, config.beta), implicit_rewards(pr, ref_r, config.beta)
        else:
            losses, rc_, rr_ = dpo_loss(
                pc, pr, ref_c, ref_r, beta=config.beta, loss_type=config.loss_type,
                label_smoothing=config.smoothing, preference_prob=prefs, margin_offset=margin,
            )
    elif config.loss_type == "kto":
        # each pair gives one desirable (chosen) and one undesirable (rejected) response; the KL reference point
        # is the batch's mean policy/reference log-ratio on its own answers (clamped at 0, not trained). The KTO paper
        # and TRL's KTOTrainer estimate it on mismatched prompt-answer pairs (an answer under another pair's prompt),
        # which costs a forward pass more a step: this is a matched-sample variant (losses.kto_kl_estimate takes
        # mismatched log-probs, for a caller that has them), said so where the loss is offered (config.HELP)
        policy = torch.cat([pc, pr])
        ref = torch.cat([ref_c, ref_r])
        desirable = torch.cat([torch.ones_like(pc, dtype=torch.bool), torch.zeros_like(pr, dtype=torch.bool)])
        kl = (policy - ref).mean().clamp(min=0).detach()
        losses, rewards = kto_loss(
            policy, ref, desirable, kl, beta=config.beta, desirable_weight=config.kto_desirable_weight,
            undesirable_weight=config.kto_undesirable_weight,
        )
        rc_, rr_ = rewards.chunk(2)
    elif config.loss_type == "rrhf":
        avg = torch.stack([pc / nc, pr / nr], dim=1)
        scores = torch.tensor([[1.0, 0.0]], device=avg.device).expand_as(avg)
        losses = rrhf_loss(avg, scores, nll_loss(pc, nc))
        rc_, rr_ = implicit_rewards(pc, ref_c, config.beta), implicit_rewards(pr, ref_r, config.beta)
    else:
        raise ValueError(f"unknown loss_type {config.loss_type!r}")
    loss = losses.mean()
    if term_log is not None:  # the preference loss alone (ln 2 at the start for the sigmoid losses), and RPO's part
        term_log["loss/preference"] = term_log.get("loss/preference", 0.0) + float(loss.detach())
    if config.rpo_alpha > 0:
        nll = config.rpo_alpha * nll_loss(pc, nc).mean()
        loss = loss + nll
        if term_log is not None:
            term_log["loss/nll"] = term_log.get("loss/nll", 0.0) + float(nll.detach())
    for term_loss in extra:
        loss = loss + term_loss
    return loss, rc_, rr_


def train_dpo(
    config: DPOConfig,
    model_dir: str | Path,
    pairs: list[PreferencePair],
    out_dir: str | Path,
    *,
    reference_dir: str | Path | None = None,
    on_step: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    allowed_terms: Collection[str] = (),
    on_stage: StageCallback | None = None,
) -> TrainResult:
    """Train the policy in model_dir on pairs with config's loss and save it (or its LoRA adapter) into out_dir.

    `allowed_terms`: loss-term names config.loss_terms may use besides the built-in ones (training/dpo/terms.py).
    `on_stage`: told the work before the first DPO step (the reference log-probs batch by batch, the SFT warm start
    step by step) in the main process, so a long warm start is not a bar that stands still.
    Freed memory stays in the process while the run lasts (prefcore/memory.py: no page faults on each step's
    buffers) and what is free is given back when it ends."""
    with retain_freed_memory():
        return _train_dpo(config, model_dir, pairs, out_dir, reference_dir=reference_dir, on_step=on_step,
                          should_stop=should_stop, allowed_terms=allowed_terms, on_stage=on_stage)


def dpo_steps(n_pairs: int, world: int, config: DPOConfig) -> int:
    """Optimiser steps of the DPO loop over n_pairs kept pairs shared by `world` processes (as _train_loop counts)."""
    batches_per_epoch = math.ceil((n_pairs // world) / config.batch_size)
    return math.ceil(batches_per_epoch / config.grad_accum) * config.epochs


def _train_dpo(config, model_dir, pairs, out_dir, *, reference_dir, on_step, should_stop, allowed_terms,
               on_stage=None) -> TrainResult:
    config.validate()
    start = time.perf_counter()
    if not pairs:
        raise ValueError("train_dpo: no pairs to train on")
    terms = terms_for(config, allowed_terms)
    dist = _Dist()
    device = dist.device
    dtype = resolve_dtype(config, device)
    random.seed(config.seed)
    torch.manual_seed(config.seed)

    tokenizer = load_tokenizer(model_dir)
    pad_id = _pad_id(tokenizer)
    rows = tokenize_pairs(tokenizer, pairs, config)
    truncated = sum(r.truncated for r in rows)
    keep = [i for i, r in enumerate(rows) if r.chosen_ids and r.rejected_ids and r.chosen_ids != r.rejected_ids]
    scorable = [i for i, r in enumerate(rows) if r.chosen_ids and r.rejected_ids]
    if not keep:
        raise ValueError("train_dpo: every pair was dropped (empty or identical chosen and rejected after truncation)")

    # this rank's share of the reference work and of the training batches
    mine = scorable[dist.rank :: dist.world]
    reference: dict[int, tuple[float, float]] = {
        i: (p.ref_chosen_logp, p.ref_rejected_logp) for i, p in enumerate(pairs) if p.has_reference
    }
    missing = [i for i in mine if i not in reference]
    steps = dpo_steps(len(keep), dist.world, config)
    _check_trainable(pairs, keep, dist.world, steps, config)
    tell = on_stage if dist.is_main else None

    if reference_dir is not None and Path(reference_dir).resolve() == Path(model_dir).resolve():
        # the starting model is its own reference (a training round of the base version, whose reference is the base):
        # its log-probs are the policy's before any step, as without a reference, with one model loaded, not two
        reference_dir = None

    def reference_batch(done: int, total: int) -> None:
        if tell:
            tell(REFERENCE_STAGE, done, total, steps)

    if missing and reference_dir is not None:
        check_same_tokenizer(model_dir, tokenizer, reference_dir)
        ref_model = load_model(reference_dir, device)
        reference.update(
            _reference_logps_for(PairLogps(ref_model), rows, missing, config, device, dtype, pad_id, should_stop,
                                 reference_batch)
        )
        del ref_model
        gc.collect()
        missing = []

    # LoRA's optimiser writes only its adapters; but DDP (accelerate launch) writes every weight once, in place, as it
    # broadcasts rank 0's at its start
    model = load_model(model_dir, device, trained=not config.lora or dist.accelerator is not None)
    if config.lora:
        model = _apply_lora(model, config)
    elif dist.world == 1:
        _tied_embedding_rows_in_place(model)
    scorer = PairLogps(model)

    # The first optimiser step's pairs meet the starting weights in that step's own forward, which gives their
    # reference log-probs bit for bit (the same model, the same batches, the same code; no pass of their own then),
    # where the reference is the starting model as the policy runs it: no --reference, no adapters, no warm start
    # before the steps, one process (ranks share the reference work, not the steps' batches)
    first_step: set[int] = set()
    if missing and reference_dir is None and not config.lora and not config.sft_warmup_epochs and dist.world == 1:
        first_step = set(_first_step_rows(rows, keep, config)) & set(missing)
        missing = [i for i in missing if i not in first_step]

    if missing:
        # the reference is the starting model, before any SFT warm start (as --model's help says): it was the warmed
        # model without LoRA and the starting one with it; with a fresh LoRA adapter it is the model with adapters off
        adapters_off = model.disable_adapter() if config.lora else contextlib.nullcontext()
        with adapters_off:
            reference.update(_reference_logps_for(scorer, rows, missing, config, device, dtype, pad_id, should_stop,
                                                  reference_batch))

    # wrapped for DDP once, for the warm start and the DPO steps alike: the warm start ran on each rank's bare model,
    # its gradients never averaged, and DDP then broadcast rank 0's weights over the others' work
    model_for_steps = dist.accelerator.prepare(scorer) if dist.accelerator else scorer
    if config.sft_warmup_epochs:
        _sft_warmup(scorer, model_for_steps, rows, keep, config, device, dtype, pad_id, dist, should_stop,
                    (lambda done, total: tell(SFT_STAGE, done, total, steps)) if tell else None)

    gathered = dist.gather([(i, reference[i]) for i in mine if i in reference])
    reference.update(dict(gathered))

    result = _train_loop(scorer, model_for_steps, rows, keep, reference, pairs, config, device, dtype, pad_id, dist,
                         on_step, should_stop, terms, first_step)

    if dist.is_main:
        # the optimiser's state and the steps' buffers are free now: given back before the checkpoint is written, they
        # are the pages its page cache takes (writing 538 MB of SmolLM2-135M took 1.3-1.6 s on a 2-core AMX Xeon
        # with them kept, 0.8 s plus 0.14 s of giving back without: the fresh pages cost a fault in a virtual machine)
        give_back_free()
        save_whole(model, tokenizer, Path(out_dir))
    if dist.accelerator:
        dist.accelerator.wait_for_everyone()

    seconds = time.perf_counter() - start
    result.seconds = seconds
    result.pairs_per_s = result.pairs * config.epochs / seconds
    result.peak_rss_mb = peak_rss_mb()
    result.truncated = truncated
    result.truncated_pairs = [r.truncated for r in rows]
    result.dropped = len(pairs) - result.pairs
    result.reference_logps = [reference.get(i, (math.nan, math.nan)) for i in range(len(pairs))]
    return result


MARKS = ("config.json", "adapter_config.json")  # what makes a folder read as a model (or an adapter): moved in last


def save_whole(model, tokenizer, out: Path) -> None:
    """The model written whole or not at all: into a hidden folder inside `out`, whose files are then moved up,
    config.json (adapter_config.json) last, so `out` reads as a model only once every file is in it. Written in
    place, a save stopped part way (Ctrl-C, a full disk) left a folder that looked like a model and was not one.
    Inside `out`, not beside it: `out` may be a mount point or a link to a folder (a rename onto either fails), and
    a part-written save stays where whoever cleans up `out` (the training service's sweep) finds it."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    try:
        model.save_pretrained(str(partial), safe_serialization=True)
        tokenizer.save_pretrained(str(partial))
        for path in sorted(partial.iterdir(), key=lambda p: p.name in MARKS):
            os.replace(path, out / path.name)
        partial.rmdir()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if made and not any((out / mark).exists() for mark in MARKS):
            shutil.rmtree(out, ignore_errors=True)  # the folder this save made, holding no model
        raise


def _check_trainable(pairs: list[PreferencePair], keep: list[int], world: int, steps: int, config: DPOConfig) -> None:
    """Refuse, before any model is loaded, a run that would train nothing or train its labels as other labels.

    Each process trains an equal share of the kept pairs (DDP needs the same steps on every rank): with fewer pairs
    than processes the share is 0, no step runs, and the unchanged model would be saved as the round's version.
    A label probability below 1 (a soft or "slight" label) is read by the sigmoid and robust losses only; the others
    would train it as a sure label without a word (dpo_loss refuses it for them too)."""
    if len(keep) < world or steps == 0:
        dropped = len(pairs) - len(keep)
        raise ValueError(
            f"train_dpo: {len(keep)} usable pair(s)" + (f" ({dropped} of {len(pairs)} dropped)" if dropped else "")
            + f" for {world} training processes: each process trains an equal share, so with fewer pairs than "
            "processes no step would run and the unchanged model would be saved; label more pairs or train in "
            "fewer processes")
    if config.loss_type not in SMOOTHED_LOSSES:
        soft = sum(1 for i in keep if pairs[i].preference_prob is not None and pairs[i].preference_prob < 1)
        if soft:
            raise ValueError(
                f"train_dpo: {soft} of the {len(keep)} pairs carry a label probability below 1 (preference_prob: "
                f"soft or 'slight' labels), which the {config.loss_type!r} loss cannot use and would train as sure "
                f"labels: only the {' and '.join(SMOOTHED_LOSSES)} losses use it; choose one of those, or give "
                "those pairs sure labels")


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """Scale the gradients so that their joint L2 norm is at most `max_norm` (0: no clipping); returns the norm
    before scaling, as torch.nn.utils.clip_grad_norm_ does. The norm is summed from one dot product per tensor, in
    fp64 across tensors: on a 2-core CPU this took half the time of clip_grad_norm_ (whose per-tensor norm kernel
    was the slowest part of it) and it is the more exact of the two. A norm that is not finite scales nothing (the
    caller stops on it)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    squares = torch.stack([torch.dot(g.reshape(-1), g.reshape(-1)).to(torch.float64) for g in grads])
    norm = float(squares.sum().sqrt())
    if max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads:
            g.mul_(scale)
    return norm


def _check_finite(where: str, loss: float, grad_norm: float) -> None:
    """Stop before an optimiser step takes a loss or gradient that is not a finite number (every rank sees the
    same all-reduced gradient, so all stop together)."""
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise TrainingDiverged(
            f"{where}: the loss is {loss} and the gradient norm {grad_norm}, not finite numbers; nothing was saved "
            "(check the pairs' label probabilities and the settings: a smaller learning rate, or a bounded loss)")


# Whether a one-process full fine-tune of a model whose input embedding is its head (tied, as SmolLM2's) adds the
# embedding's gradient rows into the weight's gradient in place (tests compare it with autograd's dense gradient).
TIED_ROWS_IN_PLACE = True


class _RowsIntoGrad(torch.autograd.Function):
    """An embedding lookup whose backward adds its rows into the weight's .grad in place, outside autograd's sum.

    forward(ids, anchor, embedding): the rows of embedding.weight at ids. `anchor`, an empty leaf that requires grad,
    is the only input autograd sees (the output must require grad); the weight is no input, so its gradient node
    waits on the head alone and accumulates the head's gradient as soon as it is made (autograd runs a ready
    accumulation first), before the embedding's backward, the last of the step."""

    @staticmethod
    def forward(ctx, ids, anchor, embedding):
        ctx.save_for_backward(ids)
        ctx.embedding = embedding
        return torch.nn.functional.embedding(ids, embedding.weight.detach(), embedding.padding_idx)

    @staticmethod
    def backward(ctx, grad):
        (ids,) = ctx.saved_tensors
        weight, padding = ctx.embedding.weight, ctx.embedding.padding_idx
        ids, rows = ids.reshape(-1), grad.reshape(-1, grad.shape[-1])
        if padding is not None:  # the padding row's gradient is zero, as nn.Embedding's backward gives it
            keep = ids != padding
            ids, rows = ids[keep], rows[keep]
        if weight.grad is None:  # the head's gradient not accumulated yet (not autograd's order today): made here
            weight.grad = torch.zeros_like(weight)
        weight.grad.index_add_(0, ids, rows.to(weight.grad.dtype))
        return None, None, None


def _tied_embedding_rows_in_place(model) -> None:
    """The embedding's backward made a dense vocabulary x hidden gradient (zeros but for the batch's tokens, 113 MB
    for SmolLM2-135M in fp32) that autograd then added to the head's gradient of the same tied weight, a step's
    largest elementwise pass (80-120 ms on AMX, bench/dpo_throughput.py's longest batch). Taken as sparse rows
    (d375681), autograd still summed the two gradients into a dense copy of the head's (torch 2.13 adds a sparse
    gradient that arrives after a dense one into a copy, not in place). Now the embedding's rows are added in place
    into the weight's gradient (_RowsIntoGrad), which by then holds the head's: no vocabulary x hidden tensor is
    made or copied for the embedding; the same up to the order of fp32 additions. Only where the head shares the
    weight (the weight's gradient is then dense for the optimiser and the clipping) and the embedding is a plain
    lookup (no max_norm, no scaling by frequency). On the CPU only, where it was measured (on CUDA index_add_ adds
    with atomics, in no fixed order, where the dense backward's sum is repeatable). Not under DDP (its hooks wait on
    the weight's accumulation) or LoRA."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if (TIED_ROWS_IN_PLACE and type(embedding) is torch.nn.Embedding and head is not None
            and embedding.weight is head.weight and embedding.weight.requires_grad and embedding.max_norm is None
            and not embedding.scale_grad_by_freq and not embedding.sparse and embedding.weight.device.type == "cpu"):
        anchor = torch.empty(0, requires_grad=True)
        # the module held weakly: a forward stored on the module that held it was a cycle, and kept the tied weight
        # (vocabulary x hidden) alive past the run until the collector's next full pass
        module = weakref.ref(embedding)
        embedding.forward = lambda ids: _RowsIntoGrad.apply(ids, anchor, module())


def _sft_warmup(scorer, model, rows, keep, config, device, dtype, pad_id, dist, should_stop, on_step=None) -> None:
    """Warm start: maximise the chosen responses' likelihood for sft_warmup_epochs (no SFT model needed), through
    `model` (the scorer, or its DDP wrapper: each rank an equal share, its gradients averaged over the ranks).
    `on_step(done, total)`: told before each step (done of total, over every epoch) and once after the last."""
    params = [p for p in scorer.parameters() if p.requires_grad]
    optimizer = adamw(params, config)
    share = len(keep) // dist.world  # every rank the same number of steps, as DDP needs
    mine = keep[dist.rank :: dist.world][:share]
    per_epoch = math.ceil(len(mine) / config.batch_size)
    total, done = per_epoch * config.sft_warmup_epochs, 0
    for epoch in range(config.sft_warmup_epochs):
        for batch in length_grouped_batches([rows[i].length for i in mine], config.batch_size, config.seed + epoch):
            if should_stop and should_stop():
                raise TrainingCancelled("stopped during the SFT warm start")
            if on_step:
                on_step(done, total)
            done += 1
            pb = build_pair_batch([rows[mine[b]].row() for b in batch], pad_id).to(device)
            with _autocast(device, dtype):
                logps = model(pb)
            pc, _ = logps.chunk(2)
            nc, _ = pb.token_counts.chunk(2)
            loss = nll_loss(pc, nc).mean()
            loss.backward()
            grad_norm = clip_gradients(params, config.max_grad_norm)
            _check_finite("the SFT warm start", float(loss.detach()), grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    if on_step:
        on_step(done, total)
    del optimizer
    gc.collect()


def _first_step_rows(rows: list[TokenizedPair], keep: list[int], config: DPOConfig) -> list[int]:
    """The rows the first optimiser step of a one-process run trains on (its first grad_accum batches), as
    _train_loop draws them."""
    batches = length_grouped_batches([rows[i].length for i in keep], config.batch_size, config.seed)
    return [keep[b] for batch in batches[: config.grad_accum] for b in batch]


def _train_loop(scorer, model, rows, keep, reference, pairs, config, device, dtype, pad_id, dist, on_step,
                should_stop, terms=(), first_step: Collection[int] = ()):
    """The DPO steps. `reference` holds each row's reference log-probs but those of `first_step`, the first step's
    rows, whose reference is that step's own forward (the starting weights): it is taken there and added to
    `reference`."""
    # DDP needs the same number of steps on every rank: each takes an equal share (the remainder is not trained)
    share = len(keep) // dist.world
    mine = keep[dist.rank :: dist.world][:share]
    lengths = [rows[i].length for i in mine]
    total_steps = dpo_steps(len(keep), dist.world, config)
    warmup = math.ceil(config.warmup_ratio * total_steps)

    params = [p for p in scorer.parameters() if p.requires_grad]
    optimizer = adamw(params, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, config.lr_schedule)
    )
    use_prefs = config.loss_type in SMOOTHED_LOSSES and any(pairs[i].preference_prob is not None for i in keep)

    step, losses, metrics = 0, [], {}
    for epoch in range(config.epochs):
        batches = length_grouped_batches(lengths, config.batch_size, config.seed + epoch)
        for first in range(0, len(batches), config.grad_accum):
            if should_stop and should_stop():
                raise TrainingCancelled(f"stopped at step {step} of {total_steps}")
            t0 = time.perf_counter()
            group = batches[first : first + config.grad_accum]
            sums = torch.zeros(8, dtype=torch.float64)
            term_log: dict[str, float] = {}
            tokens = 0
            # each batch weighs by its pairs: the step's loss and metrics are the mean over all the group's pairs, as
            # one batch of their size (a batch's loss is its pairs' mean, so a short last batch counted each of its
            # pairs more)
            group_pairs = sum(len(batch) for batch in group)
            for batch in group:
                weight = len(batch) / group_pairs
                idx = [mine[b] for b in batch]
                pb = build_pair_batch([rows[i].row() for i in idx], pad_id).to(device)
                tokens += pb.tokens
                prefs = None
                if use_prefs:
                    prefs = torch.tensor([noisy_target(pairs[i].preference_prob, config.smoothing) for i in idx],
                                         device=device)
                with _autocast(device, dtype):
                    logps = model(pb)
                logps = logps.float()
                if step == 0 and first_step:
                    own = logps.detach().cpu()
                    for k, i in enumerate(idx):
                        if i in first_step:
                            reference[i] = (float(own[k]), float(own[len(idx) + k]))
                ref_c = torch.tensor([reference[i][0] for i in idx], device=device)
                ref_r = torch.tensor([reference[i][1] for i in idx], device=device)
                flags = ([pairs[i].chosen_flags for i in idx], [pairs[i].rejected_flags for i in idx]) if terms else None
                batch_log: dict[str, float] = {}
                loss, rc, rr = _pair_loss(config, logps, pb.token_counts.to(device), ref_c, ref_r, prefs,
                                          terms, flags, batch_log)
                (loss * weight).backward()
                for name, value in batch_log.items():
                    term_log[name] = term_log.get(name, 0.0) + weight * value
                pc, pr = logps.detach().chunk(2)
                sums += weight * torch.tensor([
                    float(loss.detach()), float(rc.mean()), float(rr.mean()), float((rc > rr).float().mean()),
                    float((rc - rr).mean()), float(pc.mean()), float(pr.mean()),
                    float(((rc + rr) / (2 * config.beta)).mean()),
                ], dtype=torch.float64)
            grad_norm = clip_gradients(params, config.max_grad_norm)
            avg = dist.mean(sums)
            _check_finite(f"step {step + 1} of {total_steps}", float(avg[0]), grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(float(avg[0]))
            seconds = time.perf_counter() - t0
            names = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin",
                     "logps/chosen", "logps/rejected", "logratio/mean")
            metrics = {name: float(v) for name, v in zip(names, avg, strict=True)}
            # the pairs this optimiser step learnt from, over its batches and processes (ranks hold equal shares)
            metrics["step_pairs"] = float(sum(len(batch) for batch in group) * dist.world)
            metrics.update(term_log)  # this rank's
            metrics.update(
                grad_norm=grad_norm, lr=lr, tokens_per_s=tokens * dist.world / seconds,
                epoch=epoch + (first + len(group)) / len(batches),
            )
            if on_step and dist.is_main:
                on_step(step, total_steps, metrics)
    return TrainResult(
        pairs=share * dist.world, steps=step, mean_loss=sum(losses) / max(1, len(losses)), seconds=0.0, pairs_per_s=0.0,
        peak_rss_mb=0.0, final_metrics=metrics,
    )
