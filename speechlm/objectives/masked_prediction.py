"""Masked prediction loss (HuBERT / BEST-RQ): cross-entropy on masked frames only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from speechlm.models.speech_ssl import MaskedPredictionOutput
from speechlm.objectives import LossOutput


def masked_prediction_loss(out: MaskedPredictionOutput) -> LossOutput:
    """Mean cross-entropy over masked valid frames and codebooks; reports top-1 accuracy.

    logits ``(B, T', K, C)``, targets ``(B, T', K)``, mask ``(B, T')``.
    """
    logits = out.logits[out.mask].float()  # (N, K, C)
    targets = out.targets[out.mask]  # (N, K)
    n = logits.shape[0]
    if n == 0:
        zero = out.logits.sum() * 0.0  # keeps the graph: every rank must run backward
        return LossOutput(zero, 0, {"masked_acc": 0.0})
    C = logits.shape[-1]
    loss = F.cross_entropy(logits.reshape(-1, C), targets.reshape(-1))
    with torch.no_grad():
        acc = (logits.argmax(-1) == targets).float().mean().item()
    return LossOutput(loss, n, {"masked_acc": acc})
