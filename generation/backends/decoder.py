"""A lean forward pass for Llama-family models (Llama, Mistral, Qwen2/3) over a preallocated per-slot KV cache.

Each slot holds one sequence at its own length, so a finished slot can take the next prompt at once (continuous
batching). Decoding calls a few fused ops per layer on the model's own weights (q/k/v and gate/up fused into one
matrix each) and computes logits for the last position only; the numbers match the transformers forward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def supports(model) -> bool:
    """Whether `model` is a plain Llama-family causal LM this decoder reproduces exactly."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in SUPPORTED_TYPES:
        return False
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return False
    inner = getattr(model, "model", None)
    return inner is not None and hasattr(inner, "layers") and hasattr(inner, "rotary_emb")


class _Layer:
    __slots__ = ("ln1", "qkv_w", "qkv_b", "o_w", "o_b", "ln2", "gu_w", "gu_b", "down_w", "down_b", "q_norm", "k_norm")


def _cat_bias(*linears):
    if all(lin.bias is None for lin in linears):
        return None
    return torch.cat([lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features) for lin in linears])


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
        window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
        if window is not None and window < max_len:
            raise ValueError(f"sliding-window attention ({window}) shorter than the sequences ({max_len})")
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        self.lm_head = model.lm_head.weight
        self.lm_head_b = getattr(model.lm_head, "bias", None)
        self.layers = []
        with torch.no_grad():
            for block in inner.layers:
                att, mlp = block.self_attn, block.mlp
                layer = _Layer()
                layer.ln1 = block.input_layernorm.weight
                layer.qkv_w = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).contiguous()
                layer.qkv_b = _cat_bias(att.q_proj, att.k_proj, att.v_proj)
                layer.o_w, layer.o_b = att.o_proj.weight, att.o_proj.bias
                layer.ln2 = block.post_attention_layernorm.weight
                layer.gu_w = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).contiguous()
                layer.gu_b = _cat_bias(mlp.gate_proj, mlp.up_proj)
                layer.down_w, layer.down_b = mlp.down_proj.weight, mlp.down_proj.bias
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
        qkv = F.linear(h, layer.qkv_w, layer.qkv_b).unflatten(-1, (self.n_heads + 2 * self.n_kv, self.head_dim))
        qk, v = qkv[:, : self.n_heads + self.n_kv], qkv[:, self.n_heads + self.n_kv:]
        if layer.q_norm is None:
            qk = self._rope(qk, cos, sin)  # queries and keys rotated together
        else:
            q, k = self._rms(qk[:, : self.n_heads], layer.q_norm), self._rms(qk[:, self.n_heads:], layer.k_norm)
            qk = self._rope(torch.cat([q, k], dim=1), cos, sin)
        return qk[:, : self.n_heads], qk[:, self.n_heads:], v

    def _mlp(self, layer: _Layer, x: torch.Tensor) -> torch.Tensor:
        h = self._rms(x, layer.ln2)
        gu = F.linear(h, layer.gu_w, layer.gu_b)
        gate, up = gu.chunk(2, dim=-1)
        return x + F.linear(F.silu(gate) * up, layer.down_w, layer.down_b)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self._rms(h, self.norm), self.lm_head, self.lm_head_b).float()

    # -- prefill and decode -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, token_ids: list[int]) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Run one prompt; returns its K/V per layer ([kv_heads, T, hd] each) and the last position's logits [V]."""
        n = len(token_ids)
        if n + 1 > self.max_len:
            raise ValueError(f"prompt of {n} tokens does not fit the cache of {self.max_len}")
        x = F.embedding(torch.tensor(token_ids, device=self.device), self.embed)  # [T, hidden]
        cos, sin = self.cos[:n, None, :], self.sin[:n, None, :]
        kv = []
        for layer in self.layers:
            q, k, v = self._qkv(layer, self._rms(x, layer.ln1), cos, sin)  # [T, heads, hd]
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # [heads, T, hd]
            kv.append((k, v))
            att = F.scaled_dot_product_attention(
                q[None], k[None], v[None], is_causal=True, scale=self.scale, enable_gqa=self.n_kv != self.n_heads
            )[0]
            x = x + F.linear(att.transpose(0, 1).reshape(n, -1), layer.o_w, layer.o_b)
            x = self._mlp(layer, x)
        return kv, self.logits(x[-1])

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
            x = x + F.linear(att.reshape(b, -1), layer.o_w, layer.o_b)
            x = self._mlp(layer, x)
        return self.logits(x)
