import librosa
import numpy as np
import pytest
import scipy.linalg
import torch

from speechlm.features import (
    CorpusNorm,
    FeatureConfig,
    SpecAugment,
    SpecAugmentConfig,
    compute_features,
    log_mel_spectrogram,
    lpc,
    mfcc,
    normalize,
    power_spectrogram,
    warp_bands,
)


@pytest.fixture
def audio():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    x = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def test_log_mel_matches_librosa(audio):
    ref = librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=400, hop_length=160, n_mels=80, center=True, pad_mode="constant")
    ours = log_mel_spectrogram(torch.from_numpy(audio)).numpy().T  # (n_mels, T)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, np.log(np.maximum(ref, 1e-10)), atol=2e-3, rtol=1e-3)


def test_mfcc_matches_librosa(audio):
    mel = librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=400, hop_length=160, n_mels=80, center=True, pad_mode="constant")
    ref = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=13)
    ours = mfcc(torch.from_numpy(audio), n_mfcc=13).numpy().T
    np.testing.assert_allclose(ours, ref, atol=2e-2, rtol=1e-3)


def test_dynamic_range_clamps_like_librosa_top_db(audio):
    quiet = np.concatenate([1e-5 * audio[:4000], audio, 1e-5 * audio[:4000]])  # a word framed by near-silence
    mel = librosa.feature.melspectrogram(y=quiet, sr=16000, n_fft=400, hop_length=160, n_mels=80, center=True, pad_mode="constant")
    ref = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=60.0), n_mfcc=13)
    ours = mfcc(torch.from_numpy(quiet), n_mfcc=13, range_db=60.0).numpy().T
    np.testing.assert_allclose(ours, ref, atol=2e-2, rtol=1e-3)
    assert not np.allclose(mfcc(torch.from_numpy(quiet), n_mfcc=13).numpy().T, ref, atol=1.0)  # the clamp is what matched
    log = log_mel_spectrogram(torch.from_numpy(quiet), range_db=60.0).numpy().T
    np.testing.assert_allclose(log, librosa.power_to_db(mel, top_db=60.0) * np.log(10) / 10, atol=2e-3, rtol=1e-3)
    cfg = FeatureConfig(kind="mfcc", n_mfcc=13, dynamic_range_db=60.0)  # a batch's zero padding leaves each clip's features as alone
    alone, _ = compute_features(torch.from_numpy(quiet)[None], None, cfg)
    batch, lens = compute_features(torch.stack([torch.from_numpy(np.pad(quiet, (0, 8000))), torch.from_numpy(np.pad(audio, (0, 16000)))]),
                                   torch.tensor([quiet.size, audio.size]), cfg)
    assert torch.allclose(batch[0, : alone.shape[1]], alone[0], atol=1e-3)
    with pytest.raises(ValueError, match="dynamic_range_db must be >= 0"):
        FeatureConfig(dynamic_range_db=-1.0)


def test_mel_band_range_matches_librosa(audio):
    ref = librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=400, hop_length=160, n_mels=40, fmin=100, fmax=3800,
                                         center=True, pad_mode="constant")  # fmt: skip
    ours = log_mel_spectrogram(torch.from_numpy(audio), 40, (100.0, 3800.0)).numpy().T
    np.testing.assert_allclose(ours, np.log(np.maximum(ref, 1e-10)), atol=2e-3, rtol=1e-3)


def test_f_max_keeps_every_band_inside_a_band_limited_recording(audio):
    from speechlm.data.augment import band_limit

    narrow = torch.from_numpy(band_limit(audio, 4000))  # an 8 kHz recording resampled to 16 kHz
    to_db = 10 / np.log(10)  # natural-log power -> dB
    floor_db = log_mel_spectrogram(narrow).numpy().mean(0) * to_db
    assert (floor_db < floor_db.max() - 60).sum() >= 10  # the default bands above 4 kHz hold next to nothing
    feats, _ = compute_features(narrow[None], None, FeatureConfig(kind="logmel", n_mels=40, f_max=3800, normalize=False))
    band_db = feats[0].numpy().mean(0) * to_db
    assert band_db.min() > band_db.max() - 40


@pytest.mark.parametrize("fields, problem", [({"f_max": 9000}, "f_max <= 8000"), ({"f_min": 500, "f_max": 400}, "f_min < f_max"),
                                             ({"n_mels": 200, "f_max": 1000}, "without an FFT bin")])  # fmt: skip
def test_mel_band_range_is_checked(fields, problem):
    with pytest.raises(ValueError, match=problem):
        FeatureConfig(**fields)


def test_lpc_matches_toeplitz_solution(audio):
    order = 12
    ours = lpc(torch.from_numpy(audio), order).numpy()  # (T, order + 1)
    padded = np.pad(audio.astype(np.float64), 200)
    for frame_index in (10, 50, 90):
        window = torch.hann_window(400).double().numpy()  # periodic Hann, as in the STFT
        frame = padded[frame_index * 160 : frame_index * 160 + 400] * window
        r = np.array([np.dot(frame[: 400 - k], frame[k:]) for k in range(order + 1)])
        a = scipy.linalg.solve_toeplitz(r[:order], -r[1 : order + 1])
        np.testing.assert_allclose(ours[frame_index, :order], a, atol=1e-3, rtol=1e-3)
        err = r[0] + np.dot(a, r[1 : order + 1])
        np.testing.assert_allclose(ours[frame_index, order], np.log(err), atol=1e-3)


def test_lpc_recovers_an_ar_process():
    rng = np.random.default_rng(1)
    true = np.array([-1.2, 0.5])  # x[n] = 1.2 x[n-1] - 0.5 x[n-2] + e[n]
    x = np.zeros(16000)
    e = rng.standard_normal(16000)
    for n in range(2, x.size):
        x[n] = -true[0] * x[n - 1] - true[1] * x[n - 2] + e[n]
    est = lpc(torch.from_numpy(x.astype(np.float32)), 2).numpy()[5:-5, :2].mean(0)
    np.testing.assert_allclose(est, true, atol=0.05)


@pytest.mark.parametrize("kind, dim", [("logmel", 80), ("mfcc", 40), ("lpc", 17)])
def test_compute_features_shapes_and_lengths(kind, dim):
    cfg = FeatureConfig(kind=kind)
    audio = torch.randn(2, 8000)
    lens = torch.tensor([8000, 4000])
    feats, feat_lens = compute_features(audio, lens, cfg)
    assert feats.shape == (2, 51, dim) and cfg.dim == dim
    assert feat_lens.tolist() == [51, 26]
    assert torch.all(feats[1, 26:] == 0)  # padding stays zero after normalization
    valid = feats[0]
    assert torch.allclose(valid.mean(0), torch.zeros(dim), atol=1e-4)


def test_normalize_ignores_padding():
    x = torch.randn(1, 30, 4) * 3 + 2
    padded = torch.cat([x, torch.full((1, 20, 4), 100.0)], dim=1)
    a = normalize(x, torch.tensor([30]))
    b = normalize(padded, torch.tensor([30]))
    assert torch.allclose(a, b[:, :30], atol=1e-5)


def test_corpus_norm_uses_the_corpus_statistics_of_valid_frames_only():
    torch.manual_seed(0)
    clips = [torch.randn(n, 3) * torch.tensor([1.0, 5.0, 0.5]) + torch.tensor([2.0, -40.0, 0.0]) for n in (30, 12, 50)]
    frames = torch.cat(clips)
    padded = torch.full((3, 50, 3), 1e3)  # padding far from the data: counting it would show
    for b, c in enumerate(clips):
        padded[b, : len(c)] = c
    lens = torch.tensor([30, 12, 50])
    norm = CorpusNorm(3)
    assert torch.equal(norm(padded, lens)[0, :30], clips[0])  # identity until estimated
    assert norm.estimate([(padded[:2], lens[:2]), (padded[2:], lens[2:])]) == 92  # two batches
    assert torch.allclose(norm.mean, frames.mean(0), atol=1e-4) and torch.allclose(norm.std, frames.std(0, unbiased=False), atol=1e-3)
    out = norm(padded, lens)
    assert torch.allclose(torch.cat([out[b, : int(n)] for b, n in enumerate(lens)]).mean(0), torch.zeros(3), atol=1e-4)
    assert out[1, 12:].abs().max() == 0
    # one clip's own statistics are not the corpus's: a clip keeps its offset from the corpus mean
    assert out[1, :12].mean(0).abs().max() > 0.05 and normalize(padded[1:2], lens[1:2])[0, :12].mean(0).abs().max() < 1e-5
    with pytest.raises(ValueError, match="no frames"):
        CorpusNorm(3).estimate([])
    feats, _ = compute_features(torch.randn(2, 8000), None, FeatureConfig(normalize_over="corpus"))
    assert feats.mean().abs() > 1  # compute_features leaves corpus normalization to the model
    with pytest.raises(ValueError, match="normalize_over"):
        FeatureConfig(normalize_over="speaker")


def test_power_spectrogram_peak_at_tone_frequency():
    t = torch.arange(16000) / 16000
    spec = power_spectrogram(torch.sin(2 * torch.pi * 1000 * t))
    assert int(spec[50].argmax()) == round(1000 / (16000 / 400))


def test_spec_augment_train_only_and_masks():
    torch.manual_seed(0)
    aug = SpecAugment(SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=3, time_width=0.1, warp=0.0))
    x = torch.randn(2, 300, 80)
    lens = torch.tensor([300, 200])
    aug.eval()
    assert torch.equal(aug(x, lens), x)
    aug.train()
    y = aug(x, lens)
    assert y.shape == x.shape and (y == 0).sum() > 0 and not torch.equal(y, x)


def test_frequency_warp_is_identity_at_factor_one():
    aug = SpecAugment(SpecAugmentConfig(warp=0.0))
    x = torch.randn(2, 10, 80)
    assert torch.allclose(aug._warp(x), x)


def test_band_warp_moves_a_peak_by_its_factor():
    x = torch.zeros(2, 3, 80)
    x[:, :, 40] = 1.0
    y = warp_bands(x, torch.tensor([1.1, 0.9]))
    assert int(y[0, 0].argmax()) == 44 and int(y[1, 0].argmax()) == 36  # a spectrum stretched up, one squeezed down
    assert torch.allclose(warp_bands(x, torch.ones(2)), x)


def test_mfcc_models_warp_their_mel_bands_before_the_dct():
    torch.manual_seed(0)
    t = torch.arange(8000) / 16000
    audio = torch.stack([torch.sin(2 * torch.pi * 440 * t) * (1 + t), torch.sin(2 * torch.pi * 1500 * t)])
    cfg = FeatureConfig(kind="mfcc", n_mfcc=13, normalize=False)
    plain, lens = compute_features(audio, None, cfg)
    assert torch.allclose(compute_features(audio, None, cfg, torch.ones(2))[0], plain, atol=1e-4)
    warped = compute_features(audio, None, cfg, torch.tensor([1.15, 0.85]))[0]
    expected = mfcc(audio, 13, warp=torch.tensor([1.15, 0.85]))  # the warp acts on the mel dB, then the DCT
    assert torch.allclose(warped, expected, atol=1e-4) and not torch.allclose(warped, plain, atol=1e-2)
    with pytest.raises(ValueError, match="mel_warp stretches the mel bands under MFCCs"):
        compute_features(audio, None, FeatureConfig(), torch.ones(2))
    aug = SpecAugment(SpecAugmentConfig(mfcc_warp=0.2))
    assert aug.train().mel_warp_factors(4, FeatureConfig()) is None  # log-mel models warp after normalization instead
    factors = aug.mel_warp_factors(1000, cfg)
    assert factors.shape == (1000,) and 0.8 <= float(factors.min()) < 0.85 and 1.15 < float(factors.max()) <= 1.2
    assert aug.eval().mel_warp_factors(4, cfg) is None  # training only
    assert SpecAugment(SpecAugmentConfig()).train().mel_warp_factors(4, cfg) is None  # off by default
    with pytest.raises(ValueError, match=r"spec_augment.mfcc_warp must be in \[0, 0.5\)"):
        SpecAugmentConfig(mfcc_warp=0.6)


def test_frequency_masks_leave_most_of_a_small_feature_vector():
    # the 15-bin default is made for 80 mel bands: on 13 MFCCs a mask covers at most 13 // 5 = 2
    torch.manual_seed(0)
    aug = SpecAugment(SpecAugmentConfig(freq_masks=2, freq_width=15, time_masks=0, warp=0.0)).train()
    x = torch.randn(64, 50, 13)
    masked = (aug(x, torch.full((64,), 50)) == 0).all(1).sum(-1)  # (B,) blanked dimensions
    assert masked.max() <= 4 and masked.sum() > 0


def test_warp_only_on_spectral_features():
    torch.manual_seed(0)
    cfg = SpecAugmentConfig(freq_masks=0, time_masks=0, warp=0.2)
    x = torch.randn(4, 20, 13)
    lens = torch.full((4,), 20)
    assert torch.equal(SpecAugment(cfg, spectral=False).train()(x, lens), x)
    assert not torch.allclose(SpecAugment(cfg, spectral=True).train()(x, lens), x)
