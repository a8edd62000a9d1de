"""Connectionist temporal classification loss (Graves et al., 2006)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from speechlm.data.tokenizer import BLANK_ID
from speechlm.objectives import LossOutput


def ctc_loss(logits: torch.Tensor, lens: torch.Tensor, targets: torch.Tensor, target_lens: torch.Tensor) -> LossOutput:
    """Sum of per-utterance CTC losses divided by the number of target tokens.

    logits: ``(B, T, V)``; lens: ``(B,)`` frames; targets: ``(B, L)``; target_lens: ``(B,)``.
    Utterances too short for their transcript contribute zero instead of infinity.
    """
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
    loss = F.ctc_loss(log_probs, targets, lens, target_lens, blank=BLANK_ID, reduction="sum", zero_infinity=True)
    n = int(target_lens.sum())
    return LossOutput(loss / max(n, 1), n)
