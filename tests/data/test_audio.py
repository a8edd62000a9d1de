import numpy as np
import pytest
import soundfile as sf

from speechlm.data.audio import load_audio, resample
from speechlm.data.augment import AugmentConfig, add_noise, augment, cut_edges, speed_perturb
from speechlm.errors import AudioError


def dominant_frequency(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / sr)[spec.argmax()])


def test_resample_8k_tone_keeps_frequency_and_length(tmp_path):
    t = np.arange(8000) / 8000
    sf.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 8000)
    x = load_audio(tmp_path / "tone.wav")
    assert x.dtype == np.float32 and abs(x.size - 16000) <= 1
    assert abs(dominant_frequency(x, 16000) - 440) < 2
    # no energy appears above the original Nyquist frequency
    spec = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(x.size, 1 / 16000)
    assert spec[freqs > 4200].max() < 1e-2 * spec.max()


def test_downsample_44k1_and_stereo_mixdown(tmp_path):
    t = np.arange(44100) / 44100
    left = np.sin(2 * np.pi * 1000 * t)
    sf.write(tmp_path / "st.flac", np.stack([left, np.zeros_like(left)], 1) * 0.5, 44100)
    x = load_audio(tmp_path / "st.flac")
    assert abs(x.size - 16000) <= 1
    assert abs(np.abs(x[1000:-1000]).max() - 0.25) < 0.01  # mean of the two channels
    assert abs(dominant_frequency(x, 16000) - 1000) < 2


def test_ogg_reads(tmp_path):
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "a.ogg", 0.3 * np.sin(2 * np.pi * 300 * t), 16000, format="OGG", subtype="VORBIS")
    assert abs(load_audio(tmp_path / "a.ogg").size - 16000) < 200


def test_trim_removes_silence(tmp_path):
    x = np.concatenate([np.zeros(8000), 0.5 * np.sin(np.arange(8000) / 5), np.zeros(8000)])
    sf.write(tmp_path / "s.wav", x, 16000)
    assert load_audio(tmp_path / "s.wav", trim_db=40).size < 10000


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "not a readable audio file"),
        (lambda p: p.write_text("hello, I am text"), "not a readable audio file"),
        (lambda p: sf.write(p, np.zeros(0), 16000), "contains no samples"),
        (lambda p: sf.write(p, np.array([0.1, np.nan, 0.2] * 100), 16000, subtype="FLOAT"), "NaN or infinite"),
        (lambda p: sf.write(p, np.zeros(100), 999_999), "implausible sample rate"),
    ],
)
def test_bad_audio_errors_name_the_file(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=message) as err:
        load_audio(path)
    assert "bad.wav" in str(err.value)


def test_truncated_wav(tmp_path):
    sf.write(tmp_path / "ok.wav", np.zeros(16000), 16000)
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "trunc.wav").write_bytes(data[:30])
    with pytest.raises(AudioError, match="trunc.wav"):
        load_audio(tmp_path / "trunc.wav")


def test_missing_file():
    with pytest.raises(AudioError, match="no such file"):
        load_audio("/nonexistent/x.wav")


def test_speed_perturb_and_noise():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    x = (0.5 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    fast = speed_perturb(x, 1.1)
    assert abs(fast.size - 16000 / 1.1) < 2
    assert abs(dominant_frequency(fast, 16000) - 550) < 3
    noisy = add_noise(x, 10.0, rng)
    snr = 10 * np.log10(np.mean(x**2) / np.mean((noisy - x) ** 2))
    assert abs(snr - 10.0) < 0.1
    out = augment(x, AugmentConfig(speed_factors=(1.0,), noise_prob=0.0), rng)
    assert np.array_equal(out, x)


def test_resample_identity():
    x = np.ones(10, dtype=np.float32)
    assert resample(x, 16000, 16000) is x


def test_room_impulse_response_decays_at_its_rt60_with_the_drawn_direct_to_reverberant_ratio():
    from speechlm.data.augment import room_impulse_response

    rir = room_impulse_response(0.5, np.random.default_rng(0), drr_db=6.0)
    assert rir[0] == 1.0 and rir.size == int(0.003 * 16000) + 1 + 8000
    tail = rir[1 + int(0.003 * 16000):].astype(np.float64)
    assert abs(10 * np.log10(1.0 / np.sum(tail**2)) - 6.0) < 1e-3
    # energy in 50 ms windows falls by about 60 dB over the RT60 (Schroeder-style check on the envelope)
    early, late = np.mean(tail[:800] ** 2), np.mean(tail[-800:] ** 2)
    assert 45 < 10 * np.log10(early / late) < 60


def test_reverb_and_microphone_keep_length_and_level_and_change_the_signal():
    from speechlm.data.augment import random_eq, reverberate, room_impulse_response

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 300 * t) * (t < 0.5)).astype(np.float32)  # a tone that stops half way
    wet = reverberate(x, room_impulse_response(0.6, rng, drr_db=0.0))
    assert wet.size == x.size and wet.dtype == np.float32
    assert np.isclose(np.sqrt(np.mean(wet**2)), np.sqrt(np.mean(x**2)), rtol=1e-4)
    assert np.sqrt(np.mean(wet[8400:9200] ** 2)) > 1e-3  # the room rings on after the tone stops; the dry clip is silent there
    assert np.all(x[8400:9200] == 0)
    eq = random_eq(x, rng, max_db=6.0)
    gain_db = 20 * np.log10(np.sqrt(np.mean(eq**2)) / np.sqrt(np.mean(x**2)))
    assert eq.size == x.size and 0.01 < abs(gain_db) <= 6.0  # a 300 Hz tone is raised or lowered by at most 6 dB
    assert np.allclose(random_eq(x, np.random.default_rng(1), max_db=0.0), x, atol=1e-6)  # a flat microphone


def test_augment_config_rejects_bad_probabilities_and_rooms():
    import pytest

    from speechlm.config import ASRConfig, ConfigError, load_config

    for override, message in (("augment.reverb_prob=1.5", "reverb_prob must be in"), ("augment.rt60=[0.9,0.2]", "rt60 must be"),
                              ("augment.rt60=[0.2,9]", "rt60 must be"), ("augment.eq_db=-1", "eq_db must be"),
                              ("augment.edge_cut_prob=2", "edge_cut_prob must be in"), ("augment.edge_cut_max=-0.1", "edge_cut_max must be")):
        with pytest.raises(ConfigError, match=message):
            load_config(ASRConfig, overrides=[override])
    cfg = load_config(ASRConfig, overrides=["augment.reverb_prob=1", "augment.eq_prob=1", "augment.speed_factors=[1.0]", "augment.noise_prob=0"])
    x = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    out = augment(x, cfg.augment, np.random.default_rng(0))
    assert out.size == x.size and not np.allclose(out, x)


def test_cut_edges_trims_to_the_speech_and_takes_at_most_its_bound_from_each_end():
    sr = 16000
    word = np.sin(2 * np.pi * 300 * np.arange(sr // 2) / sr).astype(np.float32)  # 0.5 s of "speech"
    clip = np.concatenate([np.zeros(sr // 4, np.float32), word, np.zeros(sr // 4, np.float32)])
    lengths = []
    for seed in range(50):
        out = cut_edges(clip, 0.08, np.random.default_rng(seed))
        assert word.size - 2 * round(0.08 * sr) - 512 <= out.size <= word.size + 512  # the silence gone (a frame's slack)
        assert np.abs(out).max() > 0.9
        lengths.append(out.size)
    assert len(set(lengths)) > 10  # a different cut each draw
    short = np.concatenate([np.zeros(sr // 4, np.float32), word[:1600]])  # 0.1 s: at most a quarter from either end
    assert cut_edges(short, 1.0, np.random.default_rng(0)).size >= 1600 // 2 - 512
    silence = np.zeros(sr, np.float32)
    assert cut_edges(silence, 0.08, np.random.default_rng(0)) is silence
    unchanged = augment(clip, AugmentConfig(speed_factors=(), noise_prob=0.0), np.random.default_rng(0))
    assert unchanged is clip  # off by default
    cut = augment(clip, AugmentConfig(speed_factors=(), noise_prob=0.0, edge_cut_prob=1.0), np.random.default_rng(0))
    assert cut.size < word.size + 512
