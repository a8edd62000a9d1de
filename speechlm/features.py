"""Audio constants and the only feature code in speechlm.

Training, evaluation and inference all call :func:`compute_features`. Waveforms are float
tensors at :data:`SAMPLE_RATE`; features are frame-major ``(..., T, D)`` with one frame every
:data:`HOP_LENGTH` samples (10 ms).

>>> import torch
>>> x = log_mel_spectrogram(torch.zeros(SAMPLE_RATE))
>>> tuple(x.shape)
(101, 80)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings

import librosa
import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms window
HOP_LENGTH = 160  # 10 ms hop
N_MELS = 80
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100
LOG_FLOOR = 1e-10  # power floor before the log: -100 dB
FULL_BAND = (0.0, SAMPLE_RATE / 2)  # the mel bands' default (f_min, f_max) in Hz


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    kind: str = "logmel"  # "logmel", "mfcc" or "lpc"
    n_mels: int = N_MELS  # mel bands (log-mel, and the bands MFCCs are taken from)
    n_mfcc: int = 40  # cepstral coefficients kept when kind == "mfcc"
    lpc_order: int = 16  # predictor order when kind == "lpc" (features: order coefficients + log gain)
    normalize: bool = True  # mean/variance normalization of every feature dimension over valid frames
    # whose mean and variance: "utterance" (each utterance its own) or "corpus" (the training set's, measured before
    # training and saved with the weights; keeps what a short clip's average spectrum tells, e.g. a one-word
    # clip's vowel). "corpus": speech classifiers only
    normalize_over: str = "utterance"
    # the frequency range the mel bands cover, in Hz. Telephone-band or 8 kHz recordings (resampled to 16 kHz) hold
    # nothing above 4 kHz: with f_max=3800 no band is left to the resampler's residue and the log floor
    f_min: float = FULL_BAND[0]
    f_max: float = FULL_BAND[1]
    # log-mel and MFCC: mel powers more than this many dB below the clip's loudest (band, frame) are raised to that
    # level, as Whisper clamps at 80 dB (0 = only the absolute floor, -100 dB). Near-silent frames then sit at a level
    # set by the clip itself rather than by how quiet the recording's silence happens to be
    dynamic_range_db: float = 0.0

    def __post_init__(self):
        if self.kind not in ("logmel", "mfcc", "lpc"):
            raise ValueError(f"features.kind must be 'logmel', 'mfcc' or 'lpc', got {self.kind!r}")
        if self.normalize_over not in ("utterance", "corpus"):
            raise ValueError(f"features.normalize_over must be 'utterance' or 'corpus', got {self.normalize_over!r}")
        if not 0 <= self.f_min < self.f_max <= SAMPLE_RATE / 2:
            raise ValueError(f"features.f_min and features.f_max must satisfy 0 <= f_min < f_max <= {SAMPLE_RATE // 2} Hz, "
                             f"got {self.f_min} and {self.f_max}")
        if self.dynamic_range_db < 0:
            raise ValueError(f"features.dynamic_range_db must be >= 0 (0 = off), got {self.dynamic_range_db}")
        if self.n_mels < 1 or self.lpc_order < 1:
            raise ValueError(f"features.n_mels and features.lpc_order must be >= 1, got {self.n_mels} and {self.lpc_order}")
        if self.kind == "mfcc" and not 1 <= self.n_mfcc <= self.n_mels:
            raise ValueError(f"features.n_mfcc must be between 1 and features.n_mels ({self.n_mels}), got {self.n_mfcc}")
        if self.kind != "lpc":
            mel_filters(self.n_mels, self.f_min, self.f_max)  # bands too narrow for their range: refused here, not at the first batch

    @property
    def corpus_norm(self) -> bool:
        """Whether the model normalizes with statistics of its training set (:class:`CorpusNorm`)."""
        return self.normalize and self.normalize_over == "corpus"

    @property
    def spectral(self) -> bool:
        """Whether the feature axis is a frequency axis (what SpecAugment's warp stretches)."""
        return self.kind == "logmel"

    @property
    def dim(self) -> int:
        return {"logmel": self.n_mels, "mfcc": self.n_mfcc, "lpc": self.lpc_order + 1}[self.kind]


@functools.lru_cache(maxsize=8)
def mel_filters(n_mels: int, f_min: float = FULL_BAND[0], f_max: float = FULL_BAND[1]) -> torch.Tensor:
    """Slaney-normalised mel filterbank from librosa over ``f_min``-``f_max`` Hz, ``(n_mels, N_FFT // 2 + 1)``.

    A band narrower than the FFT's bin spacing would hold no bin: an error, as it would be a constant feature.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # librosa's empty-filter warning: checked below, with the fix named
        fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels, fmin=f_min, fmax=f_max)
    empty = int((fb.max(axis=1) == 0).sum())
    if empty:
        raise ValueError(f"features.n_mels={n_mels} over {f_min:g}-{f_max:g} Hz leaves {empty} mel bands without an FFT bin "
                         f"(bins are {SAMPLE_RATE / N_FFT:g} Hz apart): use fewer bands or a wider range")
    return torch.from_numpy(fb).float()


@functools.lru_cache(maxsize=8)
def _dct_matrix(n_mels: int, n_mfcc: int) -> torch.Tensor:
    """Orthonormal DCT-II basis, ``(n_mels, n_mfcc)``."""
    return torch.from_numpy(scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc].T).float()


@functools.lru_cache(maxsize=2)
def _window() -> torch.Tensor:
    return torch.hann_window(N_FFT)


def num_frames(num_samples: int | torch.Tensor) -> int | torch.Tensor:
    """Frames produced for ``num_samples`` samples (centered STFT)."""
    return num_samples // HOP_LENGTH + 1


def power_spectrogram(audio: torch.Tensor) -> torch.Tensor:
    """``(..., N)`` samples -> ``(..., T, N_FFT // 2 + 1)`` power, centered with zero padding."""
    shape = audio.shape[:-1]
    stft = torch.stft(
        audio.reshape(-1, audio.shape[-1]).float(),
        N_FFT,
        HOP_LENGTH,
        window=_window().to(audio.device),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )  # (B, F, T)
    power = stft.abs() ** 2
    return power.transpose(-1, -2).reshape(*shape, power.shape[-1], power.shape[-2])


def mel_power(audio: torch.Tensor, n_mels: int = N_MELS, f_range: tuple[float, float] = FULL_BAND) -> torch.Tensor:
    """``(..., N)`` samples -> ``(..., T, n_mels)`` mel power; ``f_range``: the bands' ``(f_min, f_max)`` in Hz."""
    return power_spectrogram(audio) @ mel_filters(n_mels, *f_range).to(audio.device).T


def mel_db(audio: torch.Tensor, n_mels: int = N_MELS, f_range: tuple[float, float] = FULL_BAND, range_db: float = 0.0) -> torch.Tensor:
    """``(..., N)`` samples -> ``(..., T, n_mels)`` mel power in dB; with ``range_db``, at most that far below
    each clip's loudest value (the zero padding of a batch's shorter clips is below it and does not move it)."""
    db = 10.0 * torch.log10(mel_power(audio, n_mels, f_range).clamp(min=LOG_FLOOR))
    if range_db:
        db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - range_db)
    return db


def log_mel_spectrogram(audio: torch.Tensor, n_mels: int = N_MELS, f_range: tuple[float, float] = FULL_BAND, range_db: float = 0.0) -> torch.Tensor:
    """``(..., N)`` samples -> ``(..., T, n_mels)`` natural-log mel power (``range_db``: see :func:`mel_db`)."""
    if not range_db:
        return torch.log(mel_power(audio, n_mels, f_range).clamp(min=LOG_FLOOR))
    return mel_db(audio, n_mels, f_range, range_db) * (math.log(10.0) / 10.0)


def warp_bands(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``(B, T, D)`` features whose last axis is a frequency axis, each utterance's stretched by its factor of
    ``alpha`` ``(B,)``: band ``d`` takes the value at ``d / alpha`` (linear interpolation, held at the edges).
    ``alpha > 1`` moves the spectrum up, as a shorter vocal tract does."""
    B, T, D = x.shape
    src = (torch.arange(D, device=x.device, dtype=x.dtype)[None, :] / alpha[:, None].to(x.dtype)).clamp(0, D - 1)  # (B, D)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=D - 1)
    frac = (src - lo.to(src.dtype))[:, None, :]  # (B, 1, D)
    gather = lambda idx: torch.gather(x, 2, idx[:, None, :].expand(B, T, D))  # noqa: E731
    return gather(lo) * (1 - frac) + gather(hi) * frac


def mfcc(audio: torch.Tensor, n_mfcc: int = 40, n_mels: int = N_MELS, f_range: tuple[float, float] = FULL_BAND, range_db: float = 0.0,
         warp: torch.Tensor | None = None) -> torch.Tensor:
    """``(..., N)`` samples -> ``(..., T, n_mfcc)``: DCT-II of the mel power in dB (librosa's convention). ``warp``:
    ``(B,)`` factors that stretch each utterance's mel bands before the DCT (:func:`warp_bands`), for ``(B, N)`` audio."""
    db = mel_db(audio, n_mels, f_range, range_db)
    if warp is not None:
        db = warp_bands(db, warp)
    return db @ _dct_matrix(n_mels, n_mfcc).to(audio.device)


def lpc(audio: torch.Tensor, order: int = 16) -> torch.Tensor:
    """``(..., N)`` samples -> ``(..., T, order + 1)``: LPC coefficients a_1..a_p and log gain.

    Autocorrelation method on Hann-windowed frames (the framing of :func:`power_spectrogram`),
    solved by Levinson-Durbin. The predictor is ``x[n] ~ -sum_k a_k x[n - k]``.
    """
    shape = audio.shape[:-1]
    x = F.pad(audio.reshape(-1, audio.shape[-1]).float(), (N_FFT // 2, N_FFT // 2))
    frames = x.unfold(-1, N_FFT, HOP_LENGTH) * _window().to(audio.device)  # (B, T, N_FFT)
    # autocorrelation lags 0..order through the FFT: O(N log N) per frame
    spec = torch.fft.rfft(frames, n=2 * N_FFT)
    r = torch.fft.irfft(spec.abs() ** 2, n=2 * N_FFT)[..., : order + 1]  # (B, T, order + 1)
    r = r.double()
    r[..., 0] = r[..., 0] * (1 + 1e-9) + 1e-12  # white-noise correction keeps silent frames stable
    a = torch.zeros(*r.shape[:-1], order + 1, dtype=r.dtype, device=r.device)
    a[..., 0] = 1.0
    err = r[..., 0].clone()
    for i in range(1, order + 1):
        acc = (a[..., :i] * r[..., 1 : i + 1].flip(-1)).sum(-1)
        k = -acc / err
        a_prev = a.clone()
        a[..., 1:i] = a_prev[..., 1:i] + k.unsqueeze(-1) * a_prev[..., 1:i].flip(-1)
        a[..., i] = k
        err = err * (1 - k * k)
    gain = torch.log(err.clamp(min=LOG_FLOOR))
    out = torch.cat([a[..., 1:], gain.unsqueeze(-1)], dim=-1).float()
    return out.reshape(*shape, out.shape[-2], out.shape[-1])


def valid_frames(feats: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """``(B, T, 1)`` mask of the frames of ``(B, T, D)`` features within each utterance's ``(B,)`` length."""
    return (torch.arange(feats.shape[1], device=feats.device)[None, :] < lens[:, None].to(feats.device)).unsqueeze(-1)


def normalize(feats: torch.Tensor, lens: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Per-utterance, per-dimension mean/variance normalization over the valid frames.

    feats: ``(B, T, D)``; lens: ``(B,)`` valid frames. Padded frames are set to zero.
    """
    B, T, _ = feats.shape
    if lens is None:
        lens = torch.full((B,), T, device=feats.device)
    mask = valid_frames(feats, lens)
    n = lens.clamp(min=1).to(feats.dtype)[:, None, None]
    mean = (feats * mask).sum(1, keepdim=True) / n
    var = (((feats - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return ((feats - mean) / torch.sqrt(var + eps)) * mask


def compute_features(
    audio: torch.Tensor, audio_lens: torch.Tensor | None, cfg: FeatureConfig, mel_warp: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The single feature entry point.

    audio: ``(B, N)`` float samples at :data:`SAMPLE_RATE`, zero-padded; audio_lens: ``(B,)`` samples.
    mel_warp: MFCC only, ``(B,)`` factors stretching each utterance's mel bands before the DCT
    (:meth:`SpecAugment.mel_warp_factors`). Returns ``(feats, feat_lens)``: ``(B, T, cfg.dim)`` and ``(B,)`` frames.
    """
    if mel_warp is not None and cfg.kind != "mfcc":
        raise ValueError(f"mel_warp stretches the mel bands under MFCCs; features.kind is {cfg.kind!r}")
    if audio_lens is None:
        audio_lens = torch.full((audio.shape[0],), audio.shape[-1], device=audio.device)
    if cfg.kind == "logmel":
        feats = log_mel_spectrogram(audio, cfg.n_mels, (cfg.f_min, cfg.f_max), cfg.dynamic_range_db)
    elif cfg.kind == "mfcc":
        feats = mfcc(audio, cfg.n_mfcc, cfg.n_mels, (cfg.f_min, cfg.f_max), cfg.dynamic_range_db, mel_warp)
    else:
        feats = lpc(audio, cfg.lpc_order)
    feat_lens = torch.clamp(num_frames(audio_lens), max=feats.shape[1])
    if cfg.normalize and not cfg.corpus_norm:  # corpus statistics live in the model (CorpusNorm)
        feats = normalize(feats, feat_lens)
    return feats, feat_lens


def utterance_norm_only(cfg: FeatureConfig, model: str) -> None:
    """Refuse ``features.normalize_over=corpus`` in a model that has no :class:`CorpusNorm`."""
    if cfg.corpus_norm:
        raise ValueError(f"features.normalize_over='corpus' is for speech classifiers (speechlm finetune --task classify); the {model} "
                         "normalizes each utterance: set features.normalize_over=utterance")


class CorpusNorm(torch.nn.Module):
    """Mean/variance normalization of every feature dimension with statistics of a corpus (the
    training set's, like a global CMVN), held in buffers so they are saved with the weights.

    :meth:`estimate` sets them before training; until then the normalization is the identity.
    ``(B, T, D)`` in and out; padded frames are set to zero.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def estimate(self, batches) -> int:
        """Set the statistics from an iterable of ``(feats, lens)`` (unnormalized features); returns the frames counted."""
        total, sq, n = 0.0, 0.0, 0
        for feats, lens in batches:
            x = feats.double() * valid_frames(feats, lens)
            total, sq, n = total + x.sum((0, 1)), sq + (x * x).sum((0, 1)), n + int(lens.sum())
        if n == 0:
            raise ValueError("corpus normalization: no frames to estimate the statistics from")
        mean = total / n
        self.mean.copy_(mean.float())
        self.std.copy_(((sq / n - mean * mean).clamp(min=0) + 1e-5).sqrt().float())
        return n

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean) / self.std * valid_frames(feats, lens)


@dataclasses.dataclass(frozen=True)
class SpecAugmentConfig:
    freq_masks: int = 2  # number of frequency masks per utterance
    freq_width: int = 15  # maximum width of a frequency mask, in feature bins (at most a fifth of them)
    time_masks: int = 5  # maximum number of time masks per utterance (scaled down for short ones)
    time_width: float = 0.05  # maximum width of a time mask, as a fraction of the utterance
    warp: float = 0.1  # max relative stretch of the frequency axis (VTLP-style voice variety); 0 = off
    # the same for MFCC models: max relative stretch of the mel bands, before the DCT and normalization (0 = off, the
    # default, so MFCC recipes measured before it existed train as they did); log-mel models use ``warp``
    mfcc_warp: float = 0.0

    def __post_init__(self):
        for name in ("warp", "mfcc_warp"):
            if not 0 <= getattr(self, name) < 0.5:
                raise ValueError(f"spec_augment.{name} must be in [0, 0.5) (a relative stretch; 0 = off), got {getattr(self, name)}")


class SpecAugment(torch.nn.Module):
    """SpecAugment (Park et al., 2019) masks plus a random frequency-axis warp.

    The warp rescales the feature axis by a factor in ``[1 - warp, 1 + warp]`` per utterance,
    which mimics a different vocal-tract length: cheap voice variety for synthetic corpora. It
    applies to log-mel features only (``spectral=True``): MFCC and LPC dimensions are not a
    frequency axis. MFCC models warp their mel bands before the DCT instead, inside
    :func:`compute_features`, with the factors of :meth:`mel_warp_factors` (``mfcc_warp``).
    A frequency mask covers at most a fifth of the ``D`` feature dimensions, so the 15-bin default made for 80 mel bands cannot blank 13 MFCCs. Active only in training
    mode. Input and output ``(B, T, D)``; masked values are zero, the mean of normalized features.
    """

    def __init__(self, cfg: SpecAugmentConfig, spectral: bool = True):
        super().__init__()
        self.cfg = cfg
        self.spectral = spectral

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return feats
        cfg = self.cfg
        B, T, D = feats.shape
        out = feats.clone()
        if cfg.warp > 0 and self.spectral:
            out = self._warp(out)
        max_freq_w = min(cfg.freq_width, D // 5)
        for b in range(B):
            for _ in range(cfg.freq_masks):
                w = int(torch.randint(0, max_freq_w + 1, ()))
                f0 = int(torch.randint(0, max(1, D - w), ()))
                out[b, :, f0 : f0 + w] = 0
            n = int(lens[b])
            max_w = int(cfg.time_width * n)
            n_masks = min(cfg.time_masks, max(1, n // 100))  # about one mask per second
            for _ in range(n_masks if max_w > 0 else 0):
                w = int(torch.randint(0, max_w + 1, ()))
                t0 = int(torch.randint(0, max(1, n - w), ()))
                out[b, t0 : t0 + w, :] = 0
        return out

    @staticmethod
    def _factors(batch: int, max_stretch: float, device: torch.device | str) -> torch.Tensor:
        return 1 + (torch.rand(batch, device=device) * 2 - 1) * max_stretch  # (batch,) uniform in [1 - s, 1 + s]

    def _warp(self, feats: torch.Tensor) -> torch.Tensor:
        return warp_bands(feats, self._factors(feats.shape[0], self.cfg.warp, feats.device))

    def mel_warp_factors(self, batch: int, features: FeatureConfig, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """``(batch,)`` mel-band stretch factors in ``[1 - mfcc_warp, 1 + mfcc_warp]`` for :func:`compute_features`, in
        training and for MFCC features only; None otherwise."""
        if not self.training or features.kind != "mfcc" or self.cfg.mfcc_warp <= 0:
            return None
        return self._factors(batch, self.cfg.mfcc_warp, device)
