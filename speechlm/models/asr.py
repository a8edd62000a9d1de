"""The CTC speech recognizer: waveform -> features -> encoder -> per-frame token logits.

Features are computed inside the model with :func:`speechlm.features.compute_features`, so
training, evaluation and serving share one path from samples to logits.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from speechlm.features import FeatureConfig, SpecAugment, SpecAugmentConfig, compute_features
from speechlm.models.encoders import EncoderConfig, build_encoder


@dataclasses.dataclass
class CTCOutput:
    logits: torch.Tensor  # (B, T', V) unnormalized token scores, blank = 0
    lens: torch.Tensor  # (B,) valid frames


class SpeechRecognizer(nn.Module):
    def __init__(self, features: FeatureConfig, spec_augment: SpecAugmentConfig, encoder: EncoderConfig, vocab_size: int):
        super().__init__()
        self.features = features
        self.spec_augment = SpecAugment(spec_augment, spectral=features.spectral)
        self.encoder = build_encoder(encoder, features.dim)
        self.head = nn.Sequential(nn.Dropout(encoder.dropout), nn.Linear(encoder.d_model, vocab_size))

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> CTCOutput:
        """audio: ``(B, N)`` samples at 16 kHz; audio_lens: ``(B,)`` samples."""
        with torch.no_grad(), torch.autocast(audio.device.type, enabled=False):
            warp = self.spec_augment.mel_warp_factors(audio.shape[0], self.features, audio.device)  # MFCC in training only
            feats, feat_lens = compute_features(audio.float(), audio_lens, self.features, warp)  # (B, T, D)
            feats = self.spec_augment(feats, feat_lens)
        enc = self.encoder(feats, feat_lens)
        return CTCOutput(self.head(enc.x), enc.x_lens)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
