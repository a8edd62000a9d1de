"""Joint speech-text pretraining: one encoder learns from unlabeled audio, paired audio and plain text.

The speech encoder's lower blocks read speech only; its top ``shared_layers`` blocks also read
text, embedded one vector per character, as in SLAM / mSLAM (Bapna et al., 2021, 2022). Three
objectives train it together:

* masked prediction (BEST-RQ or k-means targets) on every utterance, as
  :class:`~speechlm.models.speech_ssl.SpeechPretrainer`;
* CTC on the utterances that have a transcript, from the encoder's output through the token head;
* masked language modelling on unpaired text, from the shared blocks' output through the *same*
  token head, so the shared blocks map speech frames and characters into one space.

Checkpoint names match the speech pretrainer's (``encoder.*``), so ``speechlm finetune --init``
starts from a joint encoder exactly as from a BEST-RQ one; the text embedding and the token head
are kept in the checkpoint but not used by fine-tuning.

>>> import torch
>>> from speechlm.models.encoders import tiny
>>> model = JointPretrainer(FeatureConfig(), tiny(), SSLConfig(codebook_size=32), JointConfig(shared_layers=2), vocab_size=30)
>>> x = model.encode_text(torch.randint(1, 30, (3, 12)), torch.tensor([12, 9, 5]))
>>> tuple(x.shape), tuple(model.token_head(x).shape)
((3, 12, 96), (3, 12, 30))
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from speechlm.features import FeatureConfig, compute_features
from speechlm.models.asr import CTCOutput
from speechlm.models.encoders import BlockEncoder, EncoderConfig, padding_mask
from speechlm.models.lm import special_tokens
from speechlm.models.speech_ssl import MaskedPredictionOutput, SpeechPretrainer, SSLConfig


@dataclasses.dataclass(frozen=True)
class JointConfig:
    shared_layers: int = 4  # top encoder blocks that read text as well as speech
    ctc_weight: float = 1.0  # weight of the CTC loss on paired utterances
    mlm_weight: float = 0.5  # weight of the masked-LM loss on unpaired text
    text_mask_prob: float = 0.15  # characters chosen for the masked-LM loss (80 % [MASK], 10 % random, 10 % kept)
    paired_fraction: float = 0.1  # transcribed utterances of the manifest used with their transcripts (a fine-tuning-style subset)
    paired_seed: int = 0  # which subset; equals finetune.subset_seed for the same utterances
    paired_batch_share: float = 0.5  # paired audio per step, as a share of train.batch_seconds
    text_batch_size: int = 64  # unpaired sentences per step

    def __post_init__(self):
        if self.shared_layers < 1:
            raise ValueError(f"joint.shared_layers must be >= 1, got {self.shared_layers}")
        if not 0 < self.text_mask_prob < 1:
            raise ValueError(f"joint.text_mask_prob must be in (0, 1), got {self.text_mask_prob}")
        if not 0 < self.paired_fraction <= 1:
            raise ValueError(f"joint.paired_fraction must be in (0, 1], got {self.paired_fraction}")
        if self.ctc_weight < 0 or self.mlm_weight < 0:
            raise ValueError("joint.ctc_weight and joint.mlm_weight must be >= 0")
        if self.paired_batch_share <= 0 or self.text_batch_size < 1:
            raise ValueError("joint.paired_batch_share must be > 0 and joint.text_batch_size >= 1")


@dataclasses.dataclass
class JointOutput:
    speech: MaskedPredictionOutput  # masked prediction on the unlabeled batch
    ctc: CTCOutput | None  # token logits of the paired batch
    text_logits: torch.Tensor | None  # (B, L, V) token scores at every text position


class JointPretrainer(SpeechPretrainer):
    """Speech pretrainer + character embedding into the shared blocks + one token head for CTC and MLM."""

    def __init__(self, features: FeatureConfig, encoder: EncoderConfig, ssl: SSLConfig, joint: JointConfig, vocab_size: int):
        super().__init__(features, encoder, ssl)
        if not isinstance(self.encoder, BlockEncoder):
            raise ValueError(f"joint pretraining needs a block encoder (conformer, transformer, cnn), not encoder.arch={encoder.arch!r}")
        if joint.shared_layers > encoder.n_layers:
            raise ValueError(f"joint.shared_layers ({joint.shared_layers}) exceeds encoder.n_layers ({encoder.n_layers})")
        self.joint = joint
        # token ids 1..vocab_size-1; 0 is the CTC blank and the text padding; the text input adds the LM's specials ([MASK])
        self.special = special_tokens(vocab_size)
        self.text_embed = nn.Embedding(self.special.vocab_size, encoder.d_model)
        self.token_head = nn.Sequential(nn.Dropout(encoder.dropout), nn.Linear(encoder.d_model, vocab_size))

    def forward(
        self,
        audio: torch.Tensor,
        audio_lens: torch.Tensor,
        paired_audio: torch.Tensor | None = None,
        paired_lens: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        text_lens: torch.Tensor | None = None,
    ) -> JointOutput:
        """One step's three batches in one call (so DistributedDataParallel sees every parameter used)."""
        mp = super().forward(audio, audio_lens)
        ctc = self.ctc(paired_audio, paired_lens) if paired_audio is not None else None
        text_logits = self.token_head(self.encode_text(text, text_lens)) if text is not None else None
        return JointOutput(mp, ctc, text_logits)

    def encode_text(self, tokens: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` ids -> ``(B, L, d_model)`` through the shared top blocks and the encoder's final norm."""
        mask = padding_mask(lens, tokens.shape[1])
        x = self.encoder.dropout(self.text_embed(tokens))
        for blk in self.encoder.blocks[-self.joint.shared_layers :]:
            x = blk(x, mask)
        return self.encoder.norm(x) * mask.unsqueeze(-1)

    def ctc(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> CTCOutput:
        """Per-frame token logits of clean (unmasked) audio: ``(B, T', V)``."""
        with torch.no_grad(), torch.autocast(audio.device.type, enabled=False):
            feats, feat_lens = compute_features(audio.float(), audio_lens, self.features)
        enc = self.encoder(feats, feat_lens)
        return CTCOutput(self.token_head(enc.x), enc.x_lens)
