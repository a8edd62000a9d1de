"""Self-supervised speech pretraining: masked prediction of discrete frame targets.

The encoder reads features in which random spans are replaced by noise and predicts, at every
masked output frame, a discrete target computed from the clean features:

* ``best-rq`` (Chiu et al., 2022): a frozen random projection of 4 stacked feature frames,
  L2-normalized, then the nearest entry of a frozen random codebook (one or several);
* ``kmeans`` (HuBERT iteration 1, Hsu et al., 2021): the nearest k-means centroid of 4 stacked
  MFCC frames, the centroids fitted once on the training audio before pretraining starts.

Four input frames (40 ms) make one target, matching the encoder's 4x subsampling. Quantizer
tables are buffers saved with the weights; fine-tuning keeps only ``encoder.*``.

>>> import torch
>>> from speechlm.models.encoders import tiny
>>> model = SpeechPretrainer(FeatureConfig(), tiny(), SSLConfig(codebook_size=32))
>>> out = model(torch.randn(2, 16000), torch.tensor([16000, 12000]))
>>> tuple(out.logits.shape), tuple(out.targets.shape)
((2, 24, 1, 32), (2, 24, 1))
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechlm.features import HOP_LENGTH, FeatureConfig, compute_features
from speechlm.models.encoders import EncoderConfig, build_encoder, padding_mask

STACK = 4  # input frames per target frame: the encoder's subsampling factor
TARGETS = ("best-rq", "kmeans")


@dataclasses.dataclass(frozen=True)
class SSLConfig:
    target: str = "best-rq"  # "best-rq" (random-projection quantizer) or "kmeans" (MFCC k-means units)
    num_codebooks: int = 1  # independent BEST-RQ codebooks, one prediction head each (kmeans: 1)
    codebook_size: int = 512  # entries per codebook / k-means clusters
    codebook_dim: int = 16  # BEST-RQ projection size
    kmeans_mfcc: int = 13  # MFCC coefficients per frame for k-means targets (4 frames stacked)
    kmeans_frames: int = 100_000  # frames sampled from the training audio to fit k-means
    mask_prob: float = 0.04  # probability that an input frame starts a masked span
    mask_span: int = 20  # input frames (10 ms each) per masked span
    mask_noise: float = 0.1  # std of the noise that replaces masked (normalized) features

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"ssl.target must be one of {TARGETS}, got {self.target!r}")
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"ssl.mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.mask_span < 1 or self.codebook_size < 2 or self.num_codebooks < 1:
            raise ValueError("ssl.mask_span >= 1, ssl.codebook_size >= 2 and ssl.num_codebooks >= 1 are required")


def stack_frames(feats: torch.Tensor, n_out: int) -> torch.Tensor:
    """``(B, T, D)`` -> ``(B, n_out, STACK * D)``: frames ``[4j, 4j + 4)`` side by side."""
    B, T, D = feats.shape
    x = feats[:, : n_out * STACK]
    if x.shape[1] < n_out * STACK:
        x = F.pad(x, (0, 0, 0, n_out * STACK - x.shape[1]))
    return x.reshape(B, n_out, STACK * D)  # (B, T', 4D)


class RandomProjectionQuantizer(nn.Module):
    """BEST-RQ: frozen Xavier projection + frozen unit-norm codebooks; no parameters to learn."""

    def __init__(self, input_dim: int, cfg: SSLConfig):
        super().__init__()
        proj = torch.empty(cfg.num_codebooks, input_dim, cfg.codebook_dim)
        for p in proj:
            nn.init.xavier_uniform_(p)
        self.register_buffer("projection", proj)  # (K, D_in, d)
        self.register_buffer("codebooks", F.normalize(torch.randn(cfg.num_codebooks, cfg.codebook_size, cfg.codebook_dim), dim=-1))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T', D_in)`` stacked features -> ``(B, T', K)`` code indices."""
        z = F.normalize(torch.einsum("btd,kde->btke", x, self.projection), dim=-1)  # (B, T', K, d)
        # nearest unit vector = largest dot product
        return torch.einsum("btke,kce->btkc", z, self.codebooks).argmax(-1)


class KMeansQuantizer(nn.Module):
    """Nearest centroid of stacked MFCC frames; centroids come from :func:`fit_kmeans`."""

    def __init__(self, cfg: SSLConfig):
        super().__init__()
        self.mfcc = FeatureConfig(kind="mfcc", n_mfcc=cfg.kmeans_mfcc)
        self.register_buffer("centroids", torch.zeros(cfg.codebook_size, STACK * cfg.kmeans_mfcc))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def stacked_mfcc(self, audio: torch.Tensor, audio_lens: torch.Tensor, n_out: int) -> torch.Tensor:
        feats, _ = compute_features(audio, audio_lens, self.mfcc)
        return stack_frames(feats, n_out)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T', 4 * n_mfcc)`` -> ``(B, T', 1)`` centroid indices."""
        if not bool(self.fitted):
            raise RuntimeError("k-means targets requested before the centroids were fitted (see fit_kmeans)")
        d = (x.pow(2).sum(-1, keepdim=True) - 2 * x @ self.centroids.T + self.centroids.pow(2).sum(-1))  # (B, T', C)
        return d.argmin(-1, keepdim=True)


@dataclasses.dataclass
class MaskedPredictionOutput:
    logits: torch.Tensor  # (B, T', K, C) scores per codebook
    targets: torch.Tensor  # (B, T', K) code indices from the clean input
    mask: torch.Tensor  # (B, T') True where the frame was masked and is valid
    lens: torch.Tensor  # (B,) valid output frames


def span_mask(lens: torch.Tensor, T: int, prob: float, span: int) -> torch.Tensor:
    """``(B, T)`` bool: spans of ``span`` frames starting at each valid frame with probability ``prob``.

    Every utterance gets at least one span, so no batch row is left without a loss.
    """
    B = lens.shape[0]
    valid = padding_mask(lens, T)
    starts = (torch.rand(B, T, device=lens.device) < prob) & valid
    forced = torch.randint(0, 1 << 30, (B,), device=lens.device) % lens.clamp(min=1)  # (B,)
    starts[torch.arange(B, device=lens.device), forced] = True
    # a frame is masked when a span started within the previous ``span`` frames
    conv = F.max_pool1d(F.pad(starts.float()[:, None], (span - 1, 0)), span, stride=1)[:, 0]  # (B, T)
    return (conv > 0) & valid


class SpeechPretrainer(nn.Module):
    """Encoder + one linear head per codebook, trained to predict the targets of masked frames."""

    def __init__(self, features: FeatureConfig, encoder: EncoderConfig, ssl: SSLConfig):
        super().__init__()
        self.features = features
        self.ssl = ssl
        self.encoder = build_encoder(encoder, features.dim)
        if ssl.target == "best-rq":
            self.quantizer = RandomProjectionQuantizer(STACK * features.dim, ssl)
        else:
            self.quantizer = KMeansQuantizer(ssl)
        n_heads = ssl.num_codebooks if ssl.target == "best-rq" else 1
        self.heads = nn.ModuleList(nn.Linear(encoder.d_model, ssl.codebook_size) for _ in range(n_heads))

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> MaskedPredictionOutput:
        """audio: ``(B, N)`` samples at 16 kHz; audio_lens: ``(B,)`` samples."""
        with torch.no_grad(), torch.autocast(audio.device.type, enabled=False):
            feats, feat_lens = compute_features(audio.float(), audio_lens, self.features)  # (B, T, D)
            B, T, D = feats.shape
            mask_in = span_mask(feat_lens, T, self.ssl.mask_prob, self.ssl.mask_span)  # (B, T)
            noise = self.ssl.mask_noise * torch.randn_like(feats)
            masked = torch.where(mask_in[..., None], noise, feats)
        enc = self.encoder(masked, feat_lens)
        n_out = enc.x.shape[1]
        with torch.no_grad(), torch.autocast(audio.device.type, enabled=False):
            if isinstance(self.quantizer, KMeansQuantizer):
                targets = self.quantizer(self.quantizer.stacked_mfcc(audio.float(), audio_lens, n_out))
            else:
                targets = self.quantizer(stack_frames(feats, n_out))
            # an output frame is masked when any of its input frames was
            mask_out = stack_frames(mask_in[..., None].float(), n_out).amax(-1) > 0  # (B, T')
            mask_out &= padding_mask(enc.x_lens, n_out)
        logits = torch.stack([h(enc.x) for h in self.heads], dim=2)  # (B, T', K, C)
        return MaskedPredictionOutput(logits, targets, mask_out, enc.x_lens)


def fit_kmeans(model: SpeechPretrainer, dataset, seed: int = 0, progress: bool = True) -> float:
    """Fit the k-means centroids on frames sampled from ``dataset``'s clean audio (scikit-learn).

    Returns the mean squared distance of the sampled frames to their centroid (inertia / n).
    """
    from sklearn.cluster import MiniBatchKMeans
    from tqdm import tqdm

    q = model.quantizer
    assert isinstance(q, KMeansQuantizer)
    cfg = model.ssl
    rng = np.random.default_rng(seed)
    per_utt = max(1, cfg.kmeans_frames // max(len(dataset), 1))
    frames = []
    for i in tqdm(rng.permutation(len(dataset)), desc="k-means frames", unit="utt", disable=not progress, leave=False):
        a = torch.from_numpy(dataset.clean_audio(i))[None]
        n_out = max(1, (a.shape[1] // HOP_LENGTH) // STACK)
        x = q.stacked_mfcc(a, torch.tensor([a.shape[1]]), n_out)[0].numpy()  # (T', 4 * n_mfcc)
        frames.append(x[rng.choice(len(x), size=min(per_utt, len(x)), replace=False)])
        if sum(len(f) for f in frames) >= cfg.kmeans_frames:
            break
    data = np.concatenate(frames).astype(np.float32)
    if len(data) < cfg.codebook_size:
        raise ValueError(f"k-means needs at least ssl.codebook_size={cfg.codebook_size} frames, the audio gave {len(data)}")
    km = MiniBatchKMeans(n_clusters=cfg.codebook_size, random_state=seed, batch_size=4096, n_init=3, max_iter=100)
    km.fit(data)
    q.centroids.copy_(torch.from_numpy(km.cluster_centers_).float())
    q.fitted.fill_(True)
    return float(km.inertia_) / len(data)
