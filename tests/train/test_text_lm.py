"""Text LM recipe: trains, reports held-out perplexity, saves a loadable model; sliding-window perplexity."""

import math

import numpy as np
import pytest
import torch

from speechlm.config import TextPretrainConfig, load_config
from speechlm.evaluate import perplexity
from speechlm.models.lm import LanguageModel, LMConfig
from speechlm.train.text import load_lm_dir, pretrain_text


def tiny(arch, *extra):
    return load_config(TextPretrainConfig, overrides=[
        "data.builtin_sentences=400", f"lm.arch={arch}", "lm.d_model=48", "lm.n_layers=2", "lm.n_heads=4", "lm.context=32",
        "tokenizer.vocab_size=200", "train.max_steps=40", "train.warmup_steps=5", "train.lr=3e-3", "train.log_every=10",
        "train.precision=fp32", *extra,
    ])  # fmt: skip


@pytest.mark.parametrize("arch", ["causal", "mlm", "lstm"])
def test_text_pretraining_learns(arch, tmp_path):
    result = pretrain_text(tiny(arch), tmp_path / arch, progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 0.3  # measured: -0.4 (mlm) to -1.3 (causal)
    cfg, model, tokenizer, special = load_lm_dir(tmp_path / arch)
    assert cfg.lm.arch == arch and special.vocab_size == tokenizer.vocab_size + 3
    import json

    info = json.loads((tmp_path / arch / "model" / "training.json").read_text())
    assert 1 < info["valid_perplexity"] < special.vocab_size  # better than uniform over the vocabulary


def test_sliding_window_scores_every_token_once_and_matches_a_full_pass():
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(d_model=32, n_layers=1, n_heads=2, context=64, dropout=0.0), 50).eval()
    stream = np.random.default_rng(0).integers(1, 50, 41)
    full = perplexity(model, stream, context=64)
    assert full.tokens == 40
    logits = model(torch.from_numpy(stream[:-1])[None]).logits[0]
    nll = torch.nn.functional.cross_entropy(logits, torch.from_numpy(stream[1:])).item()
    assert full.nll == pytest.approx(nll, rel=1e-5)
    for stride in (4, 7, 16):
        windowed = perplexity(model, stream, context=16, stride=stride)
        assert windowed.tokens == 40
    # more left context never hurts much: the 16-token windows score within a loose band of the full pass
    assert abs(math.log(perplexity(model, stream, context=16).perplexity) - full.nll) < 0.5
