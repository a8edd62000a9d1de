"""Text language models: a decoder-only Transformer (the project's "LLM"), a masked LM and an LSTM LM.

All three read token ids from the project's tokenizer plus three special ids appended after
its vocabulary (:func:`special_tokens`): padding is id 0 (the CTC blank, never a real token),
then BOS, EOS and MASK.

* ``causal``: pre-norm Transformer blocks, rotary positions, causal self-attention with a
  key/value cache for generation, tied input/output embeddings.
* ``mlm``: the same blocks attending both ways (BERT-style masked LM); the encoder of text.
* ``lstm``: stacked LSTMs with tied embeddings; its recurrent state is its cache.

>>> import torch
>>> lm = LanguageModel(LMConfig(d_model=32, n_layers=2, n_heads=2), vocab_size=20)
>>> out = lm(torch.randint(1, 20, (2, 7)))
>>> tuple(out.logits.shape), len(out.cache)
((2, 7, 20), 2)
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from speechlm.models.encoders import FeedForward, rotary

LM_ARCHS = ("causal", "mlm", "lstm")
PAD_ID = 0


@dataclasses.dataclass(frozen=True)
class LMConfig:
    arch: str = "causal"  # "causal" (decoder-only Transformer), "mlm" (bidirectional, masked LM) or "lstm"
    d_model: int = 256  # width of every layer (LSTM: hidden size)
    n_layers: int = 4  # Transformer blocks / stacked LSTM layers
    n_heads: int = 4  # attention heads
    ff_mult: int = 4  # feed-forward hidden size = ff_mult * d_model
    context: int = 128  # tokens per training sequence; longer text is scored with a sliding window
    dropout: float = 0.1  # dropout on residual branches and embeddings
    tie_embeddings: bool = True  # output projection shares the input embedding matrix
    mlm_prob: float = 0.15  # masked LM: fraction of tokens predicted (80 % [MASK], 10 % random, 10 % kept)

    def __post_init__(self):
        if self.arch not in LM_ARCHS:
            raise ValueError(f"lm.arch must be one of {LM_ARCHS}, got {self.arch!r}")
        if self.arch != "lstm" and self.d_model % self.n_heads:
            raise ValueError(f"lm.d_model ({self.d_model}) must be divisible by lm.n_heads ({self.n_heads})")
        if self.context < 2:
            raise ValueError(f"lm.context must be >= 2, got {self.context}")


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    bos: int
    eos: int
    mask: int
    vocab_size: int  # tokenizer vocabulary + the three specials


def special_tokens(tokenizer_vocab_size: int) -> SpecialTokens:
    v = tokenizer_vocab_size
    return SpecialTokens(bos=v, eos=v + 1, mask=v + 2, vocab_size=v + 3)


@dataclasses.dataclass
class LMOutput:
    logits: torch.Tensor  # (B, T, V) next-token scores (causal, lstm) or token scores (mlm)
    cache: list  # per layer: (k, v) of shape (B, H, T_total, Dh) for Transformers, (h, c) for the LSTM
    hidden: torch.Tensor  # (B, T, d_model) final hidden states (before the output projection)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions; causal with an optional key/value cache."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.n_heads, self.causal = cfg.n_heads, cfg.arch == "causal"
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, cache: tuple | None) -> tuple[torch.Tensor, tuple]:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)  # (B, H, T, Dh) each
        past = 0 if cache is None else cache[0].shape[2]
        q, k = rotary(q, past), rotary(k, past)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)  # (B, H, past + T, Dh)
        if self.causal:
            # query t sees keys 0 .. past + t
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            if key_mask is not None:
                mask = mask[None, None] & key_mask[:, None, None, :]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if key_mask is None else key_mask[:, None, None, :])
        return self.proj(y.transpose(1, 2).reshape(B, T, D)), (k, v)


class LMBlock(nn.Module):
    """Pre-norm: x + Attn(LN(x)), then x + FF(LN(x))."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ff = FeedForward(cfg)  # LN -> Linear -> SiLU -> Linear -> Dropout
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, cache: tuple | None) -> tuple[torch.Tensor, tuple]:
        y, cache = self.attn(self.attn_norm(x), key_mask, cache)
        x = x + self.dropout(y)
        return x + self.ff(x), cache


class LanguageModel(nn.Module):
    """Token embedding -> Transformer blocks (or LSTMs) -> final norm -> output projection."""

    def __init__(self, cfg: LMConfig, vocab_size: int):
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.arch == "lstm":
            self.lstm = nn.LSTM(cfg.d_model, cfg.d_model, cfg.n_layers, batch_first=True, dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)
        else:
            self.blocks = nn.ModuleList(LMBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.out.weight = self.embed.weight

    def forward(
        self, tokens: torch.Tensor, lens: torch.Tensor | None = None, cache: list | None = None, embeds: torch.Tensor | None = None
    ) -> LMOutput:
        """tokens: ``(B, T)`` ids; lens: ``(B,)`` valid tokens (right padding); cache: from a previous call.

        ``embeds`` ``(B, T, d_model)``, when given, replaces the token embeddings (a speech
        prefix projected into the LM's space).
        """
        x = self.embed(tokens) if embeds is None else embeds  # (B, T, D)
        x = self.dropout(x)
        B, T, _ = x.shape
        key_mask = None
        if lens is not None:
            past = 0 if not cache else _cache_len(cache, self.cfg.arch)
            key_mask = torch.arange(past + T, device=x.device)[None, :] < (past + lens)[:, None]  # (B, past + T)
        if self.cfg.arch == "lstm":
            state = None if not cache else cache[0]
            x, state = self.lstm(x, state)
            new_cache = [state]
        else:
            new_cache = []
            for i, blk in enumerate(self.blocks):
                x, c = blk(x, key_mask, None if not cache else cache[i])
                new_cache.append(c)
        h = self.norm(x)
        return LMOutput(self.out(h), new_cache, h)


def _cache_len(cache: list, arch: str) -> int:
    return 0 if arch == "lstm" else cache[0][0].shape[2]


def mask_tokens(tokens: torch.Tensor, lens: torch.Tensor, special: SpecialTokens, prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of ``(B, T)`` ids: returns (inputs, targets) with targets ``-100`` where not predicted."""
    valid = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lens[:, None]) & (tokens < special.bos)
    chosen = (torch.rand(tokens.shape, device=tokens.device) < prob) & valid
    # at least one prediction per sequence with a real token
    first = valid.float().argmax(1)
    has = valid.any(1)
    chosen[torch.arange(tokens.shape[0])[has], first[has]] |= ~chosen[has].any(1)
    targets = torch.where(chosen, tokens, torch.full_like(tokens, -100))
    r = torch.rand(tokens.shape, device=tokens.device)
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(tokens, special.mask), tokens)
    random_ids = torch.randint(1, special.bos, tokens.shape, device=tokens.device)
    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), random_ids, inputs)
    return inputs, targets
