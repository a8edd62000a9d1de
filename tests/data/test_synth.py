import shutil

import numpy as np
import pytest

from speechlm.data.manifest import read_manifest
from speechlm.data.synth import plan_jobs, select_voices, synthesize, synthesize_corpus, voice_bank
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
    jobs = plan_jobs(items, voices, tmp_path, seed=0, speed_factors=(1.1,), noise_snr_db=(20.0, 20.0), noise_prob=1.0)
    utts, failures = synthesize_corpus(jobs, tmp_path, num_workers=2)
    assert not failures and [u.label for u in utts] == ["send_message", "get_time_date"]
    assert [u.text for u in read_manifest(tmp_path / "manifest.jsonl")] == ["call mom", "what time is it"]
    mtimes = [p.stat().st_mtime_ns for p in sorted((tmp_path / "wav").iterdir())]
    again, _ = synthesize_corpus(jobs, tmp_path, num_workers=2)  # reuses the files
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "wav").iterdir())] == mtimes
    assert [u.text for u in again] == [u.text for u in utts]
