"""Masked-prediction pretraining model: masking, quantizers, targets."""

import dataclasses

import numpy as np
import pytest
import torch

from speechlm.features import FeatureConfig
from speechlm.models.encoders import tiny
from speechlm.models.speech_ssl import (
    KMeansQuantizer,
    RandomProjectionQuantizer,
    SpeechPretrainer,
    SSLConfig,
    span_mask,
    stack_frames,
)


def test_span_mask_respects_lengths_and_covers_expected_fraction():
    torch.manual_seed(0)
    lens = torch.tensor([1000, 400, 3])
    m = span_mask(lens, 1000, prob=0.04, span=20)
    assert not m[1, 400:].any() and not m[2, 3:].any()  # padding is never masked
    assert m.any(1).all()  # every row gets at least one span
    frac = m[0].float().mean().item()
    expected = 1 - (1 - 0.04) ** 20  # a frame is masked when any of the 20 previous frames started a span
    assert abs(frac - expected) < 0.08, frac
    # spans are contiguous runs of at least `span` frames (except where cut by the end)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, m[0].int().numpy(), 0])))[::2]
    assert runs[:-1].min() >= 20


def test_stack_frames_layout():
    x = torch.arange(2 * 9 * 3).float().view(2, 9, 3)
    y = stack_frames(x, 2)
    assert y.shape == (2, 2, 12)
    assert torch.equal(y[0, 1], x[0, 4:8].reshape(-1))


def test_best_rq_targets_are_scale_invariant_and_per_codebook():
    torch.manual_seed(0)
    q = RandomProjectionQuantizer(12, SSLConfig(num_codebooks=3, codebook_size=50, codebook_dim=4))
    x = torch.randn(2, 30, 12)
    t = q(x)
    assert t.shape == (2, 30, 3) and t.min() >= 0 and t.max() < 50
    assert torch.equal(q(3.0 * x), t)  # normalization makes the code depend on direction only
    assert len(set(t[..., 0].flatten().tolist())) > 5  # codes are spread, not collapsed


def test_kmeans_quantizer_nearest_centroid():
    q = KMeansQuantizer(SSLConfig(target="kmeans", codebook_size=3, kmeans_mfcc=1))
    q.centroids.copy_(torch.tensor([[0.0] * 4, [10.0] * 4, [-10.0] * 4]))
    q.fitted.fill_(True)
    x = torch.tensor([[[1.0] * 4, [9.0] * 4, [-7.0] * 4]])
    assert q(x)[0, :, 0].tolist() == [0, 1, 2]


def test_kmeans_before_fit_is_an_error():
    q = KMeansQuantizer(SSLConfig(target="kmeans", codebook_size=3))
    with pytest.raises(RuntimeError, match="fitted"):
        q(torch.zeros(1, 2, 52))


def test_pretrainer_targets_come_from_clean_input_and_mask_is_valid():
    torch.manual_seed(0)
    model = SpeechPretrainer(FeatureConfig(), tiny(), SSLConfig(codebook_size=32))
    audio = torch.randn(2, 16000)
    lens = torch.tensor([16000, 8000])
    a, b = model(audio, lens), model(audio, lens)
    assert torch.equal(a.targets, b.targets)  # targets do not depend on the random mask
    assert not torch.equal(a.mask, b.mask)
    assert not a.mask[1, a.lens[1] :].any()
    assert a.logits.shape[:3] == a.targets.shape


@pytest.mark.parametrize(
    "field,value",
    [("num_codebooks", 2), ("codebook_size", 64), ("codebook_dim", 8), ("mask_prob", 0.2), ("mask_span", 5), ("mask_noise", 1.0),
     ("target", "kmeans"), ("kmeans_mfcc", 20)],
)  # fmt: skip
def test_every_ssl_field_changes_the_model(field, value):
    base = SSLConfig(codebook_size=32)
    changed = dataclasses.replace(base, **{field: value})
    if field == "kmeans_mfcc":
        base = dataclasses.replace(base, target="kmeans")
        changed = dataclasses.replace(changed, target="kmeans")

    def signature(cfg):
        torch.manual_seed(0)
        model = SpeechPretrainer(FeatureConfig(), tiny(), cfg)
        if cfg.target == "kmeans":
            model.quantizer.fitted.fill_(True)
        torch.manual_seed(1)
        out = model(torch.randn(1, 8000), torch.tensor([8000]))
        shapes = [tuple(v.shape) for v in model.state_dict().values()]
        return shapes, out.mask.sum().item(), out.logits.sum().item()

    assert signature(base) != signature(changed)


@pytest.mark.parametrize("arch", ["conformer", "transformer", "lstm", "cnn"])
def test_every_encoder_pretrains_and_fine_tunes(arch):
    from speechlm.config import FinetuneConfig
    from speechlm.features import SpecAugmentConfig
    from speechlm.models.asr import SpeechRecognizer
    from speechlm.objectives.masked_prediction import masked_prediction_loss
    from speechlm.train.finetune import encoder_param_groups

    torch.manual_seed(0)
    enc = dataclasses.replace(tiny(arch), d_model=32, n_layers=2, n_heads=2)
    model = SpeechPretrainer(FeatureConfig(), enc, SSLConfig(codebook_size=16))
    out = masked_prediction_loss(model(torch.randn(2, 8000), torch.tensor([8000, 6000])))
    out.loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    asr = SpeechRecognizer(FeatureConfig(), SpecAugmentConfig(), enc, vocab_size=10)
    assert asr.encoder.load_state_dict(model.encoder.state_dict()) is not None  # same names and shapes
    groups = encoder_param_groups(asr, FinetuneConfig(layer_decay=0.5))
    grouped = [id(p) for g in groups for p in g.params]
    assert sorted(grouped) == sorted(id(p) for p in asr.parameters())  # every parameter in exactly one group
