import pytest
import torch

from speechlm.features import FeatureConfig, SpecAugmentConfig
from speechlm.models.asr import SpeechRecognizer, count_parameters
from speechlm.models.encoders import ARCHS, EncoderConfig, base, build_encoder, small, tiny


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_lengths(arch):
    enc = build_encoder(tiny(arch), input_dim=80).eval()
    out = enc(torch.randn(3, 203, 80), torch.tensor([203, 150, 41]))
    assert out.x.shape == (3, 50, 96)
    assert out.x_lens.tolist() == [50, 36, 9]
    assert len(out.hidden_states) == tiny(arch).n_layers
    assert torch.all(out.x[2, 9:] == 0)  # padded frames are zeroed


@pytest.mark.parametrize("arch", ARCHS)
def test_output_does_not_depend_on_batch_padding(arch):
    """An utterance encodes the same alone or padded inside a batch with a longer one."""
    torch.manual_seed(0)
    enc = build_encoder(tiny(arch), input_dim=40).eval()
    short = torch.randn(1, 97, 40)
    batch = torch.cat([torch.cat([short, torch.randn(1, 63, 40) * 5], 1), torch.randn(1, 160, 40)])
    alone = enc(short, torch.tensor([97]))
    padded = enc(batch, torch.tensor([97, 160]))
    n = int(alone.x_lens[0])
    assert int(padded.x_lens[0]) == n
    torch.testing.assert_close(padded.x[0, :n], alone.x[0, :n], atol=1e-4, rtol=1e-4)


def test_preset_sizes():
    def params(cfg):
        return count_parameters(build_encoder(cfg, 80))

    assert 0.5e6 < params(tiny()) < 2e6
    assert 3e6 < params(small()) < 8e6
    assert 12e6 < params(base()) < 30e6


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="divisible"):
        EncoderConfig(d_model=100, n_heads=3)
    with pytest.raises(ValueError, match="odd"):
        EncoderConfig(conv_kernel=4)


def test_recognizer_end_to_end_gradients():
    model = SpeechRecognizer(FeatureConfig(), SpecAugmentConfig(), tiny(), vocab_size=30).train()
    out = model(torch.randn(2, 16000), torch.tensor([16000, 9000]))
    assert out.logits.shape == (2, 24, 30) and out.lens.tolist() == [24, 13]
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
