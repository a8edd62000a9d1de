"""Language-modelling losses: next-token prediction (causal, LSTM) and masked-token prediction (MLM)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from speechlm.models.lm import LanguageModel, SpecialTokens, mask_tokens
from speechlm.objectives import LossOutput


def next_token_loss(model: LanguageModel, tokens: torch.Tensor, lens: torch.Tensor) -> LossOutput:
    """Mean cross-entropy of tokens ``1..L-1`` given their prefixes; ``(B, L)`` ids, ``(B,)`` lengths."""
    out = model(tokens[:, :-1], (lens - 1).clamp(min=0))
    targets = tokens[:, 1:].masked_fill(torch.arange(tokens.shape[1] - 1, device=tokens.device)[None] >= (lens - 1)[:, None], -100)
    n = int((targets != -100).sum())
    loss = F.cross_entropy(out.logits.float().reshape(-1, out.logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum")
    return LossOutput(loss / max(n, 1), n)


def masked_lm_loss(model: LanguageModel, tokens: torch.Tensor, lens: torch.Tensor, special: SpecialTokens) -> LossOutput:
    """Mean cross-entropy on the masked tokens only (BERT); reports their top-1 accuracy."""
    inputs, targets = mask_tokens(tokens, lens, special, model.cfg.mlm_prob)
    return masked_token_loss(model(inputs, lens).logits, targets)


def masked_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> LossOutput:
    """Mean cross-entropy of ``(B, T, V)`` scores at the positions where ``targets`` is not -100; top-1 accuracy."""
    picked = targets != -100
    n = int(picked.sum())
    logits = logits[picked].float()
    loss = F.cross_entropy(logits, targets[picked], reduction="sum")
    acc = (logits.argmax(-1) == targets[picked]).float().mean().item() if n else 0.0
    return LossOutput(loss / max(n, 1), n, {"masked_acc": acc})

