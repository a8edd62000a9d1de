import numpy as np

from speechlm.decode.transcribe import Recognizer, split_long
from speechlm.features import SAMPLE_RATE
from speechlm.train.asr import train_asr

from conftest import tiny_asr_config


def test_split_long_cuts_at_silence_and_keeps_every_sample():
    rng = np.random.default_rng(0)
    tone = lambda s: (0.3 * np.sin(np.arange(int(s * SAMPLE_RATE)) * 0.1)).astype(np.float32)  # noqa: E731
    quiet = (1e-4 * rng.standard_normal(int(0.3 * SAMPLE_RATE))).astype(np.float32)
    audio = np.concatenate([tone(8.5), quiet, tone(6.0)])
    pieces = split_long(audio, max_seconds=10.0)
    assert [p.size for p in pieces] and sum(p.size for p in pieces) == audio.size
    assert all(p.size <= 10 * SAMPLE_RATE for p in pieces)
    cut = pieces[0].size
    assert 8.5 * SAMPLE_RATE <= cut <= 8.8 * SAMPLE_RATE  # inside the quiet stretch
    assert split_long(audio[:1000], 10.0)[0].size == 1000


def test_long_input_is_transcribed_in_pieces(tone_corpus, tmp_path):
    train_asr(tiny_asr_config(tone_corpus, max_steps=1), tmp_path / "run", progress=False)
    rec = Recognizer.load(tmp_path / "run")
    long = np.zeros(int(75 * SAMPLE_RATE), dtype=np.float32)
    out = rec.transcribe([long, np.zeros(SAMPLE_RATE, dtype=np.float32)])
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_clips_shorter_than_the_receptive_field_are_padded(tone_corpus, tmp_path):
    train_asr(tiny_asr_config(tone_corpus, max_steps=1), tmp_path / "run", progress=False)
    rec = Recognizer.load(tmp_path / "run")
    out = rec.transcribe([np.zeros(n, dtype=np.float32) + 0.01 for n in (1, 50, 400)])
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
