import shutil

import numpy as np
import pytest

from speechlm.data.manifest import read_manifest
from speechlm.data.audio import load_audio
from speechlm.data.augment import band_limit
from speechlm.data.synth import Voice, plan_jobs, random_engine_voices, random_voices, select_voices, synthesize, synthesize_corpus, voice_bank
from speechlm.errors import SpeechLMError
from speechlm.features import SAMPLE_RATE


def test_voice_bank_size_and_held_out_split():
    bank = voice_bank()
    assert len({v.name for v in bank}) == len(bank) >= 24
    assert len({(v.engine, v.voice, v.variant, v.rate, v.pitch) for v in bank}) == len(bank)
    train = [v for v in bank if v.split == "train"]
    test = [v for v in bank if v.split == "test"]
    assert len(train) >= 24 and len(test) >= 6
    # no held-out flite/festival speaker model and no espeak accent+variant pair appears in training
    train_speakers = {(v.engine, v.voice) for v in train if v.engine != "espeak-ng"}
    assert not train_speakers & {(v.engine, v.voice) for v in test if v.engine != "espeak-ng"}
    train_pairs = {(v.voice, v.variant) for v in train if v.engine == "espeak-ng"}
    assert not train_pairs & {(v.voice, v.variant) for v in test if v.engine == "espeak-ng"}
    assert {v.engine for v in test} == {"espeak-ng", "flite", "festival"}


def test_plan_is_deterministic(tmp_path):
    voices = voice_bank()[:5]
    items = [(f"sentence {i}", None) for i in range(10)]
    a = plan_jobs(items, voices, tmp_path, seed=3, voices_per_sentence=2, speed_factors=(0.9, 1.1))
    b = plan_jobs(items, voices, tmp_path, seed=3, voices_per_sentence=2, speed_factors=(0.9, 1.1))
    assert a == b and len(a) == 20
    assert all(a[2 * i].voice != a[2 * i + 1].voice for i in range(10))
    every = plan_jobs(items, voices, tmp_path, voices_per_sentence=None)
    assert len(every) == 50 and {j.voice for j in every[:5]} == set(voices)


def test_random_voices_are_reproducible_and_never_a_held_out_pair():
    a, b = random_voices(50, seed=1), random_voices(50, seed=1)
    assert a == b and a != random_voices(50, seed=2)
    assert len({v.name for v in a}) == 50 and all(v.engine == "espeak-ng" and v.split == "train" for v in a)
    assert all(0.75 <= v.rate <= 1.25 and 15 <= v.pitch <= 85 for v in a)
    held_out = {(v.voice, v.variant) for v in voice_bank() if v.split == "test" and v.engine == "espeak-ng"}
    assert not held_out & {(v.voice, v.variant) for v in random_voices(500)}
    if shutil.which("espeak-ng"):
        union = select_voices("espeak-ng+random:7", seed=1)
        assert [v.name for v in union[-7:]] == [v.name for v in random_voices(7, seed=1)]
        assert len(union) == len(select_voices("espeak-ng")) + 7


def test_random_engine_voices_are_reproducible_training_speakers():
    a = random_engine_voices(60, seed=3)
    assert a == random_engine_voices(60, seed=3) and a != random_engine_voices(60, seed=4)
    assert len({v.name for v in a}) == 60 and all(v.split == "train" and v.engine in ("flite", "festival") for v in a)
    held_out = {(v.engine, v.voice) for v in voice_bank() if v.split == "test"}
    assert not held_out & {(v.engine, v.voice) for v in a}
    assert all(0.75 <= v.rate <= 1.25 and 0.75 <= v.f0_scale <= 1.3 for v in a)
    assert {v.voice for v in a} == {"kal", "kal16", "awb", "slt", "kal_diphone"}


@pytest.mark.parametrize(("engine", "voice"), [("flite", "slt"), ("festival", "kal_diphone")])
def test_f0_scale_moves_the_pitch(engine, voice):
    import librosa

    if not shutil.which({"flite": "flite", "festival": "text2wave"}[engine]):
        pytest.skip(f"{engine} is not installed")

    def median_f0(scale: float) -> float:
        audio = synthesize("she sells sea shells by the sea shore", Voice("v", engine, voice, f0_scale=scale))
        return float(np.median(librosa.yin(audio, fmin=50, fmax=400, sr=SAMPLE_RATE)))

    low, high = median_f0(0.8), median_f0(1.25)
    assert 1.35 < high / low < 1.8  # 1.25 / 0.8 = 1.56


@pytest.mark.parametrize("spec", ["random:0", "random:", "random:many", "engines:0", "engines:x"])
def test_bad_random_voice_count_is_a_clear_error(spec):
    with pytest.raises(SpeechLMError, match=f"expected {spec.split(':')[0]}:N"):
        select_voices(f"train+{spec}")


def test_band_limit_removes_only_the_high_band():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    low, high = np.sin(2 * np.pi * 1000 * t).astype(np.float32), np.sin(2 * np.pi * 6000 * t).astype(np.float32)
    out = band_limit(low + high, 4000)
    assert out.shape == low.shape and out.dtype == np.float32
    mid = slice(1000, -1000)  # away from the filter's edge effects
    assert np.sqrt(np.mean((out[mid] - low[mid]) ** 2)) < 0.02
    with pytest.raises(ValueError, match="band limit"):
        band_limit(low, 8000)


def test_unknown_voice_is_a_clear_error():
    with pytest.raises(SpeechLMError, match="unknown voice"):
        select_voices("no-such-voice")


@pytest.mark.parametrize("engine", ["espeak-ng", "flite", "festival"])
def test_each_engine_speaks(engine):
    voices = [v for v in voice_bank() if v.engine == engine]
    if not shutil.which({"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}[engine]):
        pytest.skip(f"{engine} is not installed")
    audio = synthesize("turn on the kitchen lights", voices[0])
    assert audio.dtype == np.float32 and 0.8 < audio.size / SAMPLE_RATE < 4.0
    assert np.abs(audio).max() > 0.05


def test_corpus_with_augmentation_and_reuse(tmp_path):
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed")
    voices = select_voices("espeak-ng")[:2]
    items = [("call mom", "send_message"), ("what time is it", "get_time_date")]
    jobs = plan_jobs(items, voices, tmp_path, seed=0, speed_factors=(1.1,), noise_snr_db=(20.0, 20.0), noise_prob=1.0, max_hz=4000)
    utts, failures = synthesize_corpus(jobs, tmp_path, num_workers=2)
    assert not failures and [u.label for u in utts] == ["send_message", "get_time_date"]
    assert [u.text for u in read_manifest(tmp_path / "manifest.jsonl")] == ["call mom", "what time is it"]
    audio = load_audio(utts[0].audio_filepath)
    power = np.abs(np.fft.rfft(audio)) ** 2
    above = np.fft.rfftfreq(audio.size, 1 / SAMPLE_RATE) > 4200  # the noise too is band-limited
    assert power[above].sum() < 1e-3 * power.sum()
    mtimes = [p.stat().st_mtime_ns for p in sorted((tmp_path / "wav").iterdir())]
    again, _ = synthesize_corpus(jobs, tmp_path, num_workers=2)  # reuses the files
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "wav").iterdir())] == mtimes
    assert [u.text for u in again] == [u.text for u in utts]
