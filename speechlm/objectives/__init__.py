"""Training objectives. Each returns a :class:`LossOutput`."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to minimize: a mean over ``num_tokens`` units
    num_tokens: int  # units the loss is averaged over (target tokens, masked frames); weights ranks under DDP
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # logged alongside the loss (e.g. accuracy)
