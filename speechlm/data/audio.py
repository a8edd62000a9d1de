"""Reading audio: any format libsndfile reads, mixed to mono, resampled to 16 kHz with soxr."""

from __future__ import annotations

import io
import re
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr

from speechlm.errors import AudioError
from speechlm.features import SAMPLE_RATE

MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au")


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited polyphase resampling (soxr, high quality). ``(N,)`` float32 -> ``(M,)``."""
    if orig_sr == target_sr:
        return audio
    return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, trim_db: float | None = None) -> np.ndarray:
    """Read ``path`` as mono float32 samples in [-1, 1] at ``sample_rate``.

    trim_db: if set, strip leading/trailing audio quieter than this many dB below the peak.
    Raises :class:`AudioError` naming the file for unreadable, empty, non-finite or
    absurd-sample-rate input.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: not a readable audio file ({str(e).strip() or type(e).__name__})") from None
    return prepare_samples(audio, sr, str(path), sample_rate, trim_db)


def decode_audio(data: bytes, name: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Like :func:`load_audio` for the bytes of an audio file (an upload); ``name`` labels errors."""
    if not data:
        raise AudioError(f"{name}: empty body, expected an audio file")
    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        reason = re.sub(r"^Error opening <[^>]*>: ", "", str(e).strip()) or type(e).__name__
        raise AudioError(f"{name}: not a readable audio file ({reason})") from None
    return prepare_samples(audio, sr, name, sample_rate)


def encode_wav(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV bytes of ``(N,)`` float samples (clipped to [-1, 1])."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def prepare_samples(
    audio: np.ndarray, sr: int, name: str, sample_rate: int = SAMPLE_RATE, trim_db: float | None = None
) -> np.ndarray:
    """Validate ``(N,)`` or ``(N, C)`` samples at ``sr``; mono mix-down, resample, optional trim."""
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(f"{name}: implausible sample rate {sr} Hz (expected {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE})")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.size == 0:
        raise AudioError(f"{name}: contains no samples")
    if not np.isfinite(audio).all():
        raise AudioError(f"{name}: contains NaN or infinite samples")
    audio = resample(audio, sr, sample_rate)
    if trim_db is not None:
        audio = trim_silence(audio, trim_db)
        if audio.size == 0:
            raise AudioError(f"{name}: nothing left after trimming silence")
    return np.ascontiguousarray(audio, dtype=np.float32)


def trim_silence(audio: np.ndarray, top_db: float) -> np.ndarray:
    """``audio`` without its leading and trailing stretches quieter than ``top_db`` below its loudest
    32 ms frame (empty for digital silence)."""
    trimmed, _ = librosa.effects.trim(audio, top_db=top_db, frame_length=512, hop_length=128)
    return trimmed


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header (no decoding)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: not a readable audio file ({str(e).strip()})") from None
    if info.samplerate <= 0:
        raise AudioError(f"{path}: invalid sample rate {info.samplerate}")
    return info.frames / info.samplerate


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV (clipped to [-1, 1])."""
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
