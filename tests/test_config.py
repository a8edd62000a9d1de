import dataclasses
import pytest
import torch

from speechlm.config import ASRConfig, ConfigError, load_config, save_config
from speechlm.models.encoders import EncoderConfig, build_encoder


def test_defaults_overrides_and_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("encoder:\n  d_model: 64\n  n_heads: 4\ntrain:\n  lr: 0.002\n")
    cfg = load_config(ASRConfig, path, ["encoder.n_layers=3", "train.lr=5e-4", "augment.speed_factors=[1.0]"])
    assert cfg.encoder.d_model == 64 and cfg.encoder.n_layers == 3
    assert cfg.train.lr == 5e-4  # override wins over the file
    assert cfg.augment.speed_factors == (1.0,)
    assert cfg.features == ASRConfig().features


def test_save_load_roundtrip(tmp_path):
    cfg = load_config(ASRConfig, overrides=["encoder.arch=lstm", "tokenizer.kind=bpe"])
    save_config(cfg, tmp_path / "config.json")
    assert load_config(ASRConfig, tmp_path / "config.json") == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("encoder.d_modle=3", "unknown field 'd_modle'"),
        ("train.lr=fast", "expected a number"),
        ("encoder.arch=rnn", "encoder.arch must be one of"),
        ("nosection.x=1", "unknown field 'nosection'"),
        ("train.max_steps", "expected key=value"),
        ("features.n_mels=0", "features.n_mels and features.lpc_order must be >= 1"),
    ],
)
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ASRConfig, overrides=[override])


def test_more_cepstra_than_mel_bands_is_refused():
    with pytest.raises(ConfigError, match=r"features.n_mfcc must be between 1 and features.n_mels \(80\), got 100"):
        load_config(ASRConfig, overrides=["features.kind=mfcc", "features.n_mfcc=100"])


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        load_config(ASRConfig, bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("encoder:\n  widht: 3\n")
    with pytest.raises(ConfigError, match="unknown field 'widht'"):
        load_config(ASRConfig, unknown)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(ASRConfig, tmp_path / "missing.yaml")


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ASRConfig().train.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("arch", ["conformer", "transformer", "lstm", "cnn"])
def test_every_encoder_field_changes_the_module(arch):
    """A config field that an architecture silently ignored would leave the module unchanged."""
    base = EncoderConfig(arch=arch, d_model=32, n_layers=2, n_heads=2, ff_mult=2, conv_kernel=5, dropout=0.1)
    changes = {
        "d_model": 48, "n_layers": 3, "n_heads": 4, "ff_mult": 3, "conv_kernel": 7, "dropout": 0.3, "subsampling_channels": 8,
    }  # fmt: skip
    relevant = {
        "conformer": set(changes),
        "transformer": set(changes) - {"conv_kernel"},
        "cnn": set(changes) - {"n_heads"},
        "lstm": set(changes) - {"n_heads", "ff_mult", "conv_kernel"},
    }[arch]

    def fingerprint(cfg):
        return str(build_encoder(cfg, 40))  # layer shapes, kernels, dropout rates

    for field in relevant:
        changed = dataclasses.replace(base, **{field: changes[field]})
        if field == "n_heads":
            # heads do not change parameter shapes: compare outputs instead
            x = torch.randn(1, 60, 40)
            torch.manual_seed(0)
            a = build_encoder(base, 40).eval()
            torch.manual_seed(0)
            b = build_encoder(changed, 40).eval()
            assert not torch.allclose(a(x, torch.tensor([60])).x, b(x, torch.tensor([60])).x), field
        else:
            assert fingerprint(base) != fingerprint(changed), f"{arch}: {field} has no effect"
