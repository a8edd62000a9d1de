"""Waveform augmentation: speed perturbation, band limiting and additive noise at a chosen SNR."""

from __future__ import annotations

import dataclasses

import numpy as np

from speechlm.data.audio import resample
from speechlm.features import SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)  # speed perturbation choices (1.0 = none)
    noise_prob: float = 0.3  # probability of adding noise to an utterance
    snr_db: tuple[float, float] = (10.0, 30.0)  # SNR range in dB for additive noise


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (pitch and formants shift too, as in Ko et al. 2015)."""
    if factor == 1.0:
        return audio
    return resample(audio, round(SAMPLE_RATE * factor), SAMPLE_RATE)


def band_limit(audio: np.ndarray, max_hz: float) -> np.ndarray:
    """Remove everything above ``max_hz``, as a recording made at ``2 * max_hz`` samples per second
    (4000 for 8 kHz telephone-band audio). Length is kept."""
    if not 0 < max_hz < SAMPLE_RATE / 2:
        raise ValueError(f"band limit must be between 0 and {SAMPLE_RATE // 2} Hz, got {max_hz}")
    low = resample(audio, SAMPLE_RATE, round(2 * max_hz))
    out = resample(low, round(2 * max_hz), SAMPLE_RATE)[: audio.size]
    return np.pad(out, (0, audio.size - out.size))


def colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spec / f ** (exponent / 2), n)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, noise: np.ndarray | None = None) -> np.ndarray:
    """Add ``noise`` (random colored noise if None) scaled to ``snr_db`` relative to the signal."""
    if noise is None:
        noise = colored_noise(audio.size, rng, exponent=float(rng.uniform(0.0, 2.0)))
    noise = np.resize(noise, audio.size)
    p_signal = np.mean(audio.astype(np.float64) ** 2)
    p_noise = np.mean(noise.astype(np.float64) ** 2) + 1e-12
    scale = np.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))
    return (audio + scale * noise).astype(np.float32)


def augment(audio: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One random draw of the configured augmentations."""
    if cfg.speed_factors:
        audio = speed_perturb(audio, float(rng.choice(cfg.speed_factors)))
    if cfg.noise_prob > 0 and rng.random() < cfg.noise_prob:
        audio = add_noise(audio, float(rng.uniform(*cfg.snr_db)), rng)
    return audio
