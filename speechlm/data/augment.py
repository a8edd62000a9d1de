"""Waveform augmentation: tight endpointing, speed perturbation, band limiting, microphone coloration, room
reverberation and additive noise at a chosen SNR."""

from __future__ import annotations

import dataclasses

import numpy as np

from speechlm.data.audio import resample, trim_silence
from speechlm.features import SAMPLE_RATE

MAX_RT60 = 2.0  # seconds: longer rooms than a cathedral's are a typo
DRR_DB = (0.0, 12.0)  # direct-to-reverberant energy ratio of a drawn room: a talker from close by to across the room
EDGE_TOP_DB = 30.0  # where a clip's speech starts and ends for cut_edges: this far below its loudest frame


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)  # speed perturbation choices (1.0 = none)
    noise_prob: float = 0.3  # probability of adding noise to an utterance
    snr_db: tuple[float, float] = (10.0, 30.0)  # SNR range in dB for additive noise
    # probability of a room: the clip convolved with a random impulse response whose reverberation time (RT60,
    # seconds) is drawn from rt60; synthesized speech is dry, recordings are not
    reverb_prob: float = 0.0
    rt60: tuple[float, float] = (0.2, 0.8)
    # probability of a microphone: a random smooth frequency response within +-eq_db
    eq_prob: float = 0.0
    eq_db: float = 6.0
    # probability of a tight cut (:func:`cut_edges`): the clip trimmed to its speech and up to edge_cut_max seconds
    # more taken from each end, as a push-to-talk button or an eager endpointer cuts a word's weak onset (/θ/, /f/)
    edge_cut_prob: float = 0.0
    edge_cut_max: float = 0.08

    def __post_init__(self):
        for name in ("noise_prob", "reverb_prob", "eq_prob", "edge_cut_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"augment.{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.rt60) != 2 or not 0 < self.rt60[0] <= self.rt60[1] <= MAX_RT60:
            raise ValueError(f"augment.rt60 must be [low, high] seconds with 0 < low <= high <= {MAX_RT60:g}, got {list(self.rt60)}")
        if self.eq_db < 0:
            raise ValueError(f"augment.eq_db must be >= 0, got {self.eq_db}")
        if self.edge_cut_max < 0:
            raise ValueError(f"augment.edge_cut_max must be >= 0 seconds, got {self.edge_cut_max}")


def cut_edges(audio: np.ndarray, max_seconds: float, rng: np.random.Generator) -> np.ndarray:
    """``audio`` trimmed to its speech (``EDGE_TOP_DB`` below its loudest frame), then a random 0-``max_seconds``
    cut from its start and, drawn apart, from its end; never more than a quarter of the speech from either end.
    A clip of digital silence is returned as it is."""
    if not audio.any():
        return audio
    speech = trim_silence(audio, EDGE_TOP_DB)
    limit = min(round(max_seconds * SAMPLE_RATE), speech.size // 4)
    start, end = rng.integers(0, limit + 1, size=2)
    return speech[start : speech.size - end]


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


def room_impulse_response(rt60: float, rng: np.random.Generator, drr_db: float = 6.0) -> np.ndarray:
    """A statistical room: the direct path (a unit impulse), then Gaussian noise under an exponential envelope
    that falls 60 dB in ``rt60`` seconds (Polack's model), scaled so that the direct sound is ``drr_db`` louder
    than the tail. A few milliseconds' gap before the tail stands for the first reflections' extra path."""
    gap = int(0.003 * SAMPLE_RATE)
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    tail = rng.standard_normal(t.size) * np.exp(-3 * np.log(10) * t / rt60)  # amplitude: -60 dB at rt60
    tail *= np.sqrt(10 ** (-drr_db / 10) / (np.sum(tail**2) + 1e-12))
    return np.concatenate([[1.0], np.zeros(gap), tail]).astype(np.float32)


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``audio`` played in the room ``rir``: convolved, cut to its own length (the tail past the end is
    dropped), at its own RMS level."""
    from scipy.signal import fftconvolve

    wet = fftconvolve(audio.astype(np.float64), rir.astype(np.float64))[: audio.size]
    scale = np.sqrt(np.mean(audio.astype(np.float64) ** 2) / (np.mean(wet**2) + 1e-20))
    return (wet * scale).astype(np.float32)


def random_eq(audio: np.ndarray, rng: np.random.Generator, max_db: float = 6.0) -> np.ndarray:
    """``audio`` through a random microphone: a gain drawn within +-``max_db`` at each octave from 62.5 Hz to
    8 kHz, interpolated smoothly over log frequency. Length kept."""
    octaves = np.log2(np.array([62.5 * 2**k for k in range(8)]))
    gains_db = rng.uniform(-max_db, max_db, octaves.size)
    spec = np.fft.rfft(audio.astype(np.float64))
    freqs = np.fft.rfftfreq(audio.size, 1 / SAMPLE_RATE)
    curve = np.interp(np.log2(np.maximum(freqs, 1.0)), octaves, gains_db)
    return np.fft.irfft(spec * 10 ** (curve / 20), audio.size).astype(np.float32)


def augment(audio: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One random draw of the configured augmentations: tight cut, speed, microphone, room, then noise."""
    if cfg.edge_cut_prob > 0 and rng.random() < cfg.edge_cut_prob:
        audio = cut_edges(audio, cfg.edge_cut_max, rng)
    if cfg.speed_factors:
        audio = speed_perturb(audio, float(rng.choice(cfg.speed_factors)))
    if cfg.eq_prob > 0 and rng.random() < cfg.eq_prob:
        audio = random_eq(audio, rng, cfg.eq_db)
    if cfg.reverb_prob > 0 and rng.random() < cfg.reverb_prob:
        audio = reverberate(audio, room_impulse_response(float(rng.uniform(*cfg.rt60)), rng, float(rng.uniform(*DRR_DB))))
    if cfg.noise_prob > 0 and rng.random() < cfg.noise_prob:
        audio = add_noise(audio, float(rng.uniform(*cfg.snr_db)), rng)
    return audio
