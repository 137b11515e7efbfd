"""A lean forward pass for Llama-family models (Llama, Mistral, Qwen2/3) over a preallocated per-slot KV cache.

Each slot holds one sequence at its own length, so a finished slot can take the next prompt at once (continuous
batching). Decoding calls a few fused ops per layer on the model's own weights (q/k/v and gate/up fused into one
matrix each) and computes logits for the last position only; the numbers match the transformers forward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3")
# RoPE types whose rotation is a fixed function of the position, so one table of cos/sin serves every sequence.
# "dynamic" (NTK) and "longrope" choose every position's frequencies from the length of the sequence in hand (and
# rewrite the model's rotary module when asked for a longer one): those models run on the generic engine.
STATIC_ROPE_TYPES = ("default", "linear", "yarn", "llama3")


def supports(model) -> bool:
    """Whether `model` is a plain Llama-family causal LM this decoder reproduces exactly."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in SUPPORTED_TYPES:
        return False
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return False
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return False
    return getattr(inner.rotary_emb, "rope_type", "default") in STATIC_ROPE_TYPES


def sliding_window(model) -> int | None:
    """The model's sliding attention window (a query sees itself and the window - 1 positions before it), or None.
    This decoder attends to whole sequences: it reproduces such a model while no query sees more than the window."""
    config = model.config
    return getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None


class _Layer:
    __slots__ = ("ln1", "qkv", "o", "ln2", "gate_up", "down", "q_norm", "k_norm")


def _mkldnn_ok(device, dtype) -> bool:
    return (
        torch.device(device).type == "cpu" and dtype in (torch.float32, torch.bfloat16)
        and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class _Linear:
    """y = x W^T + b, with W prepacked by oneDNN on CPU (about 10% faster than F.linear at batch 32 alone, and much
    less hurt when other processes share the cores); plain F.linear elsewhere."""

    __slots__ = ("weight", "bias", "packed")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, rows_hint: int, pack: bool):
        self.weight, self.bias, self.packed = weight, bias, None
        if pack:
            try:
                packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint)
                probe = torch.randn(2, weight.shape[1], dtype=weight.dtype)
                want = F.linear(probe, weight, bias)
                got = torch.ops.mkldnn._linear_pointwise(probe, packed, bias, "none", [], "")
                if torch.allclose(got.float(), want.float(), rtol=1e-2, atol=1e-3):
                    self.packed, self.weight = packed, None
            except (RuntimeError, NotImplementedError):
                self.packed = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def _cat_bias(*linears):
    if all(lin.bias is None for lin in linears):
        return None
    return torch.cat([lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features) for lin in linears])


def cache_bytes_per_slot(model, max_len: int) -> int:
    """Bytes of `SlotDecoder`'s KV cache per slot of `max_len` positions for `model`: keys and values of every layer."""
    config = model.config
    heads = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    itemsize = next(model.parameters()).element_size()
    return config.num_hidden_layers * 2 * n_kv * max_len * head_dim * itemsize


class SlotDecoder:
    """The model's weights, rearranged for decoding, and a KV cache of `slots` x `max_len` positions."""

    def __init__(self, model, slots: int, max_len: int):
        if not supports(model):
            raise ValueError(f"{type(model).__name__} is not a Llama-family model this decoder supports")
        config = model.config
        inner = model.model
        self.device = model.device
        self.dtype = next(model.parameters()).dtype
        self.n_heads = config.num_attention_heads
        self.n_kv = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.hidden = config.hidden_size
        self.eps = config.rms_norm_eps
        self.scale = self.head_dim**-0.5
        self.window = sliding_window(model)  # checked per call against the positions used, not the cache's length
        pack = _mkldnn_ok(self.device, self.dtype)

        def linear(weight, bias=None):
            return _Linear(weight, bias, slots, pack)

        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        self.layers = []
        with torch.no_grad():
            self.lm_head = linear(model.lm_head.weight, getattr(model.lm_head, "bias", None))
            for block in inner.layers:
                att, mlp = block.self_attn, block.mlp
                layer = _Layer()
                layer.ln1 = block.input_layernorm.weight
                layer.qkv = linear(torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]),
                                   _cat_bias(att.q_proj, att.k_proj, att.v_proj))
                layer.o = linear(att.o_proj.weight, att.o_proj.bias)
                layer.ln2 = block.post_attention_layernorm.weight
                layer.gate_up = linear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
                                       _cat_bias(mlp.gate_proj, mlp.up_proj))
                layer.down = linear(mlp.down_proj.weight, mlp.down_proj.bias)
                layer.q_norm = att.q_norm.weight if hasattr(att, "q_norm") else None
                layer.k_norm = att.k_norm.weight if hasattr(att, "k_norm") else None
                self.layers.append(layer)
            positions = torch.arange(max_len, device=self.device)[None]
            probe = torch.zeros(1, dtype=self.dtype, device=self.device)
            cos, sin = inner.rotary_emb(probe, positions)
        half = self.head_dim // 2
        self.cos = cos[0].to(self.dtype)  # [max_len, head_dim]
        # rotate_half(x) * sin == roll(x, half) * signed_sin, one op fewer per rotation
        self.sin = torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1).to(self.dtype)
        self.slots, self.max_len = slots, max_len
        # Keys and values of a layer in one tensor [slots, 2, kv_heads, max_len, hd]: one write per layer and step.
        shape = (slots, 2, self.n_kv, max_len, self.head_dim)
        self.cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]

    # -- pieces -----------------------------------------------------------------------------------------------

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * xf.to(x.dtype)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x * cos, torch.roll(x, self.head_dim // 2, dims=-1), sin)

    def _qkv(self, layer: _Layer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """h [T, hidden] -> q [T, heads, hd], k and v [T, kv_heads, hd], rotated."""
        qkv = layer.qkv(h).unflatten(-1, (self.n_heads + 2 * self.n_kv, self.head_dim))
        qk, v = qkv[:, : self.n_heads + self.n_kv], qkv[:, self.n_heads + self.n_kv:]
        if layer.q_norm is None:
            qk = self._rope(qk, cos, sin)  # queries and keys rotated together
        else:
            q, k = self._rms(qk[:, : self.n_heads], layer.q_norm), self._rms(qk[:, self.n_heads:], layer.k_norm)
            qk = self._rope(torch.cat([q, k], dim=1), cos, sin)
        return qk[:, : self.n_heads], qk[:, self.n_heads:], v

    def _mlp(self, layer: _Layer, x: torch.Tensor) -> torch.Tensor:
        h = self._rms(x, layer.ln2)
        gate, up = layer.gate_up(h).chunk(2, dim=-1)
        return x + layer.down(F.silu(gate) * up)

    def _check_window(self, span: int) -> None:
        """Refuse a query that sees `span` positions where the model's sliding window would hide the oldest."""
        if self.window is not None and span > self.window:
            raise ValueError(f"a query over {span} positions passes the sliding-window attention ({self.window}), "
                             "which this decoder does not apply")

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self._rms(h, self.norm)).float()

    # -- prefill and decode -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]]) -> list[tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]]:
        """Run several prompts packed into one matrix (so the projections see many rows at once); returns per
        prompt its K/V per layer ([kv_heads, T, hd] each) and the last position's logits [V]."""
        lengths = [len(p) for p in prompts]
        for n in lengths:
            if n + 1 > self.max_len:
                raise ValueError(f"prompt of {n} tokens does not fit the cache of {self.max_len}")
            self._check_window(n)
        flat = torch.tensor([t for p in prompts for t in p], device=self.device)
        positions = torch.cat([torch.arange(n, device=self.device) for n in lengths])
        starts = [sum(lengths[:i]) for i in range(len(lengths))]
        x = F.embedding(flat, self.embed)  # [S, hidden], S = all prompts' tokens
        cos, sin = self.cos[positions][:, None, :], self.sin[positions][:, None, :]
        kv: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in prompts]
        gqa = self.n_kv != self.n_heads
        for layer in self.layers:
            q, k, v = self._qkv(layer, self._rms(x, layer.ln1), cos, sin)  # [S, heads, hd], [S, kv, hd]
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # [heads, S, hd]
            parts = []
            for i, (s0, n) in enumerate(zip(starts, lengths, strict=True)):
                ki, vi = k[:, s0:s0 + n], v[:, s0:s0 + n]
                kv[i].append((ki, vi))
                parts.append(F.scaled_dot_product_attention(
                    q[None, :, s0:s0 + n], ki[None], vi[None], is_causal=True, scale=self.scale, enable_gqa=gqa
                )[0])
            att = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # [heads, S, hd]
            x = x + layer.o(att.transpose(0, 1).reshape(x.shape[0], -1))
            x = self._mlp(layer, x)
        last = torch.tensor([s0 + n - 1 for s0, n in zip(starts, lengths, strict=True)], device=self.device)
        logits = self.logits(x[last])
        return [(kv[i], logits[i]) for i in range(len(prompts))]

    def load(self, slot: int, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copy a prefilled prompt's K/V into a slot (positions 0..T-1)."""
        n = kv[0][0].shape[1]
        for (k, v), cache in zip(kv, self.cache, strict=True):
            cache[slot, 0, :, :n] = k
            cache[slot, 1, :, :n] = v

    def compact_one(self, source: int, target: int, length: int) -> None:
        """Move the first `length` cached positions of slot `source` into slot `target`."""
        for cache in self.cache:
            cache[target, :, :, :length] = cache[source, :, :, :length]

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Decode one token for slots 0..B-1: tokens [B] at positions [B]; returns logits [B, V] (float32)."""
        b = tokens.shape[0]
        span = int(positions.max()) + 1
        self._check_window(span)
        rows = torch.arange(b, device=self.device)
        x = F.embedding(tokens, self.embed)  # [B, hidden]
        cos, sin = self.cos[positions][:, None, :], self.sin[positions][:, None, :]
        mask = (torch.arange(span, device=self.device)[None, :] <= positions[:, None])[:, None, None, :]
        group = self.n_heads // self.n_kv
        for layer, cache in zip(self.layers, self.cache, strict=True):
            q, k, v = self._qkv(layer, self._rms(x, layer.ln1), cos, sin)  # [B, heads, hd], [B, kv, hd]
            cache[rows, :, :, positions] = torch.stack([k, v], dim=1)
            # One query position per row: fold the query heads of a group into the "time" axis, so the grouped
            # keys and values are used as they are, without being repeated per head.
            att = F.scaled_dot_product_attention(
                q.reshape(b, self.n_kv, group, self.head_dim), cache[:b, 0, :, :span], cache[:b, 1, :, :span],
                attn_mask=mask,
                scale=self.scale,
            )
            x = x + layer.o(att.reshape(b, -1))
            x = self._mlp(layer, x)
        return self.logits(x)
