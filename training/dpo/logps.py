"""Sequence log-probs of chosen and rejected responses, summed over response tokens only.

A pair is laid out as one row `[prompt | chosen | rejected]`: the rejected tokens attend to the prompt and to
themselves but never to the chosen tokens, and their positions restart where the prompt ends, so the row gives
exactly the log-probs of two separate sequences while the prompt is encoded once. The lm_head and log-softmax run
in chunks over the response positions only, so the full [batch, length, vocab] logits are never built. On the CPU
a batch of such rows runs packed, its rows one after another without padding, under the trainer's own attention
(pair_attention); on a GPU, padded under the model's own.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import threading
from dataclasses import dataclass

import torch
from torch import nn

LOGIT_CHUNK = 512  # response positions per lm_head chunk: 512 x 49152 fp32 logits = 100 MB
# Logits a training forward keeps for backward (in the compute dtype), where the backward recomputed them: a
# [tokens, vocabulary] product, about a twentieth of a step on SmolLM2-135M. Over this, they are recomputed.
KEPT_LOGITS_BYTES = 512 * 2**20


@dataclass
class PairBatch:
    """A padded batch of `[prompt | chosen | rejected]` rows and where each response token is predicted from.

    input_ids, position_ids: [B, L]; attention_mask: [B, 1, L, L] bool (True = may attend);
    predictor_index: [N] flat index (row * L + position) of the hidden state that predicts each response token;
    target_ids: [N]; sequence_index: [N] in [0, 2B): chosen of pair i is i, rejected of pair i is B + i;
    token_counts: [2B] response tokens per sequence (chosen first, then rejected).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    predictor_index: torch.Tensor
    target_ids: torch.Tensor
    sequence_index: torch.Tensor
    token_counts: torch.Tensor
    row_tokens: torch.Tensor  # [B] each row's real tokens (prompt + chosen + rejected)

    @property
    def pairs(self) -> int:
        return self.input_ids.shape[0]

    @property
    def tokens(self) -> int:
        """Real (unpadded) tokens in the batch: each row's prompt, chosen and rejected tokens (the mask's diagonal
        counted padding too, which attends to itself, and so overstated tokens_per_s)."""
        return int(self.row_tokens.sum())

    def to(self, device) -> PairBatch:
        return PairBatch(**{k: v.to(device) for k, v in self.__dict__.items()})


def build_pair_batch(rows: list[tuple[list[int], list[int], list[int]]], pad_token_id: int = 0) -> PairBatch:
    """Lay out (prompt_ids, chosen_ids, rejected_ids) triples as a PairBatch; every response needs >= 1 token."""
    b = len(rows)
    length = max(len(p) + len(c) + len(r) for p, c, r in rows)
    input_ids = torch.full((b, length), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((b, length), dtype=torch.long)
    mask = torch.zeros((b, 1, length, length), dtype=torch.bool)
    predictors, targets, sequences, counts = [], [], [], [0] * (2 * b)
    causal = torch.ones((length, length), dtype=torch.bool).tril()
    for i, (p, c, r) in enumerate(rows):
        n_p, n_c, n_r = len(p), len(c), len(r)
        if n_p < 1 or n_c < 1 or n_r < 1:
            raise ValueError(f"pair {i}: prompt, chosen and rejected need at least one token each")
        n = n_p + n_c + n_r
        input_ids[i, :n] = torch.tensor(p + c + r)
        position_ids[i, :n] = torch.cat([torch.arange(n_p + n_c), torch.arange(n_p, n_p + n_r)])
        # padding rows attend to themselves only, so no softmax row is empty
        position_ids[i, n:] = torch.arange(n, length)
        mask[i, 0] = causal
        mask[i, 0, n_p + n_c : n, n_p : n_p + n_c] = False  # rejected never sees chosen
        mask[i, 0, n:, :] = False
        mask[i, 0, :, n:] = False
        mask[i, 0, range(n, length), range(n, length)] = True
        base = i * length
        chosen_pred = [n_p - 1] + list(range(n_p, n_p + n_c - 1))
        rejected_pred = [n_p - 1] + list(range(n_p + n_c, n - 1))
        predictors += [base + k for k in chosen_pred + rejected_pred]
        targets += c + r
        sequences += [i] * n_c + [b + i] * n_r
        counts[i], counts[b + i] = n_c, n_r
    return PairBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=mask,
        predictor_index=torch.tensor(predictors, dtype=torch.long),
        target_ids=torch.tensor(targets, dtype=torch.long),
        sequence_index=torch.tensor(sequences, dtype=torch.long),
        token_counts=torch.tensor(counts, dtype=torch.long),
        row_tokens=torch.tensor([len(p) + len(c) + len(r) for p, c, r in rows], dtype=torch.long),
    )


class _TokenLogps(torch.autograd.Function):
    """log softmax(hidden @ weight.T)[target] per row, in chunks. Backward reads each chunk's logits as forward made
    them when `keep` (kept in the compute dtype, so the same values), else recomputes them."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, keep):
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        w = weight.to(hidden.dtype)
        kept = torch.empty((hidden.shape[0], w.shape[0]), dtype=hidden.dtype, device=hidden.device) if keep else None
        for s in range(0, hidden.shape[0], chunk):
            product = hidden[s : s + chunk] @ w.T
            if kept is not None:
                kept[s : s + chunk] = product
            logits = product.float()
            del product
            lse[s : s + chunk] = torch.logsumexp(logits, dim=-1)
            out[s : s + chunk] = logits.gather(1, targets[s : s + chunk, None])[:, 0] - lse[s : s + chunk]
        # the head's weight in the compute dtype is kept for backward rather than cast again there (a 49152 x 576
        # head: 113 MB read and 57 MB written, about 40 ms of a step on AMX); in fp32 it is weight itself
        ctx.save_for_backward(hidden, weight, w, targets, lse, *(() if kept is None else (kept,)))
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, w, targets, lse, *kept = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        # the weight gradient is accumulated over chunks in fp32 (fp64 for an fp64 weight); each chunk's product is
        # taken in the compute dtype, as autocast takes every other layer's weight gradient
        acc_dtype = torch.promote_types(weight.dtype, torch.float32)
        grad_weight = None
        for s in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[s : s + ctx.chunk]
            g = grad_out[s : s + ctx.chunk].float()
            # d logp_t / d logits = onehot(t) - softmax; scaled by the upstream gradient of each row (in place: these
            # are chunk x vocabulary tensors, the largest of the step)
            # a copy of what is kept (an fp32 one, .float() would hand back itself, and a second backward read the
            # first's leftovers)
            d = kept[0][s : s + ctx.chunk].to(torch.float32, copy=True) if kept else (h @ w.T).float()
            d.sub_(lse[s : s + ctx.chunk, None]).exp_().mul_(-g[:, None])
            d.scatter_add_(1, targets[s : s + ctx.chunk, None], g[:, None])
            d = d.to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[s : s + ctx.chunk] = d @ w
            if ctx.needs_input_grad[1]:
                part = d.T @ h
                grad_weight = part.to(acc_dtype) if grad_weight is None else grad_weight.add_(part)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def token_logps(hidden: torch.Tensor, lm_head: nn.Module, targets: torch.Tensor, chunk: int = LOGIT_CHUNK) -> torch.Tensor:
    """Log-prob of each target under the lm_head. hidden: [N, H], targets: [N] -> [N] float32.

    Under autocast the head's product runs in autocast's dtype, as autocast runs any other Linear (and TRL's head):
    the hidden states reach it in fp32 (the residual stream is fp32 with fp32 master weights), and an fp32 head made
    a bf16 training step about 12% slower on AMX. The log-softmax is taken in fp32 either way."""
    device_type = hidden.device.type
    if hidden.dtype == torch.float32 and torch.is_autocast_enabled(device_type):  # autocast leaves fp64 alone
        hidden = hidden.to(torch.get_autocast_dtype(device_type))
    if getattr(lm_head, "bias", None) is not None:
        logits = lm_head(hidden).float()
        return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
    weight = lm_head.weight
    keep = (torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
            and hidden.shape[0] * weight.shape[0] * hidden.element_size() <= KEPT_LOGITS_BYTES)
    return _TokenLogps.apply(hidden, weight, targets, chunk, keep)


# What the CPU's own attention may keep for the backward pass, over all layers, counted as eager attention keeps it:
# its softmax output (fp32) and the probabilities cast for the product (bf16 or fp32), B x heads x L x L each per
# layer (pair_attention keeps one such tensor, in the compute dtype). Under it, a CPU batch runs pair_attention (or
# eager); over it, SDPA, whose flash kernel keeps no L x L matrix. bench/attention.py: on the CPU, in bf16, eager took
# 10-15% less time a training step than SDPA at every length of the benchmark's pairs (L 73-417), in fp32 and without
# gradients 2-9% less; on a GPU SDPA's kernels are the fast ones, and it keeps them.
EAGER_ATTENTION_BYTES = 2 * 2**30

PAIR_ATTENTION = "prefloop_pairs"
# Architectures whose attention, once queries and keys are projected, normed and rotated, is softmax(q k^T * scaling
# + mask) v and nothing more: pair_attention computes exactly that. Others (Gemma's logit soft-capping, attention
# sinks) keep transformers' own eager attention.
PLAIN_ATTENTION = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def _compute_dtype(device: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype autocast computes a product of `dtype` tensors in: its own, except that it leaves fp64 alone."""
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) and dtype != torch.float64 else dtype


def sliding_window(config) -> int | None:
    """The sliding window of a model whose layers (some or all) attend only to the last `window` positions, from its
    config (Mistral's sliding_window; Qwen's with use_sliding_window, on the layers layer_types names so); None when
    every layer attends to all positions."""
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0 or getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    return window


def _check_window(config, batch: PairBatch) -> None:
    """ValueError for a padded batch that reaches past the model's sliding window: its 4D layout mask is passed as
    given, so transformers adds no window to it, and its far tokens would see positions the model never does (the
    packed path applies the window itself)."""
    window = sliding_window(config)
    if window is None:
        return
    rows = batch.row_tokens.tolist()
    furthest = max(int(batch.position_ids[i, :n].max()) for i, n in enumerate(rows))
    if furthest >= window:
        raise ValueError(f"a pair reaches position {furthest}, past the model's sliding window of {window} "
                         f"positions, which the trainer applies only on the CPU under its own attention: cut pairs "
                         f"to a max_length of at most {window} tokens")


class PairSegments:
    """The pairs of one packed row, for pair_attention: each pair's (start, end) in the row, its additive
    [1, 1, n, n] layout mask and its tokens' positions in the layout (a sliding window counts distances in them).
    `calls` counts the attention calls that read them, so a forward can tell that its model's attention did (a model
    that ignored them would attend across pairs)."""

    def __init__(self, bounds: list[tuple[int, int]], masks: list[torch.Tensor], positions: list[torch.Tensor]):
        self.bounds, self.masks, self.positions, self.calls = bounds, masks, positions, 0


def _attend(query, key, value, mask, scaling, dtype):
    """softmax(q k^T * scaling + mask) v in `dtype`, a group of query heads reading its key and value head in place.
    query [B, heads, L, D], key and value [B, kv heads, L, D], mask [B, 1, L, L] additive -> [B, heads, L, D]."""
    rows, heads, length, width = query.shape
    kv_heads = key.shape[1]
    q = (query * scaling).to(dtype).reshape(rows, kv_heads, heads // kv_heads * length, width)
    scores = torch.matmul(q, key.to(dtype).transpose(-1, -2))
    scores = scores.view(rows, kv_heads, heads // kv_heads, length, -1).add_(mask.to(dtype).unsqueeze(2))
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs.view(rows, kv_heads, heads // kv_heads * length, -1), value.to(dtype)).view(
        rows, heads, length, width)


def pair_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, pair_segments=None, **kwargs):
    """Eager attention for the pair layout on the CPU, as transformers' AttentionInterface calls it: the same
    softmax(q k^T * scaling + mask) v in the compute dtype (autocast's, else the inputs'), with three savings over
    transformers' eager one. The additive mask is in that dtype, so adding it makes no fp32 copy of the scores (eager
    adds an fp32 mask to bf16 scores); the softmax is taken in it (the CPU's kernel computes in fp32 inside and rounds
    once: 31 of 6.3M bf16 probabilities one unit in the last place apart from an fp32 softmax rounded), so backward
    keeps one heads x L x L tensor per pair and layer where eager kept an fp32 one and its bf16 copy; and a group of
    query heads reads its shared key and value heads in place (no repeat_kv copies).

    `pair_segments` (PairSegments): the batch packed into one row without padding (PairLogps.hidden), each pair
    attending within its own segment under its own mask; `attention_mask`, whatever transformers built for the
    packed row, is not read. A call without the segments is refused: the trainer runs this attention only on a
    packed batch, and a row it has not laid out would attend across its pairs."""
    if dropout or kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        raise ValueError("pair_attention computes plain softmax attention: no dropout, soft-capping or sinks")
    if pair_segments is None:
        raise RuntimeError(f"{type(module).__name__} called the trainer's pair attention without the packed pairs' "
                           "segments (PairLogps passes them with each packed batch; a model that does not pass its "
                           "keyword arguments on to the attention drops them), so the pairs would attend across each "
                           "other; load it with attn_implementation='eager'")
    pair_segments.calls += 1
    device = query.device.type
    dtype = _compute_dtype(device, query.dtype)
    with torch.autocast(device, enabled=False):
        window = kwargs.get("sliding_window")  # this layer's (Mistral's, Qwen's): none for a full-attention one
        masks = pair_segments.masks
        if window is not None:  # as transformers' rule: a query sees the keys less than `window` positions back
            masks = [m.masked_fill((p[:, None] - p[None, :] >= window)[None, None], torch.finfo(m.dtype).min)
                     for m, p in zip(masks, pair_segments.positions, strict=True)]
        out = torch.cat([_attend(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], mask, scaling, dtype)
                         for (a, b), mask in zip(pair_segments.bounds, masks, strict=True)], dim=2)
    return out.transpose(1, 2).contiguous(), None


@functools.cache
def _registered() -> str:
    """PAIR_ATTENTION, registered with transformers on first use (importing its modelling code at import time cost
    every process that imports the trainer, the web's included, its start-up)."""
    from transformers import AttentionInterface

    AttentionInterface.register(PAIR_ATTENTION, pair_attention)
    return PAIR_ATTENTION


def attention_for(model: nn.Module, batch: PairBatch) -> str:
    """The attention implementation a batch runs with: the model's own, except that a model loaded with SDPA runs
    pair_attention (eager attention for an architecture outside PLAIN_ATTENTION) on the CPU when what it keeps fits
    EAGER_ATTENTION_BYTES. Decided on the batch's shape alone, with or without gradients, so the reference pass and
    a training step take the same for the same batch."""
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    if implementation != "sdpa" or batch.input_ids.device.type != "cpu":
        return implementation
    heads, layers = getattr(model.config, "num_attention_heads", None), getattr(model.config, "num_hidden_layers", None)
    if not isinstance(heads, int) or not isinstance(layers, int):
        return implementation
    rows, length = batch.input_ids.shape
    if rows * heads * length * length * 6 * layers > EAGER_ATTENTION_BYTES:
        return implementation
    return _registered() if getattr(model.config, "model_type", None) in PLAIN_ATTENTION else "eager"


# Held by every forward on the CPU, where a model's attention may be switched (attention_for): transformers reads the
# setting at each layer's call, so a forward in another thread that chose SDPA (and passed SDPA's bool mask) ran its
# layers as eager while one thread had switched it, adding the mask as 1 and 0. CPU forwards use every core anyway.
_SWITCHING = threading.RLock()


@contextlib.contextmanager
def _attention(model: nn.Module, batch: PairBatch):
    """Yields the attention the batch runs with (attention_for), the model set to it while inside (transformers
    reads the setting at each layer's call); on the CPU, chosen and run under _SWITCHING."""
    if batch.input_ids.device.type != "cpu":  # never switched there
        yield attention_for(model, batch)
        return
    with _SWITCHING:
        before = model.config._attn_implementation
        implementation = attention_for(model, batch)
        if implementation == before:
            yield implementation
            return
        model.config._attn_implementation = implementation
        try:
            yield implementation
        finally:
            model.config._attn_implementation = before


def attention_mask_for(implementation: str, mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The pair layout's [B, 1, L, L] mask (True = may attend) as the attention takes a 4D mask as given: SDPA reads
    a bool mask so, but eager attention adds the mask to the scores, and a bool mask added as 1 and 0 let the
    rejected answer see the chosen one (an architecture without SDPA, or a config asking for eager, trained on wrong
    log-probs without a word). Eager gets 0 where a position may attend and the most negative fp32 number where not,
    pair_attention the same in `dtype`, the compute dtype; an attention that takes no such mask (flash attention 2
    reads a 2D padding mask) is refused, naming it."""
    if implementation == "sdpa":
        return mask
    if implementation in ("eager", PAIR_ATTENTION):
        dtype = torch.float32 if implementation == "eager" else dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
    raise ValueError(f"the model's attention implementation is {implementation!r}: the trainer lays a pair out as "
                     "one row with a 4D attention mask, which only 'sdpa' and 'eager' attention read; load the model "
                     "with attn_implementation='sdpa' (set it in its config.json)")


class PairLogps(nn.Module):
    """Wraps a causal LM so one forward returns summed response log-probs [2B] (chosen then rejected).

    Being an nn.Module whose forward does all the work, it can be wrapped by DDP / FSDP (accelerate.prepare).
    """

    def __init__(self, model: nn.Module, chunk: int = LOGIT_CHUNK):
        super().__init__()
        self.model = model
        self.chunk = chunk

    def causal_lm(self) -> nn.Module:
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    def forward(self, batch: PairBatch) -> torch.Tensor:
        per_token = self.token_logps(batch)
        sums = torch.zeros(batch.token_counts.shape[0], dtype=per_token.dtype, device=per_token.device)
        return sums.index_add(0, batch.sequence_index, per_token)

    def hidden(self, batch: PairBatch) -> torch.Tensor:
        """The last hidden state at each position that predicts a response token [N, H], in batch.target_ids order.

        Under pair_attention the batch runs packed: its rows' real tokens one after another in a single row, each pair
        attending within its own segment, so no layer computes over padding (a tenth of the tokens of the
        benchmark's length-grouped batches of 4: bench/dpo_throughput.py)."""
        lm = self.causal_lm()
        backbone = getattr(lm, lm.base_model_prefix)
        device = batch.input_ids.device.type
        dtype = _compute_dtype(device, lm.dtype)
        with _attention(lm, batch) as implementation:
            if implementation == PAIR_ATTENTION:
                return self._packed_hidden(backbone, batch, dtype)
            _check_window(lm.config, batch)
            hidden = backbone(
                input_ids=batch.input_ids,
                attention_mask=attention_mask_for(implementation, batch.attention_mask, dtype),
                position_ids=batch.position_ids,
                use_cache=False,
            ).last_hidden_state
        return hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.predictor_index)

    @staticmethod
    def _packed_hidden(backbone: nn.Module, batch: PairBatch, dtype: torch.dtype) -> torch.Tensor:
        length = batch.input_ids.shape[1]
        counts = batch.row_tokens.tolist()
        starts = list(itertools.accumulate(counts, initial=0))[:-1]  # where each row's tokens begin in the packed row
        device = batch.input_ids.device
        real = torch.cat([torch.arange(n, device=device) + i * length for i, n in enumerate(counts)])
        segments = PairSegments(
            [(a, a + n) for a, n in zip(starts, counts, strict=True)],
            [attention_mask_for(PAIR_ATTENTION, batch.attention_mask[i : i + 1, :, :n, :n], dtype)
             for i, n in enumerate(counts)],
            [batch.position_ids[i, :n] for i, n in enumerate(counts)])
        hidden = backbone(
            input_ids=batch.input_ids.reshape(-1)[real][None],
            attention_mask=None,
            position_ids=batch.position_ids.reshape(-1)[real][None],
            use_cache=False,
            pair_segments=segments,
        ).last_hidden_state[0]
        if not segments.calls:
            raise RuntimeError(f"{type(backbone).__name__} did not run its attention through transformers' attention "
                               "interface, so the packed pairs would attend across each other; load it with "
                               "attn_implementation='eager'")
        # a predictor's flat index in the padded batch (row * length + position) -> its index in the packed row
        row = torch.div(batch.predictor_index, length, rounding_mode="floor")
        offsets = torch.tensor(starts, dtype=torch.long, device=device)
        return hidden.index_select(0, offsets[row] + batch.predictor_index - row * length)

    def token_logps(self, batch: PairBatch) -> torch.Tensor:
        """Log-prob of each response token [N], in the order of batch.target_ids (sequence_index says whose)."""
        return token_logps(self.hidden(batch), self.causal_lm().get_output_embeddings(), batch.target_ids, self.chunk)


KL_CHUNK = 256  # positions per chunk of position_kl: two models' 256 x 49152 fp32 log-probs, about 50 MB each


@torch.no_grad()
def position_kl(policy: PairLogps, reference: PairLogps, batch: PairBatch, chunk: int = KL_CHUNK) -> torch.Tensor:
    """KL(pi || pi_ref) over the whole vocabulary at each response token's position [N] (fp32, never negative), in
    batch.target_ids order: sum_v pi(v | c) (log pi(v | c) - log pi_ref(v | c)), c the prompt and the response so far.

    Summed over an answer's positions it is the answer's KL by the chain rule when the answer was drawn from pi
    itself; on answers drawn with a temperature or top-p, as the product's are, it is the KL of the next-token
    distributions along those answers. Either way nothing is left to chance at the position itself. The estimates that read only the
    drawn token (k1: log pi - log pi_ref, k3 of their ratio) are noisy where this is not: k1 goes negative when
    answers are drawn with a temperature or top-p, and one token the reference finds far likelier than the policy
    does can make k3 read millions of nats (a round's did: about 2e6 nats an answer)."""
    heads = (policy.causal_lm().get_output_embeddings(), reference.causal_lm().get_output_embeddings())
    if heads[0].weight.shape[0] != heads[1].weight.shape[0]:
        raise ValueError(f"the model has {heads[0].weight.shape[0]} tokens and its reference "
                         f"{heads[1].weight.shape[0]}: the two must share a tokenizer")
    hp, hr = policy.hidden(batch), reference.hidden(batch)
    out = []
    for start in range(0, hp.shape[0], chunk):
        lp = torch.log_softmax(heads[0](hp[start:start + chunk]).float(), dim=-1)
        lq = torch.log_softmax(heads[1](hr[start:start + chunk]).float(), dim=-1)
        out.append((lp.exp() * (lp - lq)).sum(-1).clamp_min_(0.0))  # >= 0 up to rounding: clamp that away
    return torch.cat(out) if out else hp.new_zeros(0, dtype=torch.float32)


@torch.no_grad()
def plain_sequence_logps(model: nn.Module, prompt_ids: list[int], response_ids: list[int]) -> float:
    """The slow obvious computation, for tests: full logits of prompt + response, summed over the response."""
    ids = torch.tensor([prompt_ids + response_ids])
    logits = model(input_ids=ids).logits.double()
    logp = torch.log_softmax(logits[0, :-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return float(logp[len(prompt_ids) - 1 :].sum())
