"""Utterance classification on a speech encoder: keywords, digits, spoken intent.

waveform -> features -> encoder -> (last layer, or a learned weighted sum of every block as in
SUPERB) -> pooling over valid frames (mean, or attentive: a learned score per frame) -> MLP ->
class logits.

>>> import torch
>>> from speechlm.features import FeatureConfig, SpecAugmentConfig
>>> from speechlm.models.encoders import EncoderConfig
>>> enc = EncoderConfig(d_model=32, n_layers=2, n_heads=2, conv_kernel=3)
>>> clf = SpeechClassifier(FeatureConfig(), SpecAugmentConfig(), enc, HeadConfig(layer_weights=True), num_classes=5)
>>> out = clf(torch.randn(3, 16000), torch.tensor([16000, 8000, 4000]))
>>> tuple(out.logits.shape), tuple(out.embedding.shape)
((3, 5), (3, 32))
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from speechlm.features import CorpusNorm, FeatureConfig, SpecAugment, SpecAugmentConfig, compute_features
from speechlm.models.encoders import EncoderConfig, build_encoder, padding_mask
from speechlm.models.lm import LanguageModel, LMConfig

POOLINGS = ("mean", "attentive")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    pooling: str = "attentive"  # "mean" over valid frames, or "attentive" (softmax of a learned per-frame score)
    layer_weights: bool = False  # pool a learned softmax-weighted sum of every encoder block (SUPERB) instead of the output
    hidden: int = 256  # hidden units of the MLP on the pooled vector; 0 = a single linear layer
    dropout: float = 0.1  # dropout on the pooled vector

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"head.pooling must be one of {POOLINGS}, got {self.pooling!r}")


@dataclasses.dataclass
class ClassifierOutput:
    logits: torch.Tensor  # (B, C) class scores
    embedding: torch.Tensor  # (B, D) pooled utterance vector


class PoolingHead(nn.Module):
    """``(B, T, D)`` frames with ``(B,)`` lengths (or every layer's frames) -> ``(B, C)`` logits."""

    def __init__(self, cfg: HeadConfig, d_model: int, n_layers: int, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.layer_logits = nn.Parameter(torch.zeros(n_layers)) if cfg.layer_weights else None
        self.score = nn.Linear(d_model, 1) if cfg.pooling == "attentive" else None
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.hidden:
            self.mlp = nn.Sequential(nn.Linear(d_model, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, num_classes))
        else:
            self.mlp = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor, layers: tuple[torch.Tensor, ...] = ()) -> ClassifierOutput:
        if self.layer_logits is not None:
            if len(layers) != self.layer_logits.numel():
                raise ValueError(f"head expects {self.layer_logits.numel()} encoder layers, got {len(layers)}")
            w = self.layer_logits.softmax(0)
            x = torch.einsum("l,lbtd->btd", w, torch.stack(layers))  # (B, T, D)
        mask = padding_mask(x_lens.clamp(min=1), x.shape[1]).unsqueeze(-1)  # (B, T, 1); an empty clip pools its first frame
        if self.score is not None:
            scores = self.score(x).masked_fill(~mask, float("-inf"))  # (B, T, 1)
            pooled = (scores.softmax(1) * x).sum(1)  # (B, D)
        else:
            pooled = (x * mask).sum(1) / mask.sum(1)
        return ClassifierOutput(self.mlp(self.dropout(pooled)), pooled)


class SpeechClassifier(nn.Module):
    def __init__(self, features: FeatureConfig, spec_augment: SpecAugmentConfig, encoder: EncoderConfig, head: HeadConfig, num_classes: int):
        super().__init__()
        self.features = features
        self.corpus_norm = CorpusNorm(features.dim) if features.corpus_norm else None
        self.spec_augment = SpecAugment(spec_augment, spectral=features.spectral)
        self.encoder = build_encoder(encoder, features.dim)
        self.head = PoolingHead(head, encoder.d_model, encoder.n_layers, num_classes)

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> ClassifierOutput:
        """audio: ``(B, N)`` samples at 16 kHz; audio_lens: ``(B,)`` samples."""
        with torch.no_grad(), torch.autocast(audio.device.type, enabled=False):
            warp = self.spec_augment.mel_warp_factors(audio.shape[0], self.features, audio.device)  # MFCC in training only
            feats, feat_lens = compute_features(audio.float(), audio_lens, self.features, warp)  # (B, T, D)
            if self.corpus_norm is not None:
                feats = self.corpus_norm(feats, feat_lens)
            feats = self.spec_augment(feats, feat_lens)
        enc = self.encoder(feats, feat_lens)
        return self.head(enc.x, enc.x_lens, enc.hidden_states)


class TextClassifier(nn.Module):
    """A language model (masked, causal or LSTM) read as a text encoder: final hidden states ->
    pooling over valid tokens -> MLP -> class logits (the BERT-classifier recipe)."""

    def __init__(self, lm: LMConfig, vocab_size: int, head: HeadConfig, num_classes: int):
        super().__init__()
        if head.layer_weights:
            raise ValueError("head.layer_weights pools encoder blocks of a speech model; a text classifier pools the LM's output")
        self.lm = LanguageModel(lm, vocab_size)
        self.head = PoolingHead(head, lm.d_model, lm.n_layers, num_classes)

    def forward(self, tokens: torch.Tensor, lens: torch.Tensor) -> ClassifierOutput:
        """tokens: ``(B, T)`` ids, right-padded; lens: ``(B,)`` valid tokens."""
        return self.head(self.lm(tokens, lens).hidden, lens)
